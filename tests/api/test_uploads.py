"""Pre-signing with a real aiobotocore client (signing makes no network call) and the result TTL."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from api.store import result_ttl
from api.uploads import S3Uploads
from models.records import utcnow
from tests.api.fakes import sample_result

INTERNAL = "http://10.0.0.5:7070"
PUBLIC = "https://uploads.example.org"


@pytest.fixture
async def uploads() -> AsyncIterator[S3Uploads]:
    session = get_session()
    kw: dict[str, Any] = {
        "region_name": "us-east-1",
        "aws_access_key_id": "AK",
        "aws_secret_access_key": "SK",
        "config": AioConfig(signature_version="s3v4", s3={"addressing_style": "path"}),
    }
    async with (
        session.create_client("s3", endpoint_url=INTERNAL, **kw) as server,
        session.create_client("s3", endpoint_url=PUBLIC, **kw) as signer,
    ):
        yield S3Uploads(
            server_client=server, signing_client=signer, bucket="waste-images", max_bytes=1000, expires_s=600
        )


def _policy(fields: dict[str, str]) -> dict[str, Any]:
    return json.loads(base64.b64decode(fields["policy"]))  # type: ignore[no-any-return]


async def test_post_policy_limits_size_and_content_type(uploads: S3Uploads) -> None:
    signed = await uploads.presign("uploads/job1")
    assert signed.post_url == f"{PUBLIC}/waste-images"  # path style, on the host the browser uses
    assert signed.post_fields["key"] == "uploads/job1"
    assert signed.post_fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    conditions = _policy(signed.post_fields)["conditions"]
    assert ["content-length-range", 1, 1000] in conditions
    assert ["starts-with", "$Content-Type", "image/"] in conditions
    assert {"key": "uploads/job1"} in conditions and {"bucket": "waste-images"} in conditions


async def test_declared_content_type_is_pinned(uploads: S3Uploads) -> None:
    signed = await uploads.presign("uploads/job2", "image/png")
    assert signed.post_fields["Content-Type"] == "image/png"
    assert {"Content-Type": "image/png"} in _policy(signed.post_fields)["conditions"]
    put = urlsplit(signed.put_url)
    assert "content-type" in parse_qs(put.query)["X-Amz-SignedHeaders"][0]


async def test_put_url_is_signed_for_the_public_host(uploads: S3Uploads) -> None:
    put = urlsplit((await uploads.presign("uploads/job3")).put_url)
    assert f"{put.scheme}://{put.netloc}" == PUBLIC
    assert put.path == "/waste-images/uploads/job3"
    query = parse_qs(put.query)
    assert query["X-Amz-Expires"] == ["600"] and "X-Amz-Signature" in query


def test_result_ttl_counts_from_completed_at() -> None:
    now = utcnow()
    result = sample_result("j").model_copy(update={"completed_at": now - timedelta(seconds=100)})
    assert result_ttl(result, 3600, now) == 3500
    assert result_ttl(result, 60, now) <= 0  # too old: not stored again when replayed
    future = result.model_copy(update={"completed_at": now + timedelta(seconds=30)})  # clock skew
    assert result_ttl(future, 3600, now) == 3600

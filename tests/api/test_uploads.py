"""Pre-signing with a real aiobotocore client (signing makes no network call) and the result TTL."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

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


async def test_post_policy_limits_size_and_pins_the_content_type(uploads: S3Uploads) -> None:
    signed = await uploads.presign("uploads/job1", "image/png")
    assert signed.post_url == f"{PUBLIC}/waste-images"  # path style, on the host the browser uses
    assert signed.post_fields["key"] == "uploads/job1"
    assert signed.post_fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    assert signed.post_fields["Content-Type"] == "image/png"
    conditions = _policy(signed.post_fields)["conditions"]
    assert ["content-length-range", 1, 1000] in conditions
    assert {"Content-Type": "image/png"} in conditions  # exact: a prefix would let image/svg+xml in
    assert not [c for c in conditions if isinstance(c, list) and c[0] == "starts-with"]
    assert {"key": "uploads/job1"} in conditions and {"bucket": "waste-images"} in conditions
    assert not hasattr(signed, "put_url")  # no unbounded PUT


def test_result_ttl_counts_from_completed_at() -> None:
    now = utcnow()
    result = sample_result("j").model_copy(update={"completed_at": now - timedelta(seconds=100)})
    assert result_ttl(result, 3600, now) == 3500
    assert result_ttl(result, 60, now) <= 0  # too old: not stored again when replayed
    future = result.model_copy(update={"completed_at": now + timedelta(seconds=30)})  # clock skew
    assert result_ttl(future, 3600, now) == 3600

"""Uploads: the S3 server itself (versitygw, the real one) refuses what the policy forbids; what slips past it
is refused and deleted at upload-complete; off-spec requests are 400/401. Each burst has an honest upload
that still goes through."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.security.api_support import (
    jpeg_bytes,
    live_api,
    object_exists,
    plant_object,
)
from tools.kit.api import analyze, post_upload, upload_complete

pytestmark = [pytest.mark.stack]

MAX = 50_000  # upload_max_bytes of live_api()


def key_of(job: dict[str, Any]) -> str:
    return str(job["upload_fields"]["key"])


async def test_analyze_hands_out_a_post_only_with_an_exact_type() -> None:
    async with live_api() as base, aiohttp.ClientSession() as http:
        job = await analyze(http, base, content_type="image/png")
    assert "put_url" not in job  # no unbounded PUT
    assert job["upload_fields"]["Content-Type"] == job["content_type"] == "image/png"
    assert job["max_bytes"] == MAX


async def test_s3_refuses_an_oversize_post_and_the_honest_one_goes_through() -> None:
    async with live_api() as base, aiohttp.ClientSession() as http:
        big, honest = await analyze(http, base), await analyze(http, base)
        status, text = await post_upload(http, big, jpeg_bytes(MAX + 1000))
        assert status == 400 and "EntityTooLarge" in text
        assert not await object_exists(key_of(big))
        assert (await post_upload(http, honest, jpeg_bytes(MAX - 2000)))[0] == 204
        assert (await upload_complete(http, base, honest))[0] == 202


@pytest.mark.parametrize("content_type", ["text/html", "image/svg+xml", "application/octet-stream",
                                          "image/jpeg; charset=utf-8", "image/png"])
async def test_s3_refuses_a_post_with_another_content_type(content_type: str) -> None:
    async with live_api() as base, aiohttp.ClientSession() as http:
        job = await analyze(http, base, content_type="image/jpeg")
        status, text = await post_upload(http, job, b"<html><script>alert(1)</script></html>",
                                         fields={"Content-Type": content_type})
        assert status == 403 and "Policy" in text
        assert not await object_exists(key_of(job))


@pytest.mark.parametrize("field", [{"Content-Disposition": "inline"}, {"Cache-Control": "max-age=99999999"},
                                   {"x-amz-meta-owner": "me"}, {"success_action_redirect": "http://evil.example"}])
async def test_s3_refuses_fields_the_policy_does_not_name(field: dict[str, str]) -> None:
    async with live_api() as base, aiohttp.ClientSession() as http:
        job = await analyze(http, base)
        status, _ = await post_upload(http, job, jpeg_bytes(), fields=field)
        assert status == 403
        assert not await object_exists(key_of(job))


async def test_s3_refuses_a_post_to_another_key() -> None:
    async with live_api() as base, aiohttp.ClientSession() as http:
        mine, victim = await analyze(http, base), await analyze(http, base)
        status, _ = await post_upload(http, mine, jpeg_bytes(), fields={"key": key_of(victim)})
        assert status == 403
        assert not await object_exists(key_of(victim))


async def test_s3_refuses_an_empty_post() -> None:
    async with live_api() as base, aiohttp.ClientSession() as http:
        job = await analyze(http, base)
        status, text = await post_upload(http, job, b"")
        assert status == 400 and "EntityTooSmall" in text
        assert not await object_exists(key_of(job))


@pytest.mark.parametrize(("data", "content_type", "status", "code"), [
    (b"<html><script>alert(1)</script></html>", "text/html", 415, "UPLOAD_NOT_IMAGE"),
    (b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>", "image/svg+xml", 415, "UPLOAD_NOT_IMAGE"),
    (jpeg_bytes(), None, 415, "UPLOAD_NOT_IMAGE"),
    (jpeg_bytes(), "image/png", 415, "UPLOAD_NOT_IMAGE"),  # allowed, but not the type pinned for this job
    (jpeg_bytes(MAX + 1), "image/jpeg", 413, "UPLOAD_TOO_LARGE"),
    (b"", "image/jpeg", 409, "UPLOAD_EMPTY"),
], ids=["html", "svg", "no-type", "other-allowed-type", "oversize", "empty"])
async def test_an_object_planted_otherwise_is_refused_and_deleted_at_upload_complete(
    data: bytes, content_type: str | None, status: int, code: str
) -> None:
    async with live_api() as base, aiohttp.ClientSession() as http:
        job, honest = await analyze(http, base), await analyze(http, base)
        await plant_object(key_of(job), data, content_type)
        got_status, body = await upload_complete(http, base, job)
        assert (got_status, body["error"]["code"]) == (status, code)
        assert not await object_exists(key_of(job))  # refused means deleted: never served, never processed
        assert (await post_upload(http, honest, jpeg_bytes()))[0] == 204
        assert (await upload_complete(http, base, honest))[0] == 202


@pytest.mark.parametrize(("body", "status"), [
    (b'{"content_type": null}', 400),
    (b'{"content_type": 5}', 400),
    (b'{"content_type": "image/svg+xml"}', 400),
    (b'{"content_type": "text/html"}', 400),
    (b'{"content_type": "image/"}', 400),
    (b'{"content_type": "image/jpeg", "key": "../../etc/passwd"}', 400),
    (b'["image/jpeg"]', 400),
    (b'"image/jpeg"', 400),
    (b"{not json", 400),
    (b"\xff\xfe", 400),
], ids=["null", "number", "svg", "html", "prefix", "extra-field", "array", "string", "broken", "not-utf8"])
async def test_off_spec_analyze_bodies_are_400(body: bytes, status: int) -> None:
    async with live_api() as base, aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/v1/waste/analyze", data=body,
                             headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == status and (await resp.json())["error"]["code"], await resp.text()
        assert (await analyze(http, base, content_type="image/webp"))["content_type"] == "image/webp"


async def test_a_body_that_is_not_json_by_media_type_is_415() -> None:
    async with live_api() as base, aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/v1/waste/analyze", data=b'{"content_type": "image/png"}',
                             headers={"Content-Type": "text/plain"}) as resp:
            assert resp.status == 415


@pytest.mark.parametrize("route", ["upload-complete", "results"])
async def test_requests_without_credentials_get_401_with_www_authenticate(route: str) -> None:
    async with live_api() as base, aiohttp.ClientSession() as http:
        job = await analyze(http, base)
        method = "POST" if route == "upload-complete" else "GET"
        url = f"{base}/api/v1/waste/{route}/{job['job_id']}"
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Basic dXNlcjpwYXNz"}):
            async with http.request(method, url, headers=headers) as resp:
                assert resp.status == 401, headers
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await resp.json())["error"]["code"] == "TOKEN_MISSING"

"""The image fetcher against a fake CDN (a real HTTP server) and a fake S3 client: which source serves the bytes,
when the edge is skipped for S3, and which error code a job ends with when neither can serve them.

What a user notices: the job's ``fetch`` block (source, X-Cache, Age, why the CDN was skipped) and its error
code; an operator: the warning that names the key and the edge's failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from models.errors import ErrorCode, PipelineError
from models.records import FetchSource
from streams.fetch import ImageFetcher

BUCKET = "waste-images"
KEY = "uploads/2026/photo-1.jpg"
PHOTO = bytes(range(256)) * 40  # 10,240 bytes; the fetcher never decodes them


class FakeBody:
    """An S3 streaming body: ``read(n)`` returns what "has arrived" (at most ``piece`` bytes), then b""."""

    def __init__(self, data: bytes, *, piece: int = 4096, fail: Exception | None = None) -> None:
        self.data, self.piece, self.fail = data, piece, fail
        self.pos = 0
        self.closed = False

    async def read(self, n: int) -> bytes:
        if self.fail is not None:
            raise self.fail
        chunk = self.data[self.pos:self.pos + min(n, self.piece)]
        self.pos += len(chunk)
        return chunk

    async def __aenter__(self) -> FakeBody:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.closed = True


class S3Error(Exception):
    """What botocore's ClientError looks like to the fetcher: an exception with a ``response`` dict."""

    def __init__(self, code: str) -> None:
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}}


class FakeS3:
    def __init__(self, data: bytes = PHOTO, *, declared: int | None | str = "same", error: Exception | None = None,
                 hang: bool = False, body: FakeBody | None = None) -> None:
        self.data = data
        self.declared = len(data) if declared == "same" else declared
        self.error, self.hang, self.body = error, hang, body
        self.calls: list[tuple[str, str]] = []

    async def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 - botocore's names
        self.calls.append((Bucket, Key))
        if self.hang:
            await asyncio.Event().wait()  # never answers: the fetcher's timeout must end the wait
        if self.error is not None:
            raise self.error
        response: dict[str, Any] = {"Body": self.body or FakeBody(self.data)}
        if self.declared is not None:
            response["ContentLength"] = self.declared
        return response


class FakeCdn:
    """An HTTP edge whose answer each test chooses; counts the requests and records their paths."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.answer: Callable[[web.Request], Any] = lambda request: web.Response(body=PHOTO)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path_qs)
        response = self.answer(request)
        if asyncio.iscoroutine(response):
            response = await response
        return response


@pytest.fixture
async def cdn(aiohttp_server: Any) -> AsyncIterator[tuple[FakeCdn, str]]:
    fake = FakeCdn()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", fake.handle)
    server = await aiohttp_server(app)
    yield fake, str(server.make_url(f"/{BUCKET}"))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def fetcher(settings_factory: Any, http: aiohttp.ClientSession, s3: FakeS3, base: str,
            **overrides: Any) -> ImageFetcher:
    settings = settings_factory(cdn_base_url=base, s3_bucket_name=BUCKET, **overrides)
    return ImageFetcher(settings, http, s3)


def fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What an operator reads: why the edge was skipped, with the address it was asked at (logs only)."""
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "streams.fetch"]


def fetched_bytes(source: str) -> float:
    return REGISTRY.get_sample_value("waste_fetched_bytes_total", {"source": source}) or 0.0


async def raw_http_server(payload: bytes) -> tuple[asyncio.Server, str]:
    """A server that writes ``payload`` (a raw HTTP response) to each connection, then closes it."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(payload)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/{BUCKET}"


# --- the CDN serves -------------------------------------------------------------------------------------------


async def test_the_cdn_serves_the_bytes_with_its_cache_state_and_age(settings_factory, http, cdn) -> None:  # type: ignore[no-untyped-def]
    fake, base = cdn
    fake.answer = lambda r: web.Response(body=PHOTO, headers={"X-Cache": "Hit from cloudfront", "Age": "42"})
    s3 = FakeS3()
    before = fetched_bytes("cdn")
    got = await fetcher(settings_factory, http, s3, base).fetch(BUCKET, KEY)
    assert got.data == PHOTO
    assert got.info.source is FetchSource.CDN
    assert got.info.cdn_cache == "hit"
    assert got.info.cdn_age_s == 42
    assert got.info.bytes == len(PHOTO)
    assert got.info.cdn_error is None
    assert fake.paths == [f"/{BUCKET}/{KEY}"]  # the key under the bucket's path, its slashes kept
    assert s3.calls == []
    assert fetched_bytes("cdn") - before == len(PHOTO)


@pytest.mark.parametrize(("headers", "cache", "age"), [
    ({"X-Cache": "MISS", "Age": "0"}, "miss", 0),
    ({"Age": "soon"}, "unknown", None),
    ({}, "unknown", None),
])
async def test_a_miss_or_an_unreadable_age(settings_factory, http, cdn, headers, cache, age) -> None:  # type: ignore[no-untyped-def]
    fake, base = cdn
    fake.answer = lambda r: web.Response(body=PHOTO, headers=headers)
    got = await fetcher(settings_factory, http, FakeS3(), base).fetch(BUCKET, KEY)
    assert (got.info.source, got.info.cdn_cache, got.info.cdn_age_s) == (FetchSource.CDN, cache, age)


async def test_a_chunked_answer_without_a_length_is_read_whole(settings_factory, http, cdn) -> None:  # type: ignore[no-untyped-def]
    fake, base = cdn

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(PHOTO), 1000):
            await response.write(PHOTO[i:i + 1000])
        await response.write_eof()
        return response

    fake.answer = chunked
    s3 = FakeS3()
    got = await fetcher(settings_factory, http, s3, base).fetch(BUCKET, KEY)
    assert (got.data, got.info.source) == (PHOTO, FetchSource.CDN)
    assert s3.calls == []


async def test_a_body_of_exactly_the_limit_is_accepted_and_one_byte_more_refused(settings_factory, http, cdn) -> None:  # type: ignore[no-untyped-def]
    fake, base = cdn
    fake.answer = lambda r: web.Response(body=PHOTO)
    s3 = FakeS3()
    got = await fetcher(settings_factory, http, s3, base, max_image_bytes=len(PHOTO)).fetch(BUCKET, KEY)
    assert got.info.source is FetchSource.CDN
    with pytest.raises(PipelineError) as refused:
        await fetcher(settings_factory, http, s3, base, max_image_bytes=len(PHOTO) - 1).fetch(BUCKET, KEY)
    assert refused.value.code is ErrorCode.IMAGE_TOO_LARGE
    assert s3.calls == []  # too large is an answer, not a reason to try S3


async def test_a_chunked_body_over_the_limit_is_refused_while_it_is_read(settings_factory, http, cdn) -> None:  # type: ignore[no-untyped-def]
    fake, base = cdn

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"\0" * 65536)
        await response.write_eof()
        return response

    fake.answer = endless
    s3 = FakeS3()
    with pytest.raises(PipelineError) as refused:
        await fetcher(settings_factory, http, s3, base, max_image_bytes=300_000).fetch(BUCKET, KEY)
    assert refused.value.code is ErrorCode.IMAGE_TOO_LARGE
    assert "300000" in refused.value.message
    assert s3.calls == []


# --- the CDN cannot serve: S3 does ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [300, 403, 404, 500, 503])
async def test_an_error_status_falls_back_to_s3_and_says_why(settings_factory, http, cdn, caplog, status) -> None:  # type: ignore[no-untyped-def]
    fake, base = cdn
    fake.answer = lambda r: web.Response(status=status, body=b"nope")
    s3 = FakeS3()
    before = fetched_bytes("s3")
    with caplog.at_level(logging.WARNING, logger="streams.fetch"):
        got = await fetcher(settings_factory, http, s3, base).fetch(BUCKET, KEY)
    assert got.data == PHOTO
    assert got.info.source is FetchSource.S3
    assert got.info.bytes == len(PHOTO)
    assert got.info.cdn_error == f"HTTP {status}"
    assert got.info.cdn_cache == "unknown" and got.info.cdn_age_s is None
    assert s3.calls == [(BUCKET, KEY)]
    assert fetched_bytes("s3") - before == len(PHOTO)
    assert fallback_warnings(caplog) == [
        f"CDN fetch failed for key={KEY} (HTTP {status} from {base}/{KEY}); falling back to S3"]


async def test_a_declared_size_over_the_limit_is_refused_without_reading(settings_factory, http, cdn) -> None:  # type: ignore[no-untyped-def]
    fake, base = cdn
    fake.answer = lambda r: web.Response(body=PHOTO)
    s3 = FakeS3()
    with pytest.raises(PipelineError) as refused:
        await fetcher(settings_factory, http, s3, base, max_image_bytes=1000).fetch(BUCKET, KEY)
    assert refused.value.code is ErrorCode.IMAGE_TOO_LARGE
    assert refused.value.message == f"object is {len(PHOTO)} bytes, limit 1000"
    assert s3.calls == []


async def test_a_body_cut_short_falls_back_to_s3(settings_factory, http, caplog) -> None:  # type: ignore[no-untyped-def]
    server, base = await raw_http_server(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n"
                                         + b"x" * 100)
    try:
        s3 = FakeS3()
        with caplog.at_level(logging.WARNING, logger="streams.fetch"):
            got = await fetcher(settings_factory, http, s3, base).fetch(BUCKET, KEY)
    finally:
        server.close()
        await server.wait_closed()
    assert (got.data, got.info.source, got.info.cdn_error) == (PHOTO, FetchSource.S3, "truncated body")
    [warning] = fallback_warnings(caplog)
    assert warning.startswith(f"CDN fetch failed for key={KEY} (truncated body: ClientPayloadError: ")


async def test_a_decoded_body_shorter_than_its_length_falls_back_to_s3(settings_factory, http, cdn, caplog) -> None:  # type: ignore[no-untyped-def]
    # A gzip-encoded answer: aiohttp hands over the decoded bytes, whose count is not the Content-Length.
    import gzip

    fake, base = cdn
    body = gzip.compress(b"\0" * 50_000)
    fake.answer = lambda r: web.Response(body=body, headers={"Content-Encoding": "gzip"})
    s3 = FakeS3()
    with caplog.at_level(logging.WARNING, logger="streams.fetch"):
        got = await fetcher(settings_factory, http, s3, base).fetch(BUCKET, KEY)
    assert (got.data, got.info.source, got.info.cdn_error) == (PHOTO, FetchSource.S3, "truncated body")
    assert fallback_warnings(caplog) == [
        f"CDN fetch failed for key={KEY} (truncated body: 50000 of {len(body)} bytes); falling back to S3"]


async def test_an_edge_that_does_not_answer_in_time_falls_back_to_s3(settings_factory, http, cdn, caplog) -> None:  # type: ignore[no-untyped-def]
    fake, base = cdn

    async def hang(request: web.Request) -> web.Response:
        await asyncio.Event().wait()  # never set: the edge hangs
        raise AssertionError("unreachable")

    fake.answer = hang
    s3 = FakeS3()
    with caplog.at_level(logging.WARNING, logger="streams.fetch"):
        got = await fetcher(settings_factory, http, s3, base, fetch_timeout_seconds=0.2).fetch(BUCKET, KEY)
    assert (got.data, got.info.source, got.info.cdn_error) == (PHOTO, FetchSource.S3, "timeout")
    assert fallback_warnings(caplog) == [
        f"CDN fetch failed for key={KEY} (timeout after 0.2s: {base}/{KEY}); falling back to S3"]


async def test_an_edge_that_refuses_connections_falls_back_to_s3_naming_no_host(settings_factory, http, caplog) -> None:  # type: ignore[no-untyped-def]
    server, base = await raw_http_server(b"")
    server.close()  # the port is now closed: connections are refused
    await server.wait_closed()
    s3 = FakeS3()
    with caplog.at_level(logging.WARNING, logger="streams.fetch"):
        got = await fetcher(settings_factory, http, s3, base).fetch(BUCKET, KEY)
    assert got.info.source is FetchSource.S3
    assert got.info.cdn_error == "ClientConnectorError"  # the reason alone: results name no host or port
    [warning] = fallback_warnings(caplog)  # the log names them
    assert warning.startswith(f"CDN fetch failed for key={KEY} (ClientConnectorError: Cannot connect to host 127.0.0.1")


async def test_with_the_cdn_disabled_only_s3_is_asked(settings_factory, http, cdn) -> None:  # type: ignore[no-untyped-def]
    fake, base = cdn
    s3 = FakeS3()
    got = await fetcher(settings_factory, http, s3, base, cdn_enabled=False).fetch(BUCKET, KEY)
    assert (got.data, got.info.source, got.info.cdn_error) == (PHOTO, FetchSource.S3, None)
    assert fake.paths == []


# --- neither serves ---------------------------------------------------------------------------------------------


@pytest.fixture
def s3_only(settings_factory, http):  # type: ignore[no-untyped-def]
    def make(s3: FakeS3, **overrides: Any) -> ImageFetcher:
        return fetcher(settings_factory, http, s3, "http://127.0.0.1:9/unused", cdn_enabled=False, **overrides)

    return make


@pytest.mark.parametrize("code", ["NoSuchKey", "404", "NotFound", "NoSuchBucket"])
async def test_an_object_s3_does_not_have_is_image_not_found(s3_only, code) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PipelineError) as failed:
        await s3_only(FakeS3(error=S3Error(code))).fetch(BUCKET, KEY)
    assert failed.value.code is ErrorCode.IMAGE_NOT_FOUND
    assert failed.value.message == "the image does not exist"
    assert failed.value.detail == f"s3://{BUCKET}/{KEY} does not exist"


@pytest.mark.parametrize(("error", "named"), [(S3Error("AccessDenied"), "AccessDenied"),
                                              (ConnectionResetError("reset"), "ConnectionResetError")])
async def test_another_s3_failure_is_fetch_failed(s3_only, error, named) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PipelineError) as failed:
        await s3_only(FakeS3(error=error)).fetch(BUCKET, KEY)
    assert failed.value.code is ErrorCode.FETCH_FAILED
    assert failed.value.message == "the image could not be fetched"
    assert failed.value.detail is not None and failed.value.detail.startswith(f"S3 GetObject failed: {named}: ")


async def test_s3_that_does_not_answer_in_time_is_fetch_failed(s3_only) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PipelineError) as failed:
        await s3_only(FakeS3(hang=True), fetch_timeout_seconds=0.2).fetch(BUCKET, KEY)
    assert failed.value.code is ErrorCode.FETCH_FAILED
    assert failed.value.message == "the image could not be fetched in time"
    assert failed.value.detail == f"S3 GetObject timed out: s3://{BUCKET}/{KEY}"


async def test_an_s3_body_arriving_in_pieces_is_read_to_its_end(s3_only) -> None:  # type: ignore[no-untyped-def]
    body = FakeBody(PHOTO, piece=333)
    got = await s3_only(FakeS3(body=body)).fetch(BUCKET, KEY)
    assert got.data == PHOTO
    assert body.closed


async def test_an_s3_body_without_a_declared_length_is_read_whole(s3_only) -> None:  # type: ignore[no-untyped-def]
    got = await s3_only(FakeS3(declared=None)).fetch(BUCKET, KEY)
    assert (got.data, got.info.bytes) == (PHOTO, len(PHOTO))


async def test_an_s3_object_of_exactly_the_limit_is_read_and_one_byte_more_refused(s3_only) -> None:  # type: ignore[no-untyped-def]
    got = await s3_only(FakeS3(), max_image_bytes=len(PHOTO)).fetch(BUCKET, KEY)
    assert got.data == PHOTO
    body = FakeBody(PHOTO)
    with pytest.raises(PipelineError) as declared:
        await s3_only(FakeS3(body=body), max_image_bytes=len(PHOTO) - 1).fetch(BUCKET, KEY)
    assert declared.value.code is ErrorCode.IMAGE_TOO_LARGE
    assert declared.value.message == f"object is {len(PHOTO)} bytes, limit {len(PHOTO) - 1}"
    assert body.pos == 0  # refused by its declared length, before a byte was read
    # An object that declares no length (or a wrong one) is still stopped while it is read.
    with pytest.raises(PipelineError) as read:
        await s3_only(FakeS3(declared=None), max_image_bytes=len(PHOTO) - 1).fetch(BUCKET, KEY)
    assert read.value.code is ErrorCode.IMAGE_TOO_LARGE
    assert read.value.message == f"object is over the limit of {len(PHOTO) - 1} bytes"


async def test_an_s3_body_shorter_than_declared_is_fetch_failed(s3_only) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PipelineError) as failed:
        await s3_only(FakeS3(declared=len(PHOTO) + 10)).fetch(BUCKET, KEY)
    assert failed.value.code is ErrorCode.FETCH_FAILED
    assert failed.value.message == "the image could not be fetched"
    assert failed.value.detail == f"S3 body truncated: {len(PHOTO)} of {len(PHOTO) + 10} bytes"


@pytest.mark.parametrize(("error", "named"), [(aiohttp.ClientPayloadError("cut"), "ClientPayloadError: cut"),
                                              (TimeoutError(), "TimeoutError: ")])
async def test_an_s3_body_that_fails_while_read_is_fetch_failed(s3_only, error, named) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PipelineError) as failed:
        await s3_only(FakeS3(body=FakeBody(PHOTO, fail=error))).fetch(BUCKET, KEY)
    assert failed.value.code is ErrorCode.FETCH_FAILED
    assert failed.value.message == "the image could not be fetched"
    assert failed.value.detail == f"S3 body read failed: {named}"


async def test_an_s3_body_that_stops_arriving_is_fetch_failed(s3_only) -> None:  # type: ignore[no-untyped-def]
    class StalledBody(FakeBody):
        async def read(self, n: int) -> bytes:
            await asyncio.Event().wait()  # the connection stays open, nothing more arrives
            return b""

    with pytest.raises(PipelineError) as failed:
        await s3_only(FakeS3(body=StalledBody(PHOTO)), fetch_timeout_seconds=0.2).fetch(BUCKET, KEY)
    assert failed.value.code is ErrorCode.FETCH_FAILED


# --- what is never fetched --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bucket", "key", "why"), [
    ("other-bucket", KEY, "another bucket"),
    (BUCKET, "uploads/../secrets.jpg", "key has an empty, '.' or '..' path segment"),
    (BUCKET, "uploads/a?b.jpg", "key has characters other than ASCII letters, digits and . _ - /"),
])
async def test_another_bucket_or_an_unsafe_key_is_never_fetched(settings_factory, http, cdn, bucket, key, why) -> None:  # type: ignore[no-untyped-def]
    fake, base = cdn
    s3 = FakeS3()
    with pytest.raises(PipelineError) as refused:
        await fetcher(settings_factory, http, s3, base).fetch(bucket, key)
    assert refused.value.code is ErrorCode.INVALID_EVENT
    assert refused.value.message == "the event's object is not acceptable"
    assert refused.value.detail == f"bucket={bucket!r} key={key!r}: {why}"  # for the log: what was refused, why
    assert fake.paths == [] and s3.calls == []


async def test_a_body_of_many_chunks_is_read_whole_from_the_cdn(settings_factory, http, cdn) -> None:  # type: ignore[no-untyped-def]
    fake, base = cdn
    big = bytes(range(256)) * 2500  # 640,000 bytes: several reads of the stream
    fake.answer = lambda r: web.Response(body=big)
    got = await fetcher(settings_factory, http, FakeS3(), base).fetch(BUCKET, KEY)
    assert (got.data, got.info.source, got.info.bytes) == (big, FetchSource.CDN, len(big))

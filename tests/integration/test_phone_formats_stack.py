"""HEIC and AVIF photos as a phone uploads them: through the API's pre-signed POST, the real S3 server, the
CDN edge and the worker, to a result on the WebSocket; the AVIF of a photo already answered as HEIC is a hit."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import aiohttp
import pillow_heif
import pytest
from PIL import Image

from models.records import AnalysisResult, CacheSource, JobStatus
from tests import samples
from tests.api.live import running_api
from tools.kit.api import analyze, post_upload, upload_complete

pytestmark = pytest.mark.pipeline
pillow_heif.register_heif_opener()  # to write HEIC here, as a phone does


def encode(index: int, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(samples.photo_bytes(index))).convert("RGB").save(out, fmt, quality=80)
    return out.getvalue()


@pytest.fixture
async def api(pipeline) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    settings = pipeline.settings.model_copy(update={"ws_max_sockets_per_client": 100})
    async with running_api(settings) as base:
        yield base


async def analyze_as_a_phone(pipeline, http: aiohttp.ClientSession, api: str, data: bytes,  # type: ignore[no-untyped-def]
                             content_type: str) -> AnalysisResult:
    """analyze -> pre-signed POST of the file -> upload-complete; then this session's worker's result.

    The result is read from the results topic, keeping the one of this session's worker group (its model
    version): on a shared broker other groups answer every upload too, with code of their own.
    """
    job = await analyze(http, api, content_type=content_type)
    assert (await post_upload(http, job, data, content_type=content_type))[0] == 204
    async with pipeline.client.results() as watcher:
        status, body = await upload_complete(http, api, job)
        assert status == 202, body
        async with asyncio.timeout(90):
            while True:
                await watcher.wait_for([job["job_id"]], timeout=90)
                ours = [r for r in watcher.received[job["job_id"]]
                        if r.cache is not None and r.cache.model_version == pipeline.settings.model_version]
                if ours:
                    return ours[0]
                await watcher.drain(0.5)


async def test_heic_and_avif_go_through_the_pipeline(pipeline, api: str) -> None:  # type: ignore[no-untyped-def]
    heic, avif = encode(356, "HEIF"), encode(356, "AVIF")
    async with aiohttp.ClientSession() as http:
        first = await analyze_as_a_phone(pipeline, http, api, heic, "image/heic")
        assert first.status is JobStatus.DONE and first.cache is not None and first.fetch is not None
        assert first.cache.source is CacheSource.MODEL and first.fetch.source.value == "cdn"
        second = await analyze_as_a_phone(pipeline, http, api, avif, "image/avif")
    assert second.status is JobStatus.DONE and second.cache is not None
    assert second.cache.source is not CacheSource.MODEL  # the same photo: not paid for again
    assert second.classification == first.classification


async def test_a_heic_declared_as_jpeg_is_refused(api: str) -> None:
    async with aiohttp.ClientSession() as http:
        # The S3 server enforces the Content-Type the policy pinned: a HEIC must say it is one.
        job = await analyze(http, api, content_type="image/jpeg")
        assert (await post_upload(http, job, encode(348, "HEIF"), content_type="image/heic"))[0] != 204

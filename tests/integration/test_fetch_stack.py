"""CDN-first fetch with S3 fallback, against the real Varnish edge and S3 server."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from models.errors import ErrorCode, PipelineError
from models.settings import Settings
from streams.clients import s3_client
from streams.fetch import ImageFetcher
from tests import samples
from tools.kit import free_port

pytestmark = pytest.mark.stack


@contextlib.asynccontextmanager
async def fetcher(settings: Settings) -> AsyncIterator[ImageFetcher]:
    async with aiohttp.ClientSession() as http, s3_client(settings) as s3:
        yield ImageFetcher(settings, http, s3)


async def put(settings: Settings, data: bytes) -> str:
    key = f"tests/fetch/{uuid.uuid4()}.jpg"
    async with s3_client(settings) as s3:
        await s3.put_object(Bucket=settings.s3_bucket_name, Key=key, Body=data, ContentType="image/jpeg")
    return key


async def test_first_read_is_an_edge_miss_then_a_hit(settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory()
    data = samples.photo_bytes(20)
    key = await put(settings, data)
    async with fetcher(settings) as f:
        first = await f.fetch(settings.s3_bucket_name, key)
        second = await f.fetch(settings.s3_bucket_name, key)
    assert first.data == data and second.data == data
    assert (first.info.source.value, first.info.cdn_cache) == ("cdn", "miss")
    assert (second.info.source.value, second.info.cdn_cache) == ("cdn", "hit")
    assert second.info.cdn_age_s is not None


async def test_cdn_down_falls_back_to_s3(settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(cdn_base_url=f"http://127.0.0.1:{free_port()}/waste-images", fetch_timeout_seconds=2)
    data = samples.photo_bytes(21)
    key = await put(settings, data)
    async with fetcher(settings) as f:
        got = await f.fetch(settings.s3_bucket_name, key)
    assert got.data == data and got.info.source.value == "s3" and got.info.cdn_error


async def test_cdn_disabled_reads_s3_only(settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(cdn_enabled=False)
    key = await put(settings, samples.photo_bytes(22))
    async with fetcher(settings) as f:
        got = await f.fetch(settings.s3_bucket_name, key)
    assert got.info.source.value == "s3" and got.info.cdn_error is None


async def test_a_missing_object_is_image_not_found_after_trying_both(settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory()
    async with fetcher(settings) as f:
        with pytest.raises(PipelineError) as info:
            await f.fetch(settings.s3_bucket_name, f"tests/fetch/{uuid.uuid4()}.jpg")
    assert info.value.code is ErrorCode.IMAGE_NOT_FOUND


async def test_an_object_over_the_size_cap_is_refused(settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(max_image_bytes=10_000)
    key = await put(settings, samples.photo_bytes(23))
    for cdn_enabled in (True, False):
        async with fetcher(settings.model_copy(update={"cdn_enabled": cdn_enabled})) as f:
            with pytest.raises(PipelineError) as info:
                await f.fetch(settings.s3_bucket_name, key)
        assert info.value.code is ErrorCode.IMAGE_TOO_LARGE

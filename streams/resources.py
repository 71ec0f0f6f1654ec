"""The worker's long-lived clients and its hashing executor, opened once on start and closed on stop.

Agents get them with ``await resources.ready()``; tests install fakes with :func:`install`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import aiohttp
from redis.asyncio import Redis

from models.settings import Settings
from streams import redis_client
from streams.budget import ModelBudget
from streams.cache import ResultCache
from streams.clients import s3_client
from streams.digests import DigestIndex
from streams.fetch import ImageFetcher
from streams.vision import VisionClient

log = logging.getLogger(__name__)


@dataclass
class Resources:
    settings: Settings
    fetcher: ImageFetcher
    cache: ResultCache
    vision: VisionClient
    redis: Redis
    # Pillow releases the GIL while decoding, so threads use both cores without pickling images to processes.
    executor: Executor
    digests: DigestIndex | None = None  # None: every upload is decoded (CONTENT_DIGEST_CACHE=false)
    budget: ModelBudget | None = None  # None: no guard on model calls
    s3: Any = None  # the aiobotocore client (the storage-event trigger lists uploads with it)


class _Holder:
    def __init__(self) -> None:
        self._resources: Resources | None = None
        self._event: asyncio.Event | None = None

    def _ready_event(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def set(self, resources: Resources | None) -> None:
        self._resources = resources
        if resources is None:
            self._event = None
        else:
            self._ready_event().set()

    async def ready(self) -> Resources:
        if self._resources is None:
            await self._ready_event().wait()
        assert self._resources is not None
        return self._resources


_holder = _Holder()
ready = _holder.ready
install = _holder.set


@contextlib.asynccontextmanager
async def open_resources(settings: Settings):  # type: ignore[no-untyped-def]
    """Create every client the agents need; close them all on exit, in reverse order."""
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64, ttl_dns_cache=300))
        )
        s3: Any = await stack.enter_async_context(s3_client(settings))
        redis = await redis_client.open_client(settings.redis_url, cluster=settings.redis_cluster,
                                               retry_seconds=settings.redis_retry_seconds)
        stack.push_async_callback(redis.aclose)
        vision = VisionClient(settings)
        stack.push_async_callback(vision.close)
        executor = ThreadPoolExecutor(max_workers=settings.hash_workers, thread_name_prefix="phash")
        stack.callback(executor.shutdown, wait=False, cancel_futures=True)
        yield Resources(
            settings=settings,
            fetcher=ImageFetcher(settings, http, s3),
            cache=ResultCache(redis, ttl_seconds=settings.cache_ttl_seconds, model_version=settings.model_version),
            vision=vision,
            redis=redis,
            executor=executor,
            digests=(DigestIndex(redis, ttl_seconds=settings.cache_ttl_seconds)
                     if settings.content_digest_cache else None),
            budget=ModelBudget(redis, per_minute=settings.model_calls_per_minute,
                               per_day=settings.model_calls_per_day, namespace=settings.vision_model),
            s3=s3,
        )

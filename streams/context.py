"""The worker's one context: settings, clients, indexes, the registry of calls under way, markers, revocations.

Everything a worker process holds besides its Faust declarations (app, topics, tables) lives in one
:class:`WorkerContext`, opened when the worker starts and closed when it stops. The app keeps it in a
:class:`ContextSlot` (``app.context``); agents take it with ``ctx = await app.context.ready()`` and pass it down.
Tests build a context from fakes with :meth:`WorkerContext.assemble` and install it in the slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, MutableMapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from models.settings import Settings
from streams import near_index, redis_client
from streams.budget import ModelBudget
from streams.cache import ResultCache
from streams.clients import s3_client
from streams.cost import CostLedger
from streams.dedupe_state import CallRegistry, ResultTable, Revocations
from streams.digests import DigestIndex
from streams.fetch import ImageFetcher
from streams.markers import PublishedJobs
from streams.near_index import NearIndex
from streams.reframed_index import RedisReframedIndex, ReframedIndex, ReframedTier
from streams.rewarm import RewarmState
from streams.vision import VisionClient

log = logging.getLogger(__name__)

# Thumbnails made at once per worker: each holds an image's bytes (up to MAX_IMAGE_BYTES) and a decode, so
# the classify agent's concurrency does not multiply the worker's memory (the fetch step has its own bound).
THUMBNAIL_SLOTS = 4


@dataclass
class TimerState:
    """What the worker's timers remember from one run to the next."""

    invalidations_read_until: float | None = None  # the invalidation poll (agents/maintenance.py)
    reconcile_last_pass: float = 0.0  # the storage reconciliation (agents/storage_events.py), monotonic
    lag_reported: set[tuple[str, str]] = field(default_factory=set)  # (topic, partition) gauges set
    rewarm: RewarmState = field(default_factory=RewarmState)


@dataclass
class WorkerContext:
    settings: Settings
    fetcher: ImageFetcher
    cache: ResultCache
    vision: VisionClient
    redis: Any  # redis.asyncio.Redis or RedisCluster
    # Pillow releases the GIL while decoding, so threads use both cores without pickling images to processes.
    executor: Executor
    near: NearIndex
    reframed: ReframedTier
    results: ResultTable
    calls: CallRegistry
    revocations: Revocations
    cost: CostLedger
    digests: DigestIndex | None = None  # None: every upload is decoded (CONTENT_DIGEST_CACHE=false)
    budget: ModelBudget | None = None  # None: no guard on model calls
    s3: Any = None  # the aiobotocore client (the storage-event trigger lists uploads with it)
    published: PublishedJobs = field(default_factory=PublishedJobs)
    timers: TimerState = field(default_factory=TimerState)
    thumbnail_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(THUMBNAIL_SLOTS))

    @classmethod
    def assemble(cls, settings: Settings, *, fetcher: Any, cache: Any, vision: Any, redis: Any, executor: Executor,
                 near: NearIndex, reframed: ReframedIndex, results_table: MutableMapping[str, Any],
                 inflight_table: MutableMapping[str, Any], cost: CostLedger | None = None,
                 **optional: Any) -> WorkerContext:
        """A context over the given clients and tables (the worker's, or a test's fakes and dicts)."""
        revocations = Revocations()
        return cls(
            settings=settings, fetcher=fetcher, cache=cache, vision=vision, redis=redis, executor=executor,
            near=near, revocations=revocations, cost=cost or CostLedger(),
            reframed=ReframedTier(reframed, fetcher=fetcher, cache=cache, executor=executor, settings=settings),
            results=ResultTable(results_table, ttl_seconds=settings.cache_ttl_seconds,
                                model_version=settings.model_version, revocations=revocations),
            calls=CallRegistry(inflight_table, near, timeout_seconds=settings.inflight_timeout_seconds,
                               renew_claims=settings.near_duplicate_wait and settings.near_duplicate_max_distance > 0),
            **optional,
        )


@contextlib.asynccontextmanager
async def open_context(settings: Settings, *, results_table: MutableMapping[str, Any],
                       inflight_table: MutableMapping[str, Any]) -> AsyncIterator[WorkerContext]:
    """Create every client the agents need; close them all on exit, in reverse order."""
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64, ttl_dns_cache=300))
        )
        s3: Any = await stack.enter_async_context(s3_client(settings))
        redis = await redis_client.open_client(settings.redis_url, cluster=settings.redis_cluster,
                                               retry_seconds=settings.redis_retry_seconds)
        stack.push_async_callback(redis.aclose)
        ledger = CostLedger()
        vision = VisionClient(settings, ledger=ledger)
        stack.push_async_callback(vision.close)
        executor = ThreadPoolExecutor(max_workers=settings.hash_workers, thread_name_prefix="phash")
        stack.callback(executor.shutdown, wait=False, cancel_futures=True)
        yield WorkerContext.assemble(
            settings, fetcher=ImageFetcher(settings, http, s3), vision=vision, redis=redis, executor=executor,
            cache=ResultCache(redis, ttl_seconds=settings.cache_ttl_seconds, model_version=settings.model_version),
            near=near_index.redis_index(redis, settings),
            reframed=RedisReframedIndex(redis, model_version=settings.model_version,
                                        ttl_seconds=settings.cache_ttl_seconds, word_cap=settings.reframed_word_cap),
            results_table=results_table, inflight_table=inflight_table, cost=ledger,
            digests=(DigestIndex(redis, ttl_seconds=settings.cache_ttl_seconds)
                     if settings.content_digest_cache else None),
            budget=ModelBudget(redis, per_minute=settings.model_calls_per_minute,
                               per_day=settings.model_calls_per_day, namespace=settings.vision_model),
            s3=s3,
        )


class ContextSlot:
    """Where the app keeps the worker's context: its settings from configure time on, the context once open."""

    def __init__(self, load_settings: Callable[[], Settings]) -> None:
        self._load_settings = load_settings
        self._settings: Settings | None = None
        self._context: WorkerContext | None = None
        self._ready: asyncio.Event | None = None

    def use_settings(self, settings: Settings) -> None:
        """Choose the settings before the app is configured (tests, benchmarks, tools)."""
        self._settings = settings

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = self._load_settings()
        return self._settings

    def install(self, context: WorkerContext | None) -> None:
        """Make ``context`` the worker's (None: the worker stops; agents asking then wait for the next, and the
        settings are read again)."""
        self._context = context
        if context is None:
            self._ready = None
            self._settings = None
            return
        self._settings = context.settings
        self._ready_event().set()

    def current(self) -> WorkerContext | None:
        return self._context

    async def ready(self) -> WorkerContext:
        if self._context is None:
            await self._ready_event().wait()
        assert self._context is not None
        return self._context

    def _ready_event(self) -> asyncio.Event:
        if self._ready is None:
            self._ready = asyncio.Event()
        return self._ready

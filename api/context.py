"""Typed application state: the AppKeys and the bundle of outside services (real or fake)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from api.cache_admin import CacheAdmin
from api.hub import Hub
from api.limits import RateLimiter
from api.metrics import Metrics
from api.publisher import UploadPublisher
from api.results import ResultsSource
from api.store import JobStore
from api.uploads import UploadStorage
from models.settings import Settings


@dataclass
class Backends:
    """Everything that leaves the process. Tests pass fakes; ``api.backends.connect`` builds the real ones."""

    store: JobStore
    publisher: UploadPublisher
    storage: UploadStorage
    results: ResultsSource
    cache_admin: CacheAdmin | None = None  # operator invalidation; None disables the endpoint
    ratelimit: RateLimiter | None = None  # shared (Redis) rate limits; None: this process's own counters


@dataclass
class Background:
    """Long-running tasks of one app, and whether each has got going (for /healthz)."""

    results_ready: asyncio.Event = field(default_factory=asyncio.Event)
    states_ready: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


SETTINGS = web.AppKey("settings", Settings)
BACKENDS = web.AppKey("backends", Backends)
BACKGROUND = web.AppKey("background", Background)
HUB = web.AppKey("hub", Hub)
METRICS = web.AppKey("metrics", Metrics)
LIMITER = web.AppKey("limiter", RateLimiter)  # fallback when the backends bring no shared limiter

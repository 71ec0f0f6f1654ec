"""Agent tests without Kafka: tables become dicts, topics become recorders, clients become fakes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from models.classification import WasteCategory, WasteClassification
from models.errors import ErrorCode, PipelineError
from models.records import CachedClassification
from models.settings import Settings
from streams.context import WorkerContext
from streams.fetch import FetchedImage
from streams.vision import VisionAnswer
from tests.doubles import FakeRedis, LocalNearIndex, LocalReframedIndex


@dataclass
class SentTo:
    """Records what an agent sent to one topic."""

    messages: list[tuple[Any, bytes]] = field(default_factory=list)

    async def send(self, key: Any = None, value: bytes = b"", **_: Any) -> None:
        self.messages.append((key, value))

    def values(self) -> list[dict[str, Any]]:
        return [json.loads(v) for _, v in self.messages]


class FakeCache:
    def __init__(self, model_version: str) -> None:
        self.entries: dict[str, CachedClassification] = {}
        self.model_version = model_version

    async def get(self, phash: str) -> CachedClassification | None:
        entry = self.entries.get(phash)
        return entry if entry is not None and entry.model_version == self.model_version else None

    async def put(self, entry: CachedClassification) -> None:
        self.entries[entry.phash] = entry


class FakeVision:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail_with: PipelineError | None = None

    async def classify(self, image_url: str) -> VisionAnswer:
        self.calls.append(image_url)
        if self.fail_with is not None:
            raise self.fail_with
        return VisionAnswer(
            WasteClassification(category=WasteCategory.GLASS, item_name="jar", disposal_instructions="rinse",
                                recyclable=True, confidence=0.9),
            attempts=1, latency_ms=5.0,
        )


class FakeFetcher:
    """Serves ``objects``, and a real photo for any key under ``made_up_prefix``: the images behind the hashed
    events that dedupe/classify tests make up (classify fetches them again for the model's thumbnail)."""

    def __init__(self, made_up_prefix: str = "k/") -> None:
        self.objects: dict[str, bytes] = {}
        self.made_up_prefix = made_up_prefix
        self.fetched: list[str] = []

    async def fetch(self, bucket: str, key: str) -> FetchedImage:
        from models.records import FetchInfo, FetchSource
        from tests import samples

        self.fetched.append(key)
        if key.startswith(self.made_up_prefix):
            data = samples.photo_bytes(3)
        elif key in self.objects:
            data = self.objects[key]
        else:
            raise PipelineError(ErrorCode.IMAGE_NOT_FOUND, key)
        return FetchedImage(data, FetchInfo(source=FetchSource.CDN, cdn_cache="miss", bytes=len(data)))

    fetch_patiently = fetch

    fetch_patiently = fetch  # no outage to wait out here (tests/unit/test_fetch_retry.py covers the retries)


@dataclass
class Harness:
    settings: Settings
    cache: FakeCache
    vision: FakeVision
    fetcher: FakeFetcher
    results: SentTo
    hashed: SentTo
    requests: SentTo
    dead_letters: SentTo
    executor: Any = None
    redis: FakeRedis = field(default_factory=FakeRedis)
    results_table: dict[str, Any] = field(default_factory=dict)
    inflight_table: dict[str, Any] = field(default_factory=dict)
    ctx: WorkerContext = field(init=False)

    def results_by_job(self) -> dict[str, dict[str, Any]]:
        return {v["job_id"]: v for v in self.results.values()}

    def reconfigure(self, **overrides: Any) -> WorkerContext:
        """A new context with these settings over the same fakes and tables (new indexes, as a restarted worker
        with these settings would build); installed as the worker's."""
        from streams.app import app

        self.settings = Settings(_env_file=None, **{**AGENT_TEST_SETTINGS, **overrides})  # type: ignore[arg-type, call-arg]
        self.cache.model_version = self.settings.model_version
        self.ctx = WorkerContext.assemble(
            self.settings, fetcher=self.fetcher, cache=self.cache, vision=self.vision, redis=self.redis,
            executor=self.executor, results_table=self.results_table, inflight_table=self.inflight_table,
            near=LocalNearIndex(self.cache.get, max_distance=self.settings.near_duplicate_max_distance,
                                model_version=self.settings.model_version,
                                ttl_seconds=self.settings.cache_ttl_seconds,
                                claim_ttl_seconds=self.settings.inflight_timeout_seconds),
            reframed=LocalReframedIndex(ttl_seconds=self.settings.cache_ttl_seconds,
                                        word_cap=self.settings.reframed_word_cap))
        app.context.install(self.ctx)
        return self.ctx


# Agent tests name their objects freely; the API's key scheme is tested in tests/unit/test_upload_checks.py.
# The reframed tier is off here: the fake fetcher serves one photo for every made-up key, which that tier would
# (rightly) call one picture; tests/agents/test_reframed.py turns it on with photos of their own.
AGENT_TEST_SETTINGS: dict[str, Any] = {"upload_key_pattern": r"[a-z0-9/_.-]+", "reframed_match": False}


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    from concurrent.futures import ThreadPoolExecutor

    import agents.dedupe
    import agents.fetch_hash
    import streams.outcomes
    from streams.app import app

    settings = Settings(_env_file=None, **AGENT_TEST_SETTINGS)  # type: ignore[arg-type, call-arg]
    executor = ThreadPoolExecutor(2)
    h = Harness(settings, FakeCache(settings.model_version), FakeVision(), FakeFetcher(), SentTo(), SentTo(),
                SentTo(), SentTo(), executor=executor)
    h.reconfigure()
    monkeypatch.setattr(streams.outcomes, "analysis_results_topic", h.results)
    monkeypatch.setattr(streams.outcomes, "dead_letter_topic", h.dead_letters)
    monkeypatch.setattr(agents.fetch_hash, "images_hashed_topic", h.hashed)
    monkeypatch.setattr(agents.dedupe, "vision_requests_topic", h.requests)
    yield h
    app.context.install(None)
    executor.shutdown()

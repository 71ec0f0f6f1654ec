"""A job's terminal result: what it says, that each worker group publishes it once (the Redis marker, written when
the broker acknowledged it, and the process's own record until then), and the dead letters kept for replay."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError

import streams.outcomes
from models.classification import WasteCategory, WasteClassification
from models.errors import ErrorCode
from models.records import (
    AnsweredBy,
    CachedClassification,
    CacheInfo,
    CacheSource,
    FetchInfo,
    FetchSource,
    ImageHashed,
    JobStatus,
    utcnow,
)
from streams.markers import PublishedJobs
from streams.outcomes import (
    dead_letter,
    dead_letter_undecodable,
    done_result,
    fail_quietly,
    failed_result,
    publish_result,
    read_event,
)
from tests.agents.conftest import Harness

PHASH = "ab" * 32


def counter(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


class MarkerRedis:
    """The two commands of the markers, recording their arguments; ``fail`` makes them raise as a lost Redis."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.values: dict[str, Any] = {}
        self.expiries: dict[str, int] = {}
        self.fail = fail or set()

    async def exists(self, key: str) -> int:
        if "exists" in self.fail:
            raise RedisConnectionError("Redis is gone")
        return int(key in self.values)

    async def set(self, key: str, value: Any, *, ex: int | None = None) -> bool:
        if "set" in self.fail:
            raise RedisConnectionError("Redis is gone")
        self.values[key] = value
        if ex is not None:
            self.expiries[key] = ex
        return True


class Broker:
    """The results topic: ``send`` answers a future the test resolves (the broker's acknowledgement)."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, bytes]] = []
        self.acks: list[asyncio.Future[Any]] = []

    async def send(self, key: Any = None, value: bytes = b"", **_: Any) -> asyncio.Future[Any]:
        self.sent.append((key, value))
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack


async def settled() -> None:
    """Let the callbacks and the marker write the acknowledgement scheduled run (they need a few loop turns)."""
    for _ in range(5):
        await asyncio.sleep(0)


def job(job_id: str = "job-1", **kw: Any) -> ImageHashed:
    return ImageHashed(job_id=job_id, bucket="waste-images", key=f"k/{job_id}.jpg", phash=PHASH,
                       image_url=f"https://cdn.test/k/{job_id}.jpg",
                       fetch=FetchInfo(source=FetchSource.CDN, cdn_cache="hit", bytes=123),
                       received_at=kw.pop("received_at", utcnow()), timings_ms={"fetch": 4.0, "hash": 6.0}, **kw)


def cached(cost: float | None = 0.002) -> CachedClassification:
    return CachedClassification(
        phash=PHASH, model_version="m|p1|t1", job_id="job-0", created_at=utcnow(), cost_usd=cost,
        answered_by=AnsweredBy(model="vision-1", system_fingerprint="fp-9"),
        classification=WasteClassification(category=WasteCategory.GLASS, item_name="jar", recyclable=True,
                                           disposal_instructions="rinse", confidence=0.9))


def ctx_with(harness: Harness, redis: Any) -> Any:
    return dataclasses.replace(harness.ctx, redis=redis, published=PublishedJobs())


# --- what a result says ---------------------------------------------------------------------------------------


def test_a_done_result_carries_the_answer_the_job_and_every_timing() -> None:
    j = job(received_at=utcnow() - timedelta(days=1))
    entry = cached()
    cache = CacheInfo(hit=True, source=CacheSource.REDIS, phash=PHASH, reused_job_id="job-0")
    result = done_result(j, entry, cache, {"lookup": 1.5, "hash": 7.0})
    assert (result.job_id, result.status, result.classification, result.cache) == (
        "job-1", JobStatus.DONE, entry.classification, cache)
    assert (result.fetch, result.image_key, result.image_url, result.answered_by) == (
        j.fetch, "k/job-1.jpg", "https://cdn.test/k/job-1.jpg", entry.answered_by)
    assert result.error is None
    # The job's own timings, then the step's (a later one wins), then the total since the upload was received.
    assert set(result.timings_ms) == {"fetch", "hash", "lookup", "total"}
    assert (result.timings_ms["fetch"], result.timings_ms["hash"], result.timings_ms["lookup"]) == (4.0, 7.0, 1.5)
    day_ms = 86_400_000
    assert day_ms <= result.timings_ms["total"] < day_ms + 60_000
    assert round(result.timings_ms["total"], 2) == result.timings_ms["total"]


def test_a_failed_result_carries_the_code_and_whatever_is_known() -> None:
    bare = failed_result("job-2", ErrorCode.IMAGE_NOT_FOUND, "the image does not exist")
    assert (bare.job_id, bare.status, bare.classification, bare.cache, bare.fetch) == (
        "job-2", JobStatus.FAILED, None, None, None)
    assert (bare.error.code, bare.error.message) == (ErrorCode.IMAGE_NOT_FOUND, "the image does not exist")
    assert (bare.timings_ms, bare.image_key, bare.image_url) == ({}, None, None)
    fetch = FetchInfo(source=FetchSource.S3, bytes=9)
    cache = CacheInfo(hit=False, source=CacheSource.MODEL, phash=PHASH)
    full = failed_result("job-3", ErrorCode.MODEL_TIMEOUT, "slow", key="k/3.jpg", image_url="https://cdn.test/3",
                         fetch=fetch, cache=cache, timings_ms={"model": 30_000.0})
    assert (full.image_key, full.image_url, full.fetch, full.cache, full.timings_ms) == (
        "k/3.jpg", "https://cdn.test/3", fetch, cache, {"model": 30_000.0})


# --- published once per worker group ----------------------------------------------------------------------------


async def test_the_marker_is_written_when_the_broker_acknowledges_and_then_decides(
        harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    broker, redis = Broker(), MarkerRedis()
    monkeypatch.setattr(streams.outcomes, "analysis_results_topic", broker)
    ctx = ctx_with(harness, redis)
    marker = f"result:published:{ctx.settings.app_id}:job-1"
    result = failed_result("job-1", ErrorCode.IMAGE_NOT_FOUND, "gone")

    await publish_result(ctx, result)
    assert [(k, json.loads(v)["job_id"]) for k, v in broker.sent] == [("job-1", "job-1")]
    await settled()
    assert redis.values == {}  # not acknowledged yet: no marker
    suppressed = counter("waste_results_suppressed_total")
    with caplog.at_level(logging.INFO, logger="streams.outcomes"):
        await publish_result(ctx, result)  # a redelivery in that window: the process remembers the job
    assert len(broker.sent) == 1
    assert counter("waste_results_suppressed_total") == suppressed + 1
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "job_id=job-1: result already published (a redelivered event); not publishing another"]

    broker.acks[0].set_result(None)
    await settled()
    assert redis.values == {marker: b"1"}
    assert redis.expiries == {marker: ctx.settings.result_dedup_ttl_seconds}
    assert "job-1" not in ctx.published  # the marker is the record from now on
    await publish_result(ctx, result)
    assert len(broker.sent) == 1
    # Another process of the group (nothing remembered) also finds the marker.
    await publish_result(ctx_with(harness, redis), result)
    assert len(broker.sent) == 1


class SlowMarkerRedis(MarkerRedis):
    """Redis that answers EXISTS only after the other callers asked it too (every caller waits on Redis at once)."""

    def __init__(self, callers: int) -> None:
        super().__init__()
        self.asked = asyncio.Barrier(callers)

    async def exists(self, key: str) -> int:
        await self.asked.wait()
        return await super().exists(key)


async def test_two_steps_answering_one_job_at_the_same_moment_publish_it_once(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A redelivery after a crash: the fetch step (a Redis hit) and the dedupe step both answer the job, both
    asking Redis for its marker before either has published."""
    broker = Broker()
    monkeypatch.setattr(streams.outcomes, "analysis_results_topic", broker)
    ctx = ctx_with(harness, SlowMarkerRedis(callers=2))
    result = failed_result("job-5", ErrorCode.IMAGE_NOT_FOUND, "gone")
    deliveries = await asyncio.gather(publish_result(ctx, result), publish_result(ctx, result))
    assert len(broker.sent) == 1
    assert sum(d is not None for d in deliveries) == 1


async def test_a_send_that_fails_leaves_the_job_to_a_replay(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    class DownBroker(Broker):
        async def send(self, key: Any = None, value: bytes = b"", **_: Any) -> asyncio.Future[Any]:
            raise RuntimeError("producer closed")

    monkeypatch.setattr(streams.outcomes, "analysis_results_topic", DownBroker())
    ctx = ctx_with(harness, MarkerRedis())
    with pytest.raises(RuntimeError):
        await publish_result(ctx, failed_result("job-6", ErrorCode.IMAGE_NOT_FOUND, "gone"))
    assert "job-6" not in ctx.published


async def test_a_result_the_broker_refused_is_published_again_on_replay(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    broker, redis = Broker(), MarkerRedis()
    monkeypatch.setattr(streams.outcomes, "analysis_results_topic", broker)
    ctx = ctx_with(harness, redis)
    result = failed_result("job-9", ErrorCode.IMAGE_NOT_FOUND, "gone")
    await publish_result(ctx, result)
    broker.acks[0].set_exception(RuntimeError("not leader for partition"))
    await settled()
    assert redis.values == {} and "job-9" not in ctx.published
    await publish_result(ctx, result)
    assert len(broker.sent) == 2
    broker.acks[1].cancel()  # a send cancelled at shutdown leaves no marker either
    await settled()
    assert redis.values == {} and "job-9" not in ctx.published


async def test_each_worker_group_has_its_own_marker(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    redis = MarkerRedis()
    ctx = ctx_with(harness, redis)
    await publish_result(ctx, failed_result("job-4", ErrorCode.IMAGE_NOT_FOUND, "gone"))
    await settled()
    assert list(redis.values) == [f"result:published:{ctx.settings.app_id}:job-4"]
    harness.reconfigure(app_id="another-group")
    other = ctx_with(harness, redis)
    await publish_result(other, failed_result("job-4", ErrorCode.IMAGE_NOT_FOUND, "gone"))
    assert [json.loads(v)["job_id"] for _, v in harness.results.messages] == ["job-4", "job-4"]


@pytest.mark.parametrize("failing", ["exists", "set"])
async def test_without_redis_results_are_still_published(harness: Harness, caplog: pytest.LogCaptureFixture,
                                                         failing: str) -> None:
    ctx = ctx_with(harness, MarkerRedis(fail={failing}))
    with caplog.at_level(logging.WARNING, logger="streams.outcomes"):
        await publish_result(ctx, failed_result("job-5", ErrorCode.IMAGE_NOT_FOUND, "gone"))
        await settled()
    assert [json.loads(v)["job_id"] for _, v in harness.results.messages] == ["job-5"]
    assert f"result marker {failing} failed (Redis is gone): a redelivered event may publish a duplicate" in [
        r.getMessage() for r in caplog.records]
    assert "job-5" not in ctx.published  # the write was tried: a replay may publish a duplicate, never lose it


def test_the_record_of_unmarked_jobs_is_bounded() -> None:
    published = PublishedJobs(max_jobs=2)
    for job_id in ("a", "b", "c"):
        published.remember(job_id, None)
    assert ("a" in published, "b" in published, "c" in published) == (False, True, True)
    published.remember("b", None)  # remembered again: now the most recent
    published.remember("d", None)
    assert ("b" in published, "c" in published, "d" in published) == (True, False, True)


# --- metrics a dashboard reads ----------------------------------------------------------------------------------


async def test_a_failed_job_is_logged_with_its_code_and_message(harness: Harness,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="streams.outcomes"):
        await publish_result(ctx_with(harness, MarkerRedis()),
                             failed_result("job-w", ErrorCode.MODEL_REFUSED, "the model declined"))
    assert [r.getMessage() for r in caplog.records] == ["job_id=job-w failed: MODEL_REFUSED the model declined"]


async def test_a_marker_or_refusal_after_its_job_was_forgotten_raises_nothing() -> None:
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        published = PublishedJobs(max_jobs=1)
        written = asyncio.Event()

        async def write_marker() -> None:
            await written.wait()

        published.remember("a", None)
        published.mark_when_delivered(None, "a", write_marker)  # delivered already: the write starts
        published.remember("b", None)  # the bound forgets "a" before its marker is written
        written.set()
        await settled()
        assert ("a" in published, "b" in published) == (False, True)
        # Nor does a refusal from the broker of a job the bound has forgotten already.
        refused: asyncio.Future[Any] = loop.create_future()
        published.remember("c", refused)
        published.remember("d", None)
        refused.set_exception(RuntimeError("broker refused"))
        await settled()
        assert ("c" in published, "d" in published) == (False, True)
        assert errors == []
    finally:
        loop.set_exception_handler(None)


async def test_published_results_are_counted_by_status_source_and_code(harness: Harness) -> None:
    ctx = ctx_with(harness, MarkerRedis())
    done = {"status": "done", "source": "redis"}
    failed = {"status": "failed", "source": "none"}
    before = (counter("waste_results_total", done), counter("waste_results_total", failed),
              counter("waste_failures_total", {"code": "MODEL_REFUSED"}))
    cache = CacheInfo(hit=True, source=CacheSource.REDIS, phash=PHASH)
    await publish_result(ctx, done_result(job("job-6"), cached(), cache, {}))
    await publish_result(ctx, failed_result("job-7", ErrorCode.MODEL_REFUSED, "declined"))
    assert (counter("waste_results_total", done), counter("waste_results_total", failed),
            counter("waste_failures_total", {"code": "MODEL_REFUSED"})) == (before[0] + 1, before[1] + 1,
                                                                            before[2] + 1)


@pytest.mark.parametrize(("hit", "reused", "saved"), [(True, True, 0.002), (False, True, 0.0), (True, False, 0.0)])
async def test_a_cache_hit_that_reuses_a_paid_answer_counts_its_cost_as_saved(harness: Harness, hit: bool,
                                                                              reused: bool, saved: float) -> None:
    ctx = ctx_with(harness, MarkerRedis())
    labels = {"source": "redis"}
    before = counter("waste_model_saved_dollars_total", labels)
    cache = CacheInfo(hit=hit, source=CacheSource.REDIS, phash=PHASH)
    await publish_result(ctx, done_result(job(f"job-s{hit}{reused}"), cached(), cache, {}),
                         reused=cached(0.002) if reused else None)
    assert counter("waste_model_saved_dollars_total", labels) - before == pytest.approx(saved)


# --- dead letters and events that are not this group's -----------------------------------------------------------


async def test_a_dead_letter_keeps_the_original_for_replay(harness: Harness) -> None:
    await dead_letter(job_id="job-8", code=ErrorCode.INVALID_EVENT, message="not JSON", stage="fetch",
                      topic="waste.uploads", partition=3, offset=42, original=b"\xff{" + b"x" * 200_000)
    [(key, raw)] = harness.dead_letters.messages
    letter = json.loads(raw)
    assert key == "job-8"
    assert {k: letter[k] for k in ("job_id", "code", "message", "stage", "topic", "partition", "offset")} == {
        "job_id": "job-8", "code": "INVALID_EVENT", "message": "not JSON", "stage": "fetch", "topic": "waste.uploads",
        "partition": 3, "offset": 42}
    assert letter["original"].startswith("\ufffd{xxx")  # undecodable bytes replaced, not an error
    assert len(letter["original"]) == 100_000


def undecodable(value: bytes) -> Any:
    return SimpleNamespace(value=value, message=SimpleNamespace(partition=5, offset=77))


async def test_an_internal_event_that_does_not_parse_is_dead_lettered(harness: Harness) -> None:
    event = undecodable(b'{"job_id": 1}')
    assert await read_event(harness.ctx, event, ImageHashed, stage="dedupe", topic="waste.hashed") is None
    [(key, raw)] = harness.dead_letters.messages
    letter = json.loads(raw)
    assert key is None
    assert (letter["job_id"], letter["code"], letter["stage"], letter["topic"], letter["partition"],
            letter["offset"], letter["original"]) == (None, "INTERNAL_ERROR", "dedupe", "waste.hashed", 5, 77,
                                                      '{"job_id": 1}')
    assert letter["message"].startswith("bad dedupe event: ")
    assert "validation errors for ImageHashed" in letter["message"]  # what was wrong with it, for the operator


async def test_dead_letter_undecodable_names_the_error(harness: Harness) -> None:
    await dead_letter_undecodable(undecodable(b"?"), stage="classify", topic="t", error=ValueError("no good"))
    letter = json.loads(harness.dead_letters.messages[0][1])
    assert (letter["message"], letter["partition"], letter["offset"]) == ("bad classify event: no good", 5, 77)


async def test_only_this_groups_events_are_read(harness: Harness) -> None:
    app_id = harness.ctx.settings.app_id
    for origin, wanted in ((app_id, True), (None, True), ("another-group", False)):
        event = undecodable(job("job-r", origin=origin).to_bytes())
        parsed = await read_event(harness.ctx, event, ImageHashed, stage="dedupe", topic="waste.hashed")
        assert (parsed is not None and parsed.job_id == "job-r") is wanted
    assert harness.dead_letters.messages == []


async def test_a_bug_fails_the_job_with_internal_error(harness: Harness) -> None:
    j = job("job-b")
    await fail_quietly(harness.ctx, j, KeyError("boom"))
    [result] = harness.results.values()
    assert (result["job_id"], result["status"], result["error"]) == (
        "job-b", "failed", {"code": "INTERNAL_ERROR", "message": "KeyError"})
    assert (result["image_key"], result["image_url"], result["fetch"]["cdn_cache"]) == (
        j.key, j.image_url, "hit")


async def test_a_bug_whose_failure_cannot_be_published_is_only_logged(
        harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    class Unreachable:
        async def send(self, **_: Any) -> None:
            raise ConnectionError("broker unreachable")

    monkeypatch.setattr(streams.outcomes, "analysis_results_topic", Unreachable())
    with caplog.at_level(logging.ERROR, logger="streams.outcomes"):
        await fail_quietly(harness.ctx, job("job-c"), KeyError("boom"))
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "job_id=job-c: could not publish its failure"]

"""Dedupe and classify together: one model call per distinct pHash, every job answered exactly once."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from agents.classify import answer_request
from agents.dedupe import deduplicate
from models.errors import ErrorCode, PipelineError
from models.records import CachedClassification, FetchInfo, FetchSource, ImageHashed, VisionRequest
from tests.agents.conftest import Harness

PHASH = "ab" * 32


def hashed(job_id: str, phash: str = PHASH) -> ImageHashed:
    return ImageHashed(job_id=job_id, bucket="b", key=f"k/{job_id}.jpg", phash=phash, image_url=f"http://cdn/{job_id}",
                       fetch=FetchInfo(source=FetchSource.CDN, bytes=10), received_at=datetime.now(UTC))


async def run_requests(h: Harness) -> None:
    """Play the classify agent over what dedupe asked for."""
    while h.requests.messages:
        _, value = h.requests.messages.pop(0)
        await answer_request(h.ctx, VisionRequest.model_validate_json(value))


async def test_a_burst_of_one_hash_makes_one_model_call(harness: Harness) -> None:
    for i in range(20):
        await deduplicate(harness.ctx, hashed(f"job-{i}"))
    assert len(harness.requests.messages) == 1
    await run_requests(harness)
    results = harness.results_by_job()
    assert len(harness.vision.calls) == 1
    assert len(results) == 20 and len(harness.results.messages) == 20
    assert results["job-0"]["cache"] == {**results["job-0"]["cache"], "hit": False, "source": "model"}
    waiter = results["job-7"]["cache"]
    assert waiter["hit"] is True and waiter["source"] == "inflight" and waiter["reused_job_id"] == "job-0"
    assert PHASH in harness.cache.entries and not harness.inflight_table


async def test_after_a_call_repeats_hit_the_table_then_redis(harness: Harness) -> None:
    await deduplicate(harness.ctx, hashed("first"))
    await run_requests(harness)
    await deduplicate(harness.ctx, hashed("again"))
    assert harness.results_by_job()["again"]["cache"]["source"] == "table"
    harness.results_table.clear()  # e.g. another worker now owns the partition
    await deduplicate(harness.ctx, hashed("elsewhere"))
    assert harness.results_by_job()["elsewhere"]["cache"]["source"] == "redis"
    assert len(harness.vision.calls) == 1


async def test_a_result_of_another_model_version_is_not_served(harness: Harness) -> None:
    from models.classification import WasteCategory, WasteClassification

    old = CachedClassification(phash=PHASH, model_version="old-model|p0|t0", job_id="old", created_at=datetime.now(UTC),
                               classification=WasteClassification(category=WasteCategory.PAPER, item_name="x",
                                                                  disposal_instructions="y", recyclable=True,
                                                                  confidence=0.5))
    harness.cache.entries[PHASH] = old
    await deduplicate(harness.ctx, hashed("new"))
    assert len(harness.requests.messages) == 1


async def test_expired_table_entries_are_ignored(harness: Harness) -> None:
    await deduplicate(harness.ctx, hashed("first"))
    await run_requests(harness)
    harness.results_table[PHASH]["stored_at"] = time.time() - harness.settings.cache_ttl_seconds - 1
    harness.cache.entries.clear()  # Redis expired it too
    await deduplicate(harness.ctx, hashed("later"))
    assert len(harness.requests.messages) == 1 and PHASH not in harness.results_table


async def test_a_failed_model_call_fails_the_job_and_its_waiters(harness: Harness) -> None:
    harness.vision.fail_with = PipelineError(ErrorCode.MODEL_UNAVAILABLE, "HTTP 500")
    for job in ("a", "b", "c"):
        await deduplicate(harness.ctx, hashed(job))
    await run_requests(harness)
    results = harness.results_by_job()
    assert {r["status"] for r in results.values()} == {"failed"} and len(results) == 3
    assert {r["error"]["code"] for r in results.values()} == {"MODEL_UNAVAILABLE"}
    assert not harness.cache.entries and not harness.inflight_table
    assert len(harness.dead_letters.messages) == 1
    # Nothing was cached, so the next upload tries the model again.
    harness.vision.fail_with = None
    await deduplicate(harness.ctx, hashed("d"))
    await run_requests(harness)
    assert harness.results_by_job()["d"]["status"] == "done"


async def test_a_redelivered_request_does_not_pay_twice(harness: Harness) -> None:
    await deduplicate(harness.ctx, hashed("owner"))
    request = harness.requests.messages[0][1]
    await run_requests(harness)
    await answer_request(harness.ctx, VisionRequest.model_validate_json(request))
    assert len(harness.vision.calls) == 1


async def test_a_stale_inflight_call_is_reissued_and_answers_old_waiters(harness: Harness) -> None:
    await deduplicate(harness.ctx, hashed("owner"))
    await deduplicate(harness.ctx, hashed("waiter"))
    harness.requests.messages.clear()  # the request was lost
    entry = dict(harness.inflight_table[PHASH])
    entry["requested_at"] = time.time() - harness.settings.inflight_timeout_seconds - 1
    harness.inflight_table[PHASH] = entry
    await deduplicate(harness.ctx, hashed("late"))
    assert len(harness.requests.messages) == 1
    await run_requests(harness)
    assert set(harness.results_by_job()) == {"owner", "waiter", "late"}


async def test_a_failing_shared_cache_is_a_miss_and_every_job_is_still_answered(harness: Harness,
                                                                                 monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from redis.exceptions import ConnectionError as RedisConnectionError

    async def down(*_: object) -> None:
        raise RedisConnectionError("Redis is down")

    monkeypatch.setattr(harness.cache, "get", down)
    monkeypatch.setattr(harness.cache, "put", down)
    for i in range(3):
        await deduplicate(harness.ctx, hashed(f"job-{i}"))
    await run_requests(harness)
    results = harness.results_by_job()
    assert len(harness.vision.calls) == 1  # the partition's own table still deduplicates the burst
    assert {r["status"] for r in results.values()} == {"done"} and len(harness.results.messages) == 3


async def test_the_model_sees_a_thumbnail_made_on_the_miss_only(harness: Harness) -> None:
    for i in range(3):
        await deduplicate(harness.ctx, hashed(f"job-{i}"))
    await run_requests(harness)
    await deduplicate(harness.ctx, hashed("later"))  # a table hit
    (shown,) = harness.vision.calls
    assert shown.startswith("data:image/jpeg;base64,")
    assert harness.fetcher.fetched == ["k/job-0.jpg"]  # fetched again for the one call, never for the hits


async def test_a_failure_part_way_through_the_answers_ends_every_job_exactly_once(harness: Harness,
                                                                                   monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for i in range(3):
        await deduplicate(harness.ctx, hashed(f"job-{i}"))
    real_send = harness.results.send
    sends = 0

    async def flaky_send(key=None, value=b"", **kw):  # type: ignore[no-untyped-def]
        nonlocal sends
        sends += 1
        if sends == 2:
            raise RuntimeError("broker hiccup")
        await real_send(key=key, value=value, **kw)

    monkeypatch.setattr(harness.results, "send", flaky_send)
    await run_requests(harness)
    statuses = [json.loads(v)["job_id"] + ":" + json.loads(v)["status"] for _, v in harness.results.messages]
    assert sorted(statuses) == ["job-0:done", "job-1:failed", "job-2:failed"]


async def test_two_requests_for_one_hash_at_once_make_one_call(harness: Harness) -> None:
    """A redelivered request (after a crash) meets the original in the classify agent's concurrency."""
    import asyncio

    from models.records import utcnow

    real = harness.vision.classify

    async def slow(image_url: str):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.05)
        return await real(image_url)

    harness.vision.classify = slow  # type: ignore[method-assign]
    first = VisionRequest(phash=PHASH, job=hashed("first"), requested_at=utcnow())
    again = VisionRequest(phash=PHASH, job=hashed("again"), requested_at=utcnow())
    await asyncio.gather(answer_request(harness.ctx, first), answer_request(harness.ctx, again))
    assert len(harness.vision.calls) == 1
    results = harness.results_by_job()
    assert results["first"]["cache"]["source"] == "model" and results["again"]["cache"]["hit"] is True


async def test_a_used_up_model_budget_fails_the_job_and_its_waiters_without_a_call(harness: Harness) -> None:
    from streams.budget import BudgetVerdict

    class UsedUp:
        async def try_spend(self) -> BudgetVerdict:
            return BudgetVerdict(False, "minute")

    harness.ctx.budget = UsedUp()  # type: ignore[assignment]
    for job in ("a", "b"):
        await deduplicate(harness.ctx, hashed(job))
    await run_requests(harness)
    results = harness.results_by_job()
    assert harness.vision.calls == []
    assert {r["error"]["code"] for r in results.values()} == {"MODEL_BUDGET_EXCEEDED"} and len(results) == 2
    assert "per minute" in results["a"]["error"]["message"]

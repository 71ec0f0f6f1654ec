"""Dedupe and classify with the near-duplicate tier (the in-memory index; the Redis one is tested on the stack)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from agents.classify import answer_request
from agents.dedupe import deduplicate
from models.errors import ErrorCode, PipelineError
from models.records import ImageHashed, VisionRequest
from tests.agents.conftest import Harness, SentTo
from tests.agents.test_dedupe_classify import hashed
from tests.doubles import LocalNearIndex

ORIGINAL = "0f" * 32


def near(phash: str, *bits: int) -> str:
    value = int(phash, 16)
    for b in bits:
        value ^= 1 << b
    return f"{value:064x}"


@pytest.fixture
def routed(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> SentTo:
    """What dedupe re-sends to images.hashed (jobs that wait on a near-duplicate's call)."""
    import agents.dedupe

    sent = SentTo()
    monkeypatch.setattr(agents.dedupe, "images_hashed_topic", sent)
    return sent


@pytest.fixture
def use_settings(harness: Harness) -> Callable[..., object]:
    """A worker context with other settings (and so indexes built from them), over the same fakes and tables."""
    return harness.reconfigure


async def run_requests(h: Harness) -> None:
    while h.requests.messages:
        _, value = h.requests.messages.pop(0)
        await answer_request(h.ctx, VisionRequest.model_validate_json(value))


async def deliver(h: Harness, routed: SentTo, *, once: bool = False) -> None:
    """Play the dedupe agent over what it re-sent to images.hashed (on the waited-on call's partition)."""
    for _ in range(1 if once else 1000):
        if not routed.messages:
            return
        _, value = routed.messages.pop(0)
        await deduplicate(h.ctx, ImageHashed.model_validate_json(value))


async def test_a_near_duplicate_of_a_cached_result_reuses_it(harness: Harness, routed: SentTo) -> None:
    await deduplicate(harness.ctx, hashed("first", ORIGINAL))
    await run_requests(harness)
    await deduplicate(harness.ctx, hashed("again", near(ORIGINAL, 3, 77, 200)))
    result = harness.results_by_job()["again"]
    assert result["status"] == "done" and len(harness.vision.calls) == 1
    assert result["cache"] == {
        "hit": True, "source": "near", "phash": near(ORIGINAL, 3, 77, 200), "distance": 3,
        "reused_job_id": "first", "matched_phash": ORIGINAL, "model_version": harness.settings.model_version,
        "check": None,
    }
    assert result["classification"] == harness.results_by_job()["first"]["classification"]


async def test_a_hash_beyond_the_threshold_pays_for_its_own_call(harness: Harness, routed: SentTo) -> None:
    t = harness.settings.near_duplicate_max_distance
    await deduplicate(harness.ctx, hashed("first", ORIGINAL))
    await run_requests(harness)
    await deduplicate(harness.ctx, hashed("other", near(ORIGINAL, *range(t + 1))))
    await run_requests(harness)
    assert harness.results_by_job()["other"]["cache"]["source"] == "model"
    assert len(harness.vision.calls) == 2 and not routed.messages


async def test_near_duplicates_in_flight_wait_on_one_call(harness: Harness, routed: SentTo) -> None:
    """A burst of re-uploads, none with equal hashes: one model call, everyone answered once."""
    variants = [near(ORIGINAL, *bits) for bits in ([1], [2, 3], [4, 5, 6, 7], [100, 200], [9, 10, 11])]
    await deduplicate(harness.ctx, hashed("owner", ORIGINAL))
    for i, phash in enumerate(variants):
        await deduplicate(harness.ctx, hashed(f"v{i}", phash))
    assert len(harness.requests.messages) == 1
    assert [key for key, _ in routed.messages] == [ORIGINAL] * len(variants)  # keyed by the call's pHash
    await deliver(harness, routed)  # they join the owner's call on its partition
    assert len(harness.inflight_table[ORIGINAL]["waiters"]) == len(variants)
    await run_requests(harness)
    results = harness.results_by_job()
    assert len(harness.vision.calls) == 1 and len(harness.results.messages) == len(variants) + 1
    for i, phash in enumerate(variants):
        cache = results[f"v{i}"]["cache"]
        assert cache["source"] == "inflight" and cache["hit"] is True and cache["phash"] == phash
        assert cache["distance"] == bin(int(phash, 16) ^ int(ORIGINAL, 16)).count("1")
        assert cache["matched_phash"] == ORIGINAL and cache["reused_job_id"] == "owner"
    assert results["owner"]["cache"]["source"] == "model" and results["owner"]["cache"]["distance"] == 0


async def test_without_waiting_near_duplicates_in_flight_pay_again(harness: Harness, routed: SentTo,
                                                                   use_settings) -> None:  # type: ignore[no-untyped-def]
    use_settings(near_duplicate_wait=False)
    await deduplicate(harness.ctx, hashed("owner", ORIGINAL))
    await deduplicate(harness.ctx, hashed("twin", near(ORIGINAL, 5)))
    assert len(harness.requests.messages) == 2 and not routed.messages
    await run_requests(harness)
    # Once a result is cached, near-duplicates reuse it even without waiting.
    await deduplicate(harness.ctx, hashed("late", near(ORIGINAL, 6)))
    assert harness.results_by_job()["late"]["cache"]["source"] == "near"


async def test_exact_matching_only(harness: Harness, routed: SentTo, use_settings) -> None:  # type: ignore[no-untyped-def]
    use_settings(near_duplicate_max_distance=0)
    await deduplicate(harness.ctx, hashed("first", ORIGINAL))
    await run_requests(harness)
    await deduplicate(harness.ctx, hashed("near", near(ORIGINAL, 1)))
    assert len(harness.requests.messages) == 1 and not routed.messages


async def test_a_result_that_landed_before_the_waiter_arrived_is_reused(harness: Harness, routed: SentTo) -> None:
    await deduplicate(harness.ctx, hashed("owner", ORIGINAL))
    await deduplicate(harness.ctx, hashed("waiter", near(ORIGINAL, 9)))
    await run_requests(harness)  # the call finishes before the re-sent waiter is consumed
    await deliver(harness, routed)
    cache = harness.results_by_job()["waiter"]["cache"]
    assert cache["source"] == "near" and cache["distance"] == 1 and cache["reused_job_id"] == "owner"
    assert len(harness.vision.calls) == 1


async def test_when_the_waited_on_call_failed_the_waiter_pays_for_its_own(harness: Harness, routed: SentTo) -> None:
    harness.vision.fail_with = PipelineError(ErrorCode.MODEL_UNAVAILABLE, "HTTP 500")
    await deduplicate(harness.ctx, hashed("owner", ORIGINAL))
    await deduplicate(harness.ctx, hashed("late", near(ORIGINAL, 4)))
    await run_requests(harness)  # the owner's call fails before the waiter reaches its partition
    assert harness.results_by_job()["owner"]["status"] == "failed"
    harness.vision.fail_with = None
    await deliver(harness, routed, once=True)  # no call to join: back to its own pHash, once
    assert [key for key, _ in routed.messages] == [near(ORIGINAL, 4)]
    assert ImageHashed.model_validate_json(routed.messages[0][1]).near_hops == 1
    await deliver(harness, routed)
    await run_requests(harness)
    result = harness.results_by_job()["late"]
    assert result["status"] == "done" and result["cache"]["source"] == "model"
    assert len(harness.vision.calls) == 2


async def test_waiters_that_joined_fail_with_the_call(harness: Harness, routed: SentTo) -> None:
    harness.vision.fail_with = PipelineError(ErrorCode.MODEL_UNAVAILABLE, "HTTP 500")
    await deduplicate(harness.ctx, hashed("owner", ORIGINAL))
    await deduplicate(harness.ctx, hashed("joined", near(ORIGINAL, 4)))
    await deliver(harness, routed)
    await run_requests(harness)
    results = harness.results_by_job()
    assert {results[j]["status"] for j in ("owner", "joined")} == {"failed"}
    assert len(harness.results.messages) == 2
    # The failed call's claim is gone: the next near-duplicate pays rather than waiting on nothing.
    harness.vision.fail_with = None
    await deduplicate(harness.ctx, hashed("next", near(ORIGINAL, 8)))
    assert len(harness.requests.messages) == 1 and not routed.messages


async def test_a_changed_model_version_does_not_serve_old_near_results(harness: Harness, routed: SentTo,
                                                                       use_settings) -> None:  # type: ignore[no-untyped-def]
    await deduplicate(harness.ctx, hashed("old", ORIGINAL))
    await run_requests(harness)
    use_settings(prompt_version="2")
    await deduplicate(harness.ctx, hashed("new", near(ORIGINAL, 2)))
    assert len(harness.requests.messages) == 1  # a new call, under the new version


async def test_an_invalidated_table_copy_is_not_served(harness: Harness, routed: SentTo,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    await deduplicate(harness.ctx, hashed("first", ORIGINAL))
    await run_requests(harness)
    # What streams.invalidation does in Redis, and what the worker's poll then does to its table.
    del harness.cache.entries[ORIGINAL]
    harness.ctx.revocations.revoke(ORIGINAL, time.time())
    await deduplicate(harness.ctx, hashed("after", ORIGINAL))
    await deduplicate(harness.ctx, hashed("near-after", near(ORIGINAL, 1)))
    assert len(harness.requests.messages) == 1  # the exact copy pays again; its near-duplicate waits on it
    assert [key for key, _ in routed.messages] == [ORIGINAL]


async def test_the_index_maps_the_paying_job_to_its_result(harness: Harness, routed: SentTo) -> None:
    await deduplicate(harness.ctx, hashed("payer", ORIGINAL))
    await run_requests(harness)
    index = harness.ctx.near
    assert isinstance(index, LocalNearIndex) and index.jobs == {"payer": ORIGINAL}

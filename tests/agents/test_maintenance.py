"""Upkeep of the dedupe tables on the agent harness (dict tables, an in-memory Redis): a model call nobody answered
is asked for again and then given up with MODEL_TIMEOUT for every job on it; an operator's invalidation stops the
table copy from being served; expired answers are deleted on their partitions."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

import pytest

import agents.maintenance
from agents.maintenance import (
    INVALIDATION_LOOKBACK_SECONDS,
    MAX_CALL_ATTEMPTS,
    apply_invalidations,
    carry_out,
    recover_lost_call,
)
from models.classification import WasteCategory, WasteClassification
from models.records import CachedClassification, FetchInfo, FetchSource, ImageHashed, MaintenanceCommand
from streams.near_index import INVALIDATED_KEY, NearKind
from tests.agents.conftest import Harness, SentTo

PHASH = "3c" * 32
OTHER = "c3" * 32


def job(job_id: str, phash: str = PHASH) -> ImageHashed:
    return ImageHashed(job_id=job_id, bucket="waste-images", key=f"k/{job_id}.jpg", phash=phash,
                       image_url=f"https://cdn.test/k/{job_id}.jpg", received_at=datetime.now(UTC),
                       fetch=FetchInfo(source=FetchSource.CDN, cdn_cache="miss", bytes=10))


def answer(phash: str, model_version: str) -> CachedClassification:
    return CachedClassification(
        phash=phash, model_version=model_version, job_id="payer", created_at=datetime.now(UTC),
        classification=WasteClassification(category=WasteCategory.GLASS, item_name="jar", recyclable=True,
                                           disposal_instructions="rinse", confidence=0.9))


@pytest.fixture
def maintenance(monkeypatch: pytest.MonkeyPatch) -> SentTo:
    sent = SentTo()
    monkeypatch.setattr(agents.maintenance, "dedupe_maintenance_topic", sent)
    return sent


def age_call(harness: Harness, phash: str, seconds: float) -> None:
    harness.inflight_table[phash] = {**harness.inflight_table[phash],
                                     "requested_at": harness.inflight_table[phash]["requested_at"] - seconds}


def lost(harness: Harness) -> float:
    return harness.settings.inflight_timeout_seconds + 1


# --- calls nobody answered ----------------------------------------------------------------------------------------


async def test_a_live_call_or_no_call_is_left_alone(harness: Harness) -> None:
    ctx = harness.ctx
    await recover_lost_call(ctx, PHASH)  # no call at all
    ctx.calls.start(job("owner"), [job("waiter")])
    before = dict(harness.inflight_table[PHASH])
    await recover_lost_call(ctx, PHASH)
    assert harness.inflight_table[PHASH] == before
    assert harness.requests.messages == [] and harness.results.messages == []


@pytest.mark.parametrize("attempts", range(1, MAX_CALL_ATTEMPTS))
async def test_a_lost_call_is_asked_for_again_keeping_its_waiters(harness: Harness, caplog: pytest.LogCaptureFixture,
                                                                  attempts: int) -> None:
    ctx = harness.ctx
    ctx.calls.start(job("owner"), [job("waiter")], attempts=attempts)
    age_call(harness, PHASH, lost(harness))
    with caplog.at_level(logging.WARNING, logger="agents.maintenance"):
        await recover_lost_call(ctx, PHASH)
    [(key, raw)] = harness.requests.messages
    request = json.loads(raw)
    assert key == PHASH and request["phash"] == PHASH and request["job"]["job_id"] == "owner"
    call = ctx.calls.entry(PHASH)
    assert call is not None and ctx.calls.is_live(call)  # asked for just now
    assert (call.owner.job_id, [w.job_id for w in call.waiters], call.attempts) == ("owner", ["waiter"], attempts + 1)
    assert harness.results.messages == []
    assert [r.getMessage() for r in caplog.records] == [
        f"phash={PHASH}: model call of job_id=owner presumed lost, re-requesting"]
    # Near-duplicates keep waiting on the new request: the pHash is claimed again.
    near = await ctx.near.lookup(f"{int(PHASH, 16) ^ 1:064x}", claim=False)
    assert (near.kind, near.phash) == (NearKind.PENDING, PHASH)


async def test_a_call_lost_on_its_last_attempt_fails_every_job_with_model_timeout(harness: Harness) -> None:
    ctx = harness.ctx
    await ctx.near.claim(PHASH)
    ctx.calls.start(job("owner"), [job("waiter-1"), job("waiter-2")], attempts=MAX_CALL_ATTEMPTS)
    age_call(harness, PHASH, lost(harness))
    await recover_lost_call(ctx, PHASH)
    assert harness.requests.messages == []
    assert ctx.calls.entry(PHASH) is None
    results = harness.results_by_job()
    assert set(results) == {"owner", "waiter-1", "waiter-2"}
    for job_id, result in results.items():
        assert (result["status"], result["error"]) == ("failed", {
            "code": "MODEL_TIMEOUT", "message": f"no answer from the vision model after {MAX_CALL_ATTEMPTS} requests"})
        assert (result["image_key"], result["image_url"], result["fetch"]["cdn_cache"]) == (
            f"k/{job_id}.jpg", f"https://cdn.test/k/{job_id}.jpg", "miss")
    # The claim is released: a near-duplicate no longer waits on a call that will never answer.
    near = await ctx.near.lookup(f"{int(PHASH, 16) ^ 1:064x}", claim=False)
    assert near.kind is NearKind.MISS


async def test_only_calls_unanswered_for_the_timeout_are_presumed_lost(harness: Harness) -> None:
    # What the stale-call timer asks to recover (the timer itself is Faust's loop: not called here).
    ctx = harness.ctx
    ctx.calls.start(job("a", PHASH))
    ctx.calls.start(job("b", OTHER))
    age_call(harness, OTHER, lost(harness))
    age_call(harness, PHASH, harness.settings.inflight_timeout_seconds - 5)
    assert ctx.calls.presumed_lost() == [OTHER]


async def test_the_inflight_command_recovers_the_call(harness: Harness) -> None:
    ctx = harness.ctx
    ctx.calls.start(job("owner"))
    age_call(harness, PHASH, lost(harness))
    await carry_out(ctx, PHASH, MaintenanceCommand.INFLIGHT)
    assert len(harness.requests.messages) == 1


async def test_an_unknown_command_is_ignored_with_a_warning(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    harness.ctx.results.remember(answer(PHASH, harness.settings.model_version))
    with caplog.at_level(logging.WARNING, logger="agents.maintenance"):
        await carry_out(harness.ctx, PHASH, None)
    assert [r.getMessage() for r in caplog.records] == [f"phash={PHASH}: unknown maintenance command ignored"]
    assert PHASH in harness.results_table


# --- expired and invalidated answers ------------------------------------------------------------------------------


async def test_expired_answers_are_found_and_deleted_on_their_partition(harness: Harness) -> None:
    ctx = harness.ctx
    version = harness.settings.model_version
    ctx.results.remember(answer(PHASH, version))
    ctx.results.remember(answer(OTHER, version))
    harness.results_table[OTHER] = {**harness.results_table[OTHER],
                                    "stored_at": time.time() - harness.settings.cache_ttl_seconds - 1}
    assert ctx.results.expired() == [OTHER]  # what the expiry timer asks to delete
    await carry_out(ctx, OTHER, MaintenanceCommand.EXPIRE)
    assert OTHER not in harness.results_table and PHASH in harness.results_table


async def test_an_invalidated_answer_stops_being_served_and_is_deleted(harness: Harness, maintenance: SentTo) -> None:
    ctx = harness.ctx
    version = harness.settings.model_version
    ctx.results.remember(answer(PHASH, version))
    ctx.results.remember(answer(OTHER, version))
    stored = harness.results_table[PHASH]["stored_at"]
    # PHASH invalidated after it was stored; OTHER's record predates its (newer) table copy.
    await harness.redis.zadd(INVALIDATED_KEY, {PHASH: stored + 1, OTHER: stored - 5})
    read = await apply_invalidations(ctx)
    assert sorted(read) == sorted([PHASH, OTHER])
    assert maintenance.messages == [(PHASH, b"invalidate")]
    assert ctx.results.fresh(OTHER) is not None
    assert ctx.results.fresh(PHASH) is None  # never served again, even before the command arrives
    await carry_out(ctx, OTHER, MaintenanceCommand.INVALIDATE)  # a command for an answer still valid: kept
    assert OTHER in harness.results_table
    assert ctx.timers.invalidations_read_until is not None and ctx.timers.invalidations_read_until >= stored + 1


async def test_the_poll_reads_back_a_minute_and_drops_records_older_than_any_table_copy(harness: Harness,
                                                                                       maintenance: SentTo) -> None:
    ctx = harness.ctx
    now = time.time()
    ttl = harness.settings.cache_ttl_seconds
    await harness.redis.zadd(INVALIDATED_KEY, {"ancient": now - ttl - 10, "recent": now - 30})
    assert await apply_invalidations(ctx) == ["recent"]  # the first read reaches back a whole TTL
    assert "ancient" not in harness.redis.sorted_sets[INVALIDATED_KEY]  # no table copy can be that old
    # A record written with a clock running behind (older than the last read) is still read the next time...
    await harness.redis.zadd(INVALIDATED_KEY, {"late": now - INVALIDATION_LOOKBACK_SECONDS / 2})
    assert "late" in await apply_invalidations(ctx)
    # ...but not one older than the look-back.
    ctx.timers.invalidations_read_until = time.time()
    await harness.redis.zadd(INVALIDATED_KEY, {"too-late": time.time() - INVALIDATION_LOOKBACK_SECONDS - 30})
    assert "too-late" not in await apply_invalidations(ctx)
    assert maintenance.messages == []  # none of them had a table copy

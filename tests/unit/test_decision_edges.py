"""Edges of the dedupe decision and of classify's fan-out that the tables leave open: a near match at distance 0,
the waiting time's precision, and each answer going to its own job."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from models.records import CacheSource
from streams.dedupe_decision import Answer, WaitOn, decide
from streams.fan_out import answers
from streams.near_index import NearKind, NearMatch
from tests.unit.test_dedupe_decision import BASE, OWN, entry
from tests.unit.test_fan_out import ENTRY, PHASH, job


def test_a_near_match_at_distance_zero_is_told_zero() -> None:
    # The index can hold the job's own pHash (its result expired from the exact cache, or another model's): the
    # distance it reports is 0, and the job is told 0.
    found = replace(BASE, shared=None, near=NearMatch(NearKind.NEAR, OWN, 0, entry(OWN)))
    assert decide(found) == Answer(entry(OWN), CacheSource.NEAR, distance=0)
    pending = replace(BASE, shared=None, near=NearMatch(NearKind.PENDING, OWN, 0))
    assert decide(pending) == WaitOn(OWN, 0)


def test_the_wait_is_reported_in_milliseconds_to_two_decimals() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    waited = job("w").model_copy(update={"received_at": now - timedelta(microseconds=1_234_567)})
    (told,) = answers([waited], phash=PHASH, requester_job_id="a", entry=ENTRY, paid=True, now=now)
    assert told.timings_ms == {"wait": 1234.57}  # no model time or attempts unless given


def test_each_answer_goes_to_its_own_job() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    jobs = [job("a"), job("b"), job("c")]
    told = answers(jobs, phash=PHASH, requester_job_id="a", entry=ENTRY, paid=True, now=now)
    assert [t.job for t in told] == jobs
    assert [t.cache.source for t in told] == [CacheSource.MODEL, CacheSource.INFLIGHT, CacheSource.INFLIGHT]

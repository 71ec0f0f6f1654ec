"""Events redelivered after a worker died: the owner of a model call that was lost with the worker asks again."""

from __future__ import annotations

from agents.dedupe import deduplicate
from tests.agents.conftest import Harness
from tests.agents.test_dedupe_classify import hashed, run_requests


async def test_the_owner_s_redelivered_event_sends_its_lost_request_again(harness: Harness) -> None:
    await deduplicate(harness.ctx, hashed("owner"))
    await deduplicate(harness.ctx, hashed("waiter"))
    assert len(harness.requests.messages) == 1
    harness.requests.messages.clear()  # the request died with the worker, before the broker had it
    await deduplicate(harness.ctx, hashed("owner"))  # the new owner of the partition replays the uncommitted event
    assert len(harness.requests.messages) == 1, "nobody would answer the owner and its waiters"
    await run_requests(harness)
    results = harness.results_by_job()
    assert results.keys() == {"owner", "waiter"} and len(harness.vision.calls) == 1
    assert len(harness.results.messages) == 2  # each job once


async def test_a_request_that_did_get_through_is_not_paid_twice(harness: Harness) -> None:
    await deduplicate(harness.ctx, hashed("owner"))
    await deduplicate(harness.ctx, hashed("owner"))  # redelivered, while its first request is still queued
    assert len(harness.requests.messages) == 2
    await run_requests(harness)
    assert len(harness.vision.calls) == 1  # the second request finds the answer
    assert list(harness.results_by_job()) == ["owner"]

"""Events redelivered after a worker died: the owner of a model call that was lost with the worker asks again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agents.classify import answer_request
from agents.dedupe import deduplicate
from models.records import VisionRequest
from tests.agents.conftest import Harness, SentTo
from tests.agents.test_dedupe_classify import PHASH, hashed, run_requests


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


class HeldResults:
    """The results topic with the broker's acknowledgements held back until ``ack_all`` (as a slow broker or a
    worker about to die would see them)."""

    def __init__(self, sent_to: SentTo) -> None:
        self.sent_to = sent_to
        self.pending: list[asyncio.Future[None]] = []

    async def send(self, key: Any = None, value: bytes = b"", **_: Any) -> asyncio.Future[None]:
        await self.sent_to.send(key, value)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return future

    def ack_all(self) -> None:
        for future in self.pending:
            if not future.done():
                future.set_result(None)


async def answering_with_held_results(harness: Harness, monkeypatch: pytest.MonkeyPatch, *waiters: str
                                      ) -> tuple[HeldResults, bytes, asyncio.Task[None]]:
    """The owner's request being answered (with ``waiters`` already on its call) while the broker holds back its
    acknowledgements: (the held topic, the request, the answering task)."""
    import streams.outcomes

    held = HeldResults(harness.results)
    monkeypatch.setattr(streams.outcomes, "analysis_results_topic", held)
    for job in ("owner", *waiters):
        await deduplicate(harness.ctx, hashed(job))
    _, request = harness.requests.messages.pop(0)
    return held, request, asyncio.create_task(answer_request(harness.ctx, VisionRequest.model_validate_json(request)))


async def kill_and_redeliver(harness: Harness, monkeypatch: pytest.MonkeyPatch, held: HeldResults, request: bytes,
                             answering: asyncio.Task[None]) -> None:
    """The worker dies with its results unacknowledged; the partition's next owner gets the request again."""
    import streams.outcomes

    answering.cancel()
    for future in held.pending:
        future.cancel()
    await asyncio.gather(answering, return_exceptions=True)
    harness.results.messages.clear()
    monkeypatch.setattr(streams.outcomes, "analysis_results_topic", harness.results)
    await answer_request(harness.ctx, VisionRequest.model_validate_json(request))


async def test_a_call_stays_in_flight_until_the_broker_has_its_results(harness: Harness,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after sending its waiters' results but before the broker acknowledged them, a worker leaves the call
    in its table: the redelivered request answers the waiters again instead of only its own job."""
    held, request, answering = await answering_with_held_results(harness, monkeypatch, "waiter")
    while len(harness.results.messages) < 2:  # both results sent, none acknowledged
        await asyncio.sleep(0)
    assert not answering.done()
    assert harness.ctx.calls.entry(PHASH) is not None, "the call left the table before its results were delivered"
    await kill_and_redeliver(harness, monkeypatch, held, request, answering)
    assert harness.results_by_job().keys() == {"owner", "waiter"}
    assert harness.ctx.calls.entry(PHASH) is None  # answered and acknowledged: the call is done
    assert len(harness.vision.calls) == 1  # the answer was cached; not paid again


async def test_a_job_that_joins_while_the_results_go_out_is_answered_too(harness: Harness,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    held, _, answering = await answering_with_held_results(harness, monkeypatch)
    while not harness.results.messages:
        await asyncio.sleep(0)
    harness.ctx.calls.add_waiter(PHASH, hashed("late"))  # joined before the call left the table
    held.ack_all()
    while not answering.done():
        held.ack_all()
        await asyncio.sleep(0)
    await answering
    assert harness.results_by_job().keys() == {"owner", "late"}
    assert harness.ctx.calls.entry(PHASH) is None


async def test_a_late_waiter_stays_in_the_table_until_its_own_result_is_acknowledged(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job that joined while the first results went out is answered in a second round; a worker killed before
    the broker acknowledged that round must leave it in the table, or the redelivered request (which finds the
    owner's result already published) answers nobody and the late job never gets a result (the crash test)."""
    held, request, answering = await answering_with_held_results(harness, monkeypatch)
    while not harness.results.messages:
        await asyncio.sleep(0)
    harness.ctx.calls.add_waiter(PHASH, hashed("late"))
    held.ack_all()  # the owner's result is acknowledged; the late job's goes out next
    while len(harness.results.messages) < 2:
        await asyncio.sleep(0)
    entry = harness.ctx.calls.entry(PHASH)
    assert entry is not None and [w.job_id for w in entry.waiters] == ["late"]
    await kill_and_redeliver(harness, monkeypatch, held, request, answering)
    assert "late" in harness.results_by_job()
    assert harness.ctx.calls.entry(PHASH) is None

"""The commit-offset correction: with out-of-order acknowledgements, never commit past an unfinished event."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

import streams.app  # noqa: F401 (applies the fix)
from streams import faust_fixes

PARTITION = TP("waste.uploads.completed", 0)


def consumer(committed: int | None, acked: list[int], in_progress: list[int]) -> Any:
    c = SimpleNamespace(_new_offset=lambda tp: faust_fixes._new_offset(c, tp))
    c._acked = defaultdict(list, {PARTITION: list(acked)})
    c._acked_index = defaultdict(set, {PARTITION: set(acked)})
    c._gap = defaultdict(IntervalTree)
    c._committed_offset = defaultdict(lambda: None, {PARTITION: committed})
    c._unacked_messages = [SimpleNamespace(tp=PARTITION, offset=o, acked=False) for o in in_progress]
    return c


def test_the_fix_is_installed_for_the_kafka_driver() -> None:
    from faust.transport.drivers.aiokafka import Consumer as KafkaConsumer

    assert Consumer._new_offset is faust_fixes._new_offset
    assert KafkaConsumer._new_offset is faust_fixes._new_offset


def test_one_unfinished_event_at_the_head_is_never_committed_past() -> None:
    # Committed up to 10; 11 and 12 are done, 10 is still being processed (concurrency > 1).
    assert consumer(10, [11, 12], in_progress=[10])._new_offset(PARTITION) is None
    # Nothing committed yet: the original committed 13 here, skipping 10 for good.
    assert consumer(None, [11, 12], in_progress=[10])._new_offset(PARTITION) is None


def test_commits_up_to_the_first_unfinished_event() -> None:
    c = consumer(10, [10, 11, 12, 14], in_progress=[13, 15])
    assert c._new_offset(PARTITION) == 13
    assert c._acked[PARTITION] == [14]  # kept for the next commit


def test_in_order_progress_commits_as_before() -> None:
    assert consumer(10, [10, 11, 12], in_progress=[])._new_offset(PARTITION) == 13


def test_another_faust_version_is_refused_loudly() -> None:
    import pytest

    with pytest.raises(faust_fixes.UnexpectedFaustVersion, match="issues/606"):
        faust_fixes.apply("0.16.0")
    faust_fixes.apply(faust_fixes.FOR_VERSION)  # the version it was written for: installed (again)
    assert Consumer._new_offset is faust_fixes._new_offset


def test_the_worker_consumer_waits_at_most_fetch_max_wait_ms(monkeypatch: Any) -> None:
    from faust.transport.drivers import aiokafka as faust_aiokafka

    assert faust_aiokafka.Consumer._new_consumer_thread is faust_fixes._new_consumer_thread
    made = SimpleNamespace(_fetch_max_wait_ms=1500)  # faust-streaming's hard-coded wait
    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer",
                        lambda self, transport: made)
    thread = faust_fixes._PromptConsumerThread.__new__(faust_fixes._PromptConsumerThread)
    assert thread._create_worker_consumer(None) is made
    assert made._fetch_max_wait_ms == faust_fixes.FETCH_MAX_WAIT_MS < 1500


def test_an_event_never_acknowledged_at_the_committed_offset_stops_the_commit() -> None:
    # Committed 10 (the next to read); 11 and 12 are done, 10 was never handed to a stream (not in progress
    # either): faust-streaming committed 13 here and 10 was never processed.
    assert consumer(10, [11, 12], in_progress=[])._new_offset(PARTITION) is None
    assert consumer(10, [10, 11, 12], in_progress=[])._new_offset(PARTITION) == 13  # once it is done


class _Flow:
    async def wait(self) -> None:
        await asyncio.Event().wait()  # the flow is never suspended in these tests


def draining_consumer(batches: list[list[int]], read_offset: int | None) -> Any:
    """A consumer whose fetches return ``batches`` of offsets of one partition, then stop."""
    stopped = asyncio.Event()
    delivered: list[int] = []
    gaps: list[tuple[int, int]] = []

    async def getmany(timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        batch = batches.pop(0)
        if not batches:
            stopped.set()
        for offset in batch:
            yield PARTITION, SimpleNamespace(offset=offset, topic=PARTITION.topic)

    async def callback(message: Any) -> None:
        delivered.append(message.offset)

    async def add_gap(tp: TP, first: int, last: int) -> None:
        gaps.append((first, last))

    async def wait_first(*coros: Any) -> None:
        done, pending = await asyncio.wait([asyncio.ensure_future(c) for c in coros],
                                           return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(0)

    c = SimpleNamespace(
        callback=callback, getmany=getmany, _stopped=stopped, should_stop=False, sleep=sleep,
        _read_offset=defaultdict(lambda: None, {PARTITION: read_offset}), _commit_every=None, _n_acked=0,
        app=SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True)),
        diag=SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None),
        wait_first=wait_first, suspend_flow=_Flow(), consumer_stopped_errors=(), _add_gap=add_gap,
        delivered=delivered, gaps=gaps)
    return c


async def test_events_below_the_read_offset_are_delivered_again_not_dropped() -> None:
    # After a rebalance the survivor's read offset for a partition it took over said 20369 while the events
    # from the committed 20365 on had never reached a stream: faust-streaming dropped them silently.
    c = draining_consumer([[20365, 20366, 20367], [20370]], read_offset=20369)
    await faust_fixes._drain_messages(c, SimpleNamespace(_stopped=asyncio.Event()))
    assert c.delivered == [20365, 20366, 20367, 20370]
    assert c._read_offset[PARTITION] == 20370
    assert c.gaps == []  # 20368-20369 were read before: not offsets that do not exist


async def test_offsets_skipped_going_forward_are_still_recorded_as_gaps() -> None:
    c = draining_consumer([[5, 6, 9]], read_offset=4)
    await faust_fixes._drain_messages(c, SimpleNamespace(_stopped=asyncio.Event()))
    assert c.delivered == [5, 6, 9]
    assert c.gaps == [(7, 9)]  # 7 and 8 do not exist (faust's convention: from read + 1 to the new offset)


def test_the_drain_fix_is_installed() -> None:
    assert Consumer._drain_messages is faust_fixes._drain_messages

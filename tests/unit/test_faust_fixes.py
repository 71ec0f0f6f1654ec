"""The commit-offset correction: with out-of-order acknowledgements, never commit past an unfinished event."""

from __future__ import annotations

from collections import defaultdict
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

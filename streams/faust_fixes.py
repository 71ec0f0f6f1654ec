"""A correction to faust-streaming 0.15.3, applied where the app is built (:mod:`streams.app`).

Upstream: https://github.com/faust-streaming/faust/issues/606 ("Wrong offset commit in case of gaps", open; the
fix proposed for it, faust-streaming/faust pull request 707, is not released). :func:`apply` refuses any other
faust-streaming version: a release may have changed ``_new_offset`` (or fixed it), and replacing it blindly
could undo that. Check the upstream code, then update :data:`FOR_VERSION` (or drop this module).

``Consumer._new_offset`` decides how far to commit a partition from the offsets its agents acknowledged. With
an agent's concurrency above 1 (``fetch_and_hash`` runs 8, ``classify`` 32) events finish out of order, and
the original commits past one unfinished event at the head: its guard, ``min(acked) - committed > 1``, is off
by one, and it is skipped entirely while the partition has no commit yet. A worker that dies before that
event is done never sees it again: a job without a result. Found by killing a worker mid-burst
(tests/integration/test_worker_crash_stack.py). The version here never commits past an event that is still
in progress (fetched, not yet acknowledged); otherwise it is the original's logic.

A second correction: the worker's consumer waits at most :data:`FETCH_MAX_WAIT_MS` for a fetch, not the
1500 ms faust-streaming hard-codes. aiokafka keeps one fetch in flight per broker and leaves out of it the
partitions whose fetched records are still being processed; once those are done, they cannot be fetched again
until the fetch in flight returns, and with nothing new on the partitions it asked for that takes the whole
wait. A burst whose first records were still being hashed when the next fetch left then stalls for up to
1.5 s before the rest of it is read (the bimodal bursts in BENCHMARKS.md: 96 events in 0.55 s or in 1.9 s).
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.consumer import Consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.utils.functional import consecutive_numbers

FOR_VERSION = "0.15.3"  # the faust-streaming release whose Consumer._new_offset this replaces
# The longest a fetch of the worker's consumer waits at the broker for records (faust-streaming: 1500). Bounds the
# stall described above; an idle worker sends about 1000 / FETCH_MAX_WAIT_MS fetches per second per broker.
FETCH_MAX_WAIT_MS = 100


class UnexpectedFaustVersion(RuntimeError):
    """The installed faust-streaming is not the release the correction was written for."""


def _new_offset(self: Any, tp: Any) -> int | None:
    acked = self._acked[tp]
    if not acked:
        return None
    max_offset = max(acked)
    gap_for_tp = self._gap[tp]
    if gap_for_tp:
        # Offsets that do not exist (compaction, transaction markers) count as acknowledged.
        candidates = sorted(gap_for_tp.overlap(0, max_offset), key=lambda interval: interval.begin)
        if candidates:
            stuff_to_add: list[int] = []
            for interval in candidates:
                stuff_to_add.extend(range(interval.begin, interval.end))
            new_max_offset = max(stuff_to_add[-1], max_offset + 1)
            acked.extend(stuff_to_add)
            gap_for_tp.chop(0, new_max_offset)
    acked.sort()
    committed_offset = self._committed_offset[tp]
    if committed_offset and min(acked) - committed_offset > 1:
        return None
    # The fix: stop before the first event of this partition that is still being processed.
    in_progress = [m.offset for m in list(self._unacked_messages) if m.tp == tp and not m.acked]
    limit = min(in_progress) if in_progress else None
    batch = [offset for offset in next(consecutive_numbers(acked)) if limit is None or offset < limit]
    if not batch:
        return None
    acked[: len(batch)] = []
    self._acked_index[tp].difference_update(batch)
    return batch[-1] + 1


def apply(installed: str = faust.__version__) -> None:
    """Install the corrected ``Consumer._new_offset`` (idempotent); raise on another faust-streaming version."""
    if installed != FOR_VERSION:
        raise UnexpectedFaustVersion(
            f"streams/faust_fixes.py corrects faust-streaming {FOR_VERSION}'s Consumer._new_offset (commits past "
            f"events still in progress: https://github.com/faust-streaming/faust/issues/606), but "
            f"faust-streaming {installed} is installed. Check whether that release fixed it or changed "
            f"_new_offset, then update FOR_VERSION or remove the correction.")
    Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    faust_aiokafka.Consumer._new_consumer_thread = _new_consumer_thread  # type: ignore[method-assign]


class _PromptConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """The worker's aiokafka consumer, with fetches that wait at most :data:`FETCH_MAX_WAIT_MS`."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by AIOKafkaConsumer.start() to build its Fetcher
        return consumer


def _new_consumer_thread(self: Any) -> faust_aiokafka.AIOKafkaConsumerThread:
    return _PromptConsumerThread(self, loop=self.loop, beacon=self.beacon)

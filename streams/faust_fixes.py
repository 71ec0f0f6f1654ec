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

A third: the consumer never drops a fetched event as "already read". faust-streaming skips (logging only in
its developer mode) every fetched event whose offset is below the partition's read offset, the last offset it
handed to a stream, on the assumption that such an event was delivered before a seek back. Around a rebalance
that offset goes stale: after a worker was killed, the survivor re-seeks the partitions it takes over to their
committed offsets while its fetch loop already runs (Recovery resumes the flow before that seek), and the read
offset ends up above events never handed to a stream. Those events were then dropped silently, and the commit
moved past them: jobs with no result, or a partition whose lag never fell
(tests/integration/test_worker_failover_stack.py, found with faust's developer log: ``DROPPED MESSAGE ROFF``).
Here such an event is delivered again; the pipeline is built for redelivery (result markers, the in-flight
table), so the worst case is work done twice, never a job lost. With that, ``_new_offset`` also refuses to
commit past a hole at the head of a partition: the committed offset is the next one to read, and an offset
at or after it that was never acknowledged stops the commit there (faust-streaming let exactly one through).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING, Consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.utils.functional import consecutive_numbers

_log = logging.getLogger(__name__)

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
    if committed_offset is not None and min(acked) > committed_offset:
        return None  # the event at the committed offset (the next to read) is not done: a hole at the head
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
    Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]
    faust_aiokafka.Consumer._new_consumer_thread = _new_consumer_thread  # type: ignore[method-assign]


class _PromptConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """The worker's aiokafka consumer, with fetches that wait at most :data:`FETCH_MAX_WAIT_MS`."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by AIOKafkaConsumer.start() to build its Fetcher
        return consumer


def _new_consumer_thread(self: Any) -> faust_aiokafka.AIOKafkaConsumerThread:
    return _PromptConsumerThread(self, loop=self.loop, beacon=self.beacon)


async def _drain_messages(self: Any, fetcher: Any) -> None:
    """faust-streaming 0.15.3's ``Consumer._drain_messages``, except that an event below the read offset is
    delivered again instead of dropped (see the module's docstring); gaps are still recorded going forward."""
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    read_offset = self._read_offset
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    yield_every = 100
    num_since_yield = 0
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            self.diag.set_flag(CONSUMER_FETCHING)
            ait = cast(Any, getmany(timeout=1.0))
            await self.sleep(0)  # getmany can return at once many times in a row
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await asyncio.sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = read_offset[tp]
                    if r_offset is not None and offset < r_offset:
                        _log.debug("redelivering %s offset %d (read offset %d)", tp, offset, r_offset)
                    elif r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, r_offset + 1, offset)  # offsets that do not exist
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                    read_offset[tp] = offset if r_offset is None else max(offset, r_offset)
                self.diag.unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        self.diag.unset_flag(CONSUMER_FETCHING)


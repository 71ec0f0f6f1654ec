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
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.consumer import Consumer
from faust.utils.functional import consecutive_numbers

FOR_VERSION = "0.15.3"  # the faust-streaming release whose Consumer._new_offset this replaces


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

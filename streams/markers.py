"""The record of the results this process published whose Redis marker is not written yet.

The marker ``result:published:{app_id}:{job_id}`` (streams/outcomes.py) is the record that a job was answered; it
is written once the broker has acknowledged the result. In between, a second request for the same pHash (a
redelivery) could answer the same job again: this process remembers those jobs until their marker exists.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any

PUBLISHED_HERE_MAX = 100_000


class PublishedJobs:
    """Jobs published by this process whose marker is not written yet (bounded), and the marker writes under way."""

    def __init__(self, max_jobs: int = PUBLISHED_HERE_MAX) -> None:
        self._jobs: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._max = max_jobs
        # Marker writes under way (a task nobody holds a reference to may be collected before it runs).
        self._marking: set[asyncio.Future[Any]] = set()

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def remember(self, job_id: str, delivery: Any) -> None:
        self._jobs[job_id] = None
        self._jobs.move_to_end(job_id)
        while len(self._jobs) > self._max:
            self._jobs.popitem(last=False)
        if isinstance(delivery, asyncio.Future):  # refused by the broker: no marker follows, a replay may publish
            delivery.add_done_callback(
                lambda f: self._jobs.pop(job_id, None) if f.cancelled() or f.exception() is not None else None)

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def mark_when_delivered(self, delivery: Any, job_id: str, write_marker: Callable[[], Awaitable[Any]]) -> None:
        """Run ``write_marker`` once the broker has acknowledged ``delivery``; then the marker decides."""

        def mark(_: Any = None) -> None:
            task = asyncio.ensure_future(write_marker())
            self._marking.add(task)
            task.add_done_callback(self._marking.discard)
            # Written (or Redis failed, which the marker path tolerates anyway): the marker decides from now on.
            task.add_done_callback(lambda _: self._jobs.pop(job_id, None))

        if not isinstance(delivery, asyncio.Future):  # already delivered (or a test double)
            mark()
            return
        # Not awaited here: the agent goes on at once; the marker follows the broker's acknowledgement.
        delivery.add_done_callback(lambda f: None if f.cancelled() or f.exception() is not None else mark())

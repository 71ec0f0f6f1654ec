"""Fan-out of job state changes and results to the WebSockets of *this* instance.

Each connection has an outbox drained by one writer task, so a slow client never blocks the results
consumer and only one task ever writes to a socket. The outbox is bounded: a client that stops reading
fills it, and the connection is then marked ``overflowed`` (its handler closes it) instead of growing.
Results go out in their client view (api.privacy): no other user's job, key or pHash.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from api.errors import error_body
from api.privacy import client_result
from api.store import JobState
from models.records import AnalysisResult

_TERMINAL = (JobState.DONE, JobState.FAILED)


@dataclass(frozen=True)
class Outgoing:
    message: dict[str, Any]
    completed_at: datetime | None = None  # results only: delivery latency is measured when it is sent
    close_code: int | None = None  # set: close the socket with this code instead of sending


class Connection:
    """One WebSocket and the jobs it follows. A job's result is sent at most once per connection."""

    def __init__(self, ws: web.WebSocketResponse, *, client: str = "", outbox_max: int = 0) -> None:
        self.ws = ws
        self.client = client
        self.outbox: asyncio.Queue[Outgoing] = asyncio.Queue(maxsize=outbox_max)
        self.overflowed = asyncio.Event()  # set when the outbox was full: the client does not read
        self.last_activity = time.monotonic()  # a frame from the client, or a message to it
        self.authenticated = False  # set once the socket follows a job it holds a token for
        self._delivered: dict[str, bool] = {}  # job_id -> result sent
        self._last_state: dict[str, JobState] = {}

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    @property
    def jobs(self) -> list[str]:
        return list(self._delivered)

    @property
    def finished(self) -> bool:
        """True once every followed job has had its result (and at least one job was followed)."""
        return bool(self._delivered) and all(self._delivered.values())

    def follows(self, job_id: str) -> bool:
        return job_id in self._delivered

    def follow(self, job_id: str) -> None:
        self.authenticated = True
        self._delivered.setdefault(job_id, False)

    def unfollow(self, job_id: str) -> None:
        self._delivered.pop(job_id, None)
        self._last_state.pop(job_id, None)

    def offer_state(self, job_id: str, state: JobState) -> None:
        # Nothing after the result, no repeats, and terminal states travel as the result message itself.
        if self._delivered.get(job_id, True) or state in _TERMINAL or self._last_state.get(job_id) == state:
            return
        self._last_state[job_id] = state
        self.send({"type": "state", "job_id": job_id, "state": state.value})

    def offer_result(self, result: AnalysisResult) -> None:
        if self._delivered.get(result.job_id, True):
            return
        self._delivered[result.job_id] = True
        message = {"type": "result", "job_id": result.job_id, "result": client_result(result)}
        self._put(Outgoing(message, result.completed_at))

    def send_error(self, code: str, message: str, job_id: str | None = None) -> None:
        self.send({"type": "error", "job_id": job_id, **error_body(code, message)})

    def send(self, message: dict[str, Any]) -> None:
        self._put(Outgoing(message))

    def close_soon(self, code: int) -> None:
        """Ask the socket's own tasks to close it (after what is queued), e.g. on shutdown."""
        self._put(Outgoing({}, close_code=code))

    def _put(self, item: Outgoing) -> None:
        if self.overflowed.is_set():
            return
        try:
            self.outbox.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed.set()


class Hub:
    def __init__(self) -> None:
        self.connections: set[Connection] = set()
        self._followers: defaultdict[str, set[Connection]] = defaultdict(set)
        self._per_client: Counter[str] = Counter()

    def sockets_of(self, client: str) -> int:
        return self._per_client[client]

    def add(self, conn: Connection) -> None:
        self.connections.add(conn)
        self._per_client[conn.client] += 1

    def remove(self, conn: Connection) -> None:
        for job_id in conn.jobs:
            self.unfollow(conn, job_id)
        if conn in self.connections:
            self.connections.discard(conn)
            self._per_client[conn.client] -= 1
            if self._per_client[conn.client] <= 0:
                del self._per_client[conn.client]

    def follow(self, conn: Connection, job_id: str) -> None:
        conn.follow(job_id)
        self._followers[job_id].add(conn)

    def unfollow(self, conn: Connection, job_id: str) -> None:
        conn.unfollow(job_id)
        followers = self._followers.get(job_id)
        if followers is not None:
            followers.discard(conn)
            if not followers:
                del self._followers[job_id]

    def followers(self, job_id: str) -> int:
        return len(self._followers.get(job_id, ()))

    def publish_state(self, job_id: str, state: JobState) -> None:
        for conn in list(self._followers.get(job_id, ())):
            conn.offer_state(job_id, state)

    def publish_result(self, result: AnalysisResult) -> None:
        for conn in list(self._followers.get(result.job_id, ())):
            conn.offer_result(result)

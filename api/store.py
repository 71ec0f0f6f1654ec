"""Job state and results, shared by every API instance through Redis.

Keys (all with a TTL, so Redis never fills up with finished jobs):
  api:job:{job_id}        the job as issued by ``analyze`` (bucket, key, state)
  api:job:{job_id}:pub    marker set once upload-complete published the event (idempotency)
  api:result:{job_id}     the first AnalysisResult seen for the job; later duplicates are ignored
State changes go out on the pub/sub channel ``api:job-states`` so every instance can tell its own sockets.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from enum import StrEnum
from typing import Any, ParamSpec, Protocol, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from models.records import AnalysisResult, utcnow

log = logging.getLogger("api.store")

STATE_CHANNEL = "api:job-states"


class JobState(StrEnum):
    AWAITING_UPLOAD = "awaiting_upload"  # analyze answered; the client has not confirmed the upload
    QUEUED = "queued"  # upload confirmed, event published; the pipeline has it
    DONE = "done"  # terminal: result.status == done
    FAILED = "failed"  # terminal: result.status == failed


class Job(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: str
    bucket: str
    key: str
    state: JobState = JobState.AWAITING_UPLOAD
    created_at: AwareDatetime
    content_type: str | None = None  # the Content-Type pinned in the job's upload policy


StateCallback = Callable[[str, JobState], None]


class JobStore(Protocol):
    async def create_job(self, job: Job) -> None: ...
    async def get_job(self, job_id: str) -> Job | None: ...
    async def claim_publish(self, job_id: str) -> bool: ...
    async def release_publish(self, job_id: str) -> None: ...
    async def set_state(self, job_id: str, state: JobState) -> None: ...
    async def save_results(self, results: list[AnalysisResult]) -> None: ...
    async def get_result(self, job_id: str) -> AnalysisResult | None: ...
    async def watch_states(self, on_state: StateCallback, ready: asyncio.Event) -> None: ...
    async def ping(self) -> None: ...


P = ParamSpec("P")
T = TypeVar("T")


def _raise_if_cancelled() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def cancellation_safe(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Re-raise a cancellation that redis-py lost.

    redis-py's asyncio client can turn a task's CancelledError into a ConnectionError, or drop it, when the
    cancel lands mid-command (redis/redis-py#2028, #2551; seen here with redis-py 8). A task that keeps
    running after cancel() hangs shutdown, so after each call we check whether the task is still being cancelled.
    """

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            result = await fn(*args, **kwargs)
        except Exception:
            _raise_if_cancelled()
            raise
        _raise_if_cancelled()
        return result

    return wrapper


def result_ttl(result: AnalysisResult, retention_s: int, now: datetime | None = None) -> int:
    """Seconds the result should still be kept: retention counted from when the pipeline finished it.

    Counting from completed_at (not from when this instance saw it) means a result replayed at start-up
    does not live longer than one that was stored in time.
    """
    age = ((now or utcnow()) - result.completed_at).total_seconds()
    return int(retention_s - max(age, 0.0))


class RedisJobStore:
    def __init__(self, redis: Redis, retention_s: int, job_ttl_s: int) -> None:
        self._redis = redis
        self._retention_s = retention_s
        self._job_ttl_s = job_ttl_s

    @cancellation_safe
    async def create_job(self, job: Job) -> None:
        await self._redis.set(f"api:job:{job.job_id}", job.model_dump_json(), ex=self._job_ttl_s)

    @cancellation_safe
    async def get_job(self, job_id: str) -> Job | None:
        raw = await self._redis.get(f"api:job:{job_id}")
        return None if raw is None else Job.model_validate_json(raw)

    @cancellation_safe
    async def claim_publish(self, job_id: str) -> bool:
        # SET NX: of two concurrent upload-complete calls (on any instances) exactly one wins.
        return bool(await self._redis.set(f"api:job:{job_id}:pub", "1", nx=True, ex=self._job_ttl_s))

    @cancellation_safe
    async def release_publish(self, job_id: str) -> None:
        await self._redis.delete(f"api:job:{job_id}:pub")

    @cancellation_safe
    async def set_state(self, job_id: str, state: JobState) -> None:
        job = await self.get_job(job_id)
        if job is not None:
            # XX + KEEPTTL: update in place; never resurrect an expired job without a TTL.
            updated = job.model_copy(update={"state": state})
            await self._redis.set(f"api:job:{job_id}", updated.model_dump_json(), xx=True, keepttl=True)
        await self._redis.publish(STATE_CHANNEL, json.dumps({"job_id": job_id, "state": state.value}))

    @cancellation_safe
    async def save_results(self, results: list[AnalysisResult]) -> None:
        """Keep each job's first result (SET NX), for as long as retention allows; one round trip per batch."""
        now = utcnow()
        async with self._redis.pipeline(transaction=False) as pipe:
            for result in results:
                ttl = result_ttl(result, self._retention_s, now)
                if ttl > 0:
                    pipe.set(f"api:result:{result.job_id}", result.model_dump_json(), nx=True, ex=ttl)
            await pipe.execute()

    @cancellation_safe
    async def get_result(self, job_id: str) -> AnalysisResult | None:
        raw = await self._redis.get(f"api:result:{job_id}")
        return None if raw is None else AnalysisResult.model_validate_json(raw)

    async def watch_states(self, on_state: StateCallback, ready: asyncio.Event) -> None:
        """Forward state changes from every instance to ``on_state``; reconnects until cancelled."""
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(STATE_CHANNEL)
                    ready.set()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            _dispatch_state(message.get("data"), on_state)
            except RedisError as exc:
                _raise_if_cancelled()
                log.warning("state channel lost, resubscribing in 1 s: %s", exc)
                await asyncio.sleep(1.0)

    @cancellation_safe
    async def ping(self) -> None:
        await self._redis.ping()


def _dispatch_state(data: object, on_state: StateCallback) -> None:
    try:
        payload = json.loads(data if isinstance(data, str | bytes) else "")
        on_state(str(payload["job_id"]), JobState(payload["state"]))
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        log.warning("ignoring malformed state message: %s", exc)

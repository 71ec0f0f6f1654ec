"""The API's job records and the publish-once claim, as the storage-event trigger sees them in Redis.

The API writes these keys (api/store.py); the worker's storage-event trigger reads the job record and takes the
same claim, so a job's upload-complete event is published once whether the notification, the upload-complete
call, or both arrive, in either order (tests/unit/test_storage_events.py checks both sides use the same keys):

  api:job:{job_id}       the job as ``analyze`` issued it: JSON with bucket, key, state, content_type
  api:job:{job_id}:pub   the claim: SET NX by whoever publishes the job's upload-complete event
  api:job-states         pub/sub channel of state changes, which every API instance forwards to its WebSockets

A claim taken by the trigger first lives ``PENDING_CLAIM_SECONDS``; once the broker has acknowledged the event it
is extended to the job record's own lifetime. A worker that dies in between leaves a claim that expires, and the
reconciliation pass then queues the job: a lost event costs latency, never the job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from streams.redis_client import get_many

JOB_KEY = "api:job:{job_id}"
CLAIM_KEY = "api:job:{job_id}:pub"
STATE_CHANNEL = "api:job-states"
AWAITING_UPLOAD = "awaiting_upload"
QUEUED = "queued"
PENDING_CLAIM_SECONDS = 120


@dataclass(frozen=True)
class IssuedJob:
    job_id: str
    bucket: str
    key: str
    state: str
    content_type: str | None


def _decode(job_id: str, raw: bytes | str | None) -> IssuedJob | None:
    if raw is None:
        return None
    try:
        data: Any = json.loads(raw)
        return IssuedJob(job_id=job_id, bucket=str(data["bucket"]), key=str(data["key"]), state=str(data["state"]),
                         content_type=data.get("content_type"))
    except (ValueError, KeyError, TypeError):
        return None


async def issued_job(redis: Any, job_id: str) -> IssuedJob | None:
    """The job as the API issued it, or None (never issued, expired, or unreadable)."""
    return _decode(job_id, await redis.get(JOB_KEY.format(job_id=job_id)))


async def issued_jobs(redis: Any, job_ids: list[str]) -> dict[str, IssuedJob]:
    """The issued jobs among ``job_ids``, in one round trip."""
    if not job_ids:
        return {}
    raws = await get_many(redis, [JOB_KEY.format(job_id=j) for j in job_ids])  # MGET, or GETs on a cluster
    jobs = {j: _decode(j, raw) for j, raw in zip(job_ids, raws, strict=True)}
    return {j: job for j, job in jobs.items() if job is not None}


async def claim(redis: Any, job_id: str) -> bool:
    """Take the job's publish claim (as the API's upload-complete does); False when someone already has."""
    return bool(await redis.set(CLAIM_KEY.format(job_id=job_id), "1", nx=True, ex=PENDING_CLAIM_SECONDS))


async def confirm(redis: Any, job_id: str) -> None:
    """The event is acknowledged: keep the claim as long as the job record lives."""
    ttl_ms = await redis.pttl(JOB_KEY.format(job_id=job_id))
    if isinstance(ttl_ms, int) and ttl_ms > 0:
        await redis.pexpire(CLAIM_KEY.format(job_id=job_id), max(ttl_ms, PENDING_CLAIM_SECONDS * 1000))


async def release(redis: Any, job_id: str) -> None:
    await redis.delete(CLAIM_KEY.format(job_id=job_id))


async def set_state(redis: Any, job_id: str, state: str) -> None:
    """Update the job record's state in place (never resurrect an expired one) and tell every API instance."""
    key = JOB_KEY.format(job_id=job_id)
    raw = await redis.get(key)
    if raw is not None:
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if isinstance(data, dict):
            data["state"] = state
            await redis.set(key, json.dumps(data), xx=True, keepttl=True)
    await redis.publish(STATE_CHANNEL, json.dumps({"job_id": job_id, "state": state}))

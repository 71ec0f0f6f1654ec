"""storage.events -> uploads.completed: the upload itself is the trigger (docs/STORAGE_EVENTS.md).

The bucket's ObjectCreated notifications become the same UploadCompleted events the API's upload-complete call
publishes, for jobs the API issued and that still wait for their upload, under the API's own publish claim: one
event per job, whichever comes first. Refused notifications (another bucket, a key outside the scheme, not a
notification) are dead-lettered without any S3 or Redis call.

A notification that names no object (versitygw's POST uploads) is matched to its object by listing the recent
uploads with the same ETag and size. A leader-only timer reconciles what no notification announced.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter
from redis.exceptions import RedisError

from models.errors import ErrorCode
from models.records import UploadCompleted, utcnow
from streams import job_claims, topics
from streams.app import app
from streams.channels import storage_events_topic, uploads_completed_topic
from streams.context import WorkerContext
from streams.outcomes import dead_letter
from streams.storage_events import NotANotification, ObjectCreated, job_for, parse_notification
from streams.upload_checks import RefusedEvent

log = logging.getLogger(__name__)

RECONCILE_TICK_SECONDS = 1.0  # the timer's tick; STORAGE_RECONCILE_INTERVAL_SECONDS decides when a pass runs

storage_events_total = Counter(
    "waste_storage_events_total",
    "Storage notification records, by outcome (queued, duplicate, no_job, not_waiting, empty, refused, ignored, "
    "unmatched, failed)",
    ["outcome"],
)
storage_reconciled_total = Counter("waste_storage_reconciled_total", "Uploads queued by the reconciliation pass")


@app.agent(storage_events_topic, concurrency=4)
async def storage_events(stream: Any) -> None:
    async for event in stream.events():
        ctx = await app.context.ready()
        await process_notification(ctx, event.value, event.message.partition, event.message.offset)


async def process_notification(ctx: WorkerContext, value: bytes, partition: int | None, offset: int | None) -> None:
    if not ctx.settings.storage_events_enabled:
        storage_events_total.labels(outcome="ignored").inc()
        return
    try:
        notification = parse_notification(value)
    except NotANotification as exc:
        await _refuse(RefusedEvent(None, "the message is not an S3 event notification", str(exc)), value,
                      partition, offset)
        return
    if notification.ignored:
        storage_events_total.labels(outcome="ignored").inc(notification.ignored)
    for record in notification.created:
        if record.bucket != ctx.settings.s3_bucket_name or record.key:
            try:  # before any I/O: only this bucket, only keys of the scheme, and the job they name
                job_id = job_for(ctx.settings, record.bucket, record.key)
            except RefusedEvent as exc:
                await _refuse(exc, value, partition, offset)
                continue
            await trigger(ctx, job_id, record.key, record.size, record.event_time, via="notification")
        else:
            await _resolve_keyless(ctx, record)


async def _refuse(exc: RefusedEvent, value: bytes, partition: int | None, offset: int | None) -> None:
    storage_events_total.labels(outcome="refused").inc()
    log.warning("storage notification refused partition=%s offset=%s: %s (%s)", partition, offset, exc.message,
                exc.detail)
    await dead_letter(job_id=None, code=ErrorCode.INVALID_EVENT, message=exc.message, stage="storage_event",
                      topic=topics.STORAGE_EVENTS, partition=partition, offset=offset, original=value)


async def trigger(ctx: WorkerContext, job_id: str, key: str, size: int | None,
                  uploaded_at: datetime | None, *, via: str) -> bool:
    """Publish the job's upload-complete event unless it was published already; True when this call did."""
    job = await _claim(ctx, job_id, key, size, via=via)
    if job is None:
        return False
    event = UploadCompleted(job_id=job_id, bucket=job.bucket, key=key, content_type=job.content_type,
                            size=size or None, uploaded_at=uploaded_at or utcnow())
    try:
        delivery = await uploads_completed_topic.send(key=job_id, value=event.to_bytes())
        await delivery  # acknowledged by the broker before the claim is made to last
    except Exception as exc:
        storage_events_total.labels(outcome="failed").inc()
        log.warning("job_id=%s (%s): publishing upload-complete failed (%s); released for a retry", job_id, via,
                    type(exc).__name__)
        await _release(ctx, job_id)
        return False
    try:
        await job_claims.confirm(ctx.redis, job_id)
    except RedisError as exc:  # the short claim expires; a later pass may queue the job again (deduplicated later)
        log.warning("job_id=%s: extending the claim failed: %s", job_id, exc)
    storage_events_total.labels(outcome="queued").inc()
    log.info("job_id=%s key=%s queued by %s (%s bytes)", job_id, key, via, size)
    return True


async def _claim(ctx: WorkerContext, job_id: str, key: str, size: int | None, *,
                 via: str) -> job_claims.IssuedJob | None:
    """The issued job, with its publish claim taken and its state "queued"; None when it is not to be queued."""
    try:
        job = await job_claims.issued_job(ctx.redis, job_id)
        outcome = _skip_reason(ctx, job, key, size)
        if outcome is None and not await job_claims.claim(ctx.redis, job_id):
            outcome = "duplicate"
        if outcome is not None:
            storage_events_total.labels(outcome=outcome).inc()
            log.info("job_id=%s key=%s (%s): not queued: %s", job_id, key, via, outcome)
            return None
        # Announce "queued" first, as upload-complete does: a fast pipeline must not overtake the state change.
        await job_claims.set_state(ctx.redis, job_id, job_claims.QUEUED)
        return job
    except RedisError as exc:  # nothing published: the next notification or the reconciliation pass retries
        storage_events_total.labels(outcome="failed").inc()
        log.warning("job_id=%s (%s): Redis unavailable, not queued: %s", job_id, via, exc)
        return None


async def _release(ctx: WorkerContext, job_id: str) -> None:
    try:
        await job_claims.set_state(ctx.redis, job_id, job_claims.AWAITING_UPLOAD)
        await job_claims.release(ctx.redis, job_id)
    except RedisError:
        log.warning("job_id=%s: releasing the claim failed; it expires in %ss", job_id,
                    job_claims.PENDING_CLAIM_SECONDS)


def _skip_reason(ctx: WorkerContext, job: job_claims.IssuedJob | None, key: str,
                 size: int | None) -> str | None:
    if job is None:
        return "no_job"  # not issued by the API (or expired): tools.produce and tests publish their own events
    if job.bucket != ctx.settings.s3_bucket_name or job.key != key:
        return "no_job"
    if job.state != job_claims.AWAITING_UPLOAD:
        return "not_waiting"  # already queued or answered
    if size == 0:
        return "empty"  # left to upload-complete, which refuses and deletes an empty upload
    return None


@dataclass(frozen=True)
class Listed:
    key: str
    size: int
    etag: str
    last_modified: datetime


async def list_uploads(ctx: WorkerContext) -> list[Listed]:
    """The objects under STORAGE_UPLOAD_PREFIX, at most STORAGE_RECONCILE_MAX_KEYS of them."""
    settings = ctx.settings
    listed: list[Listed] = []
    paginator = ctx.s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=settings.s3_bucket_name, Prefix=settings.storage_upload_prefix):
        for obj in page.get("Contents", []):
            listed.append(Listed(key=obj["Key"], size=int(obj.get("Size", 0)),
                                 etag=str(obj.get("ETag", "")).strip('"'), last_modified=obj["LastModified"]))
            if len(listed) >= settings.storage_reconcile_max_keys:
                log.warning("listing %s stopped at STORAGE_RECONCILE_MAX_KEYS=%d objects",
                            settings.storage_upload_prefix, settings.storage_reconcile_max_keys)
                return listed
    return listed


async def _resolve_keyless(ctx: WorkerContext, record: ObjectCreated) -> None:
    """A notification without a key (versitygw's POST uploads): the recent uploads with its ETag and size."""
    settings = ctx.settings
    since = utcnow() - timedelta(seconds=settings.storage_reconcile_lookback_seconds)
    try:
        listed = await list_uploads(ctx)
    except Exception as exc:  # S3 unavailable: the reconciliation pass will find the upload
        storage_events_total.labels(outcome="failed").inc()
        log.warning("listing uploads for a keyless notification failed: %s", type(exc).__name__)
        return
    matches = [o for o in listed if o.etag == record.etag and o.size == record.size and o.last_modified >= since]
    for obj in matches:
        try:
            job_id = job_for(settings, record.bucket, obj.key)
        except RefusedEvent:
            continue
        await trigger(ctx, job_id, obj.key, obj.size, record.event_time, via="notification")
    if not matches:
        storage_events_total.labels(outcome="unmatched").inc()
        log.info("keyless notification etag=%s size=%s matched no recent upload", record.etag, record.size)


async def reconcile(ctx: WorkerContext) -> list[str]:
    """Queue the recent uploads whose job still waits for them; returns the job ids queued."""
    settings = ctx.settings
    now = utcnow()
    candidates: dict[str, Listed] = {}
    for obj in await list_uploads(ctx):
        age = (now - obj.last_modified).total_seconds()
        if obj.size == 0 or not settings.storage_reconcile_min_age_seconds <= age <= \
                settings.storage_reconcile_lookback_seconds:
            continue
        try:
            candidates[job_for(settings, settings.s3_bucket_name, obj.key)] = obj
        except RefusedEvent:
            continue
    waiting = await job_claims.issued_jobs(ctx.redis, list(candidates))
    queued = []
    for job_id, job in waiting.items():
        if job.state != job_claims.AWAITING_UPLOAD:
            continue
        obj = candidates[job_id]
        if await trigger(ctx, job_id, obj.key, obj.size, obj.last_modified, via="reconciliation"):
            queued.append(job_id)
    if queued:
        storage_reconciled_total.inc(len(queued))
        log.warning("reconciliation queued %d upload(s) no notification or call announced: %s", len(queued),
                    ", ".join(queued[:20]))
    return queued


@app.timer(interval=RECONCILE_TICK_SECONDS, on_leader=True)
async def reconcile_uploads() -> None:
    ctx = await app.context.ready()
    interval = ctx.settings.storage_reconcile_interval_seconds
    if interval <= 0 or time.monotonic() - ctx.timers.reconcile_last_pass < interval:
        return
    ctx.timers.reconcile_last_pass = time.monotonic()
    try:
        await reconcile(ctx)
    except Exception as exc:  # S3 or Redis unavailable: the next pass tries again
        log.warning("reconciliation pass failed: %s: %s", type(exc).__name__, exc)

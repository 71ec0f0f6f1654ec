"""images.hashed -> this partition's table -> Redis -> result (hit) | wait on an in-flight call | vision.requests.

Events are keyed by pHash, so every copy of one image is handled here, on one partition, one at a time:
"one model call per distinct image, even under a burst" needs no distributed lock.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import ValidationError

from models.errors import ErrorCode
from models.records import CacheInfo, CacheSource, CachedClassification, ImageHashed, VisionRequest, utcnow
from streams import metrics, resources, tables, topics
from streams.app import app
from streams.app import settings as app_settings
from streams.channels import dedupe_maintenance_topic, images_hashed_topic, vision_requests_topic
from streams.outcomes import dead_letter, done_result, failed_result, publish_result

log = logging.getLogger(__name__)


@app.agent(images_hashed_topic)
async def dedupe(stream: Any) -> None:
    async for event in stream.events():
        try:
            job = ImageHashed.model_validate_json(event.value)
        except ValidationError as exc:
            await dead_letter(job_id=None, code=ErrorCode.INTERNAL_ERROR, message=f"bad hashed event: {exc}",
                              stage="dedupe", topic=topics.IMAGES_HASHED, partition=event.message.partition,
                              offset=event.message.offset, original=event.value)
            continue
        await deduplicate(job)


async def deduplicate(job: ImageHashed) -> None:
    res = await resources.ready()
    settings = res.settings
    started = time.monotonic()
    metrics.events_total.labels(stage="dedupe").inc()

    entry = _table_hit(job.phash)
    if entry is not None:
        await _answer_from_cache(job, entry, CacheSource.TABLE, started)
        return
    entry = await res.cache.get(job.phash)
    # The await above let other events run: look at the table again before deciding.
    if entry is None:
        entry = _table_hit(job.phash)
        source = CacheSource.TABLE
    else:
        tables.remember_result(entry)
        source = CacheSource.REDIS
    if entry is not None:
        await _answer_from_cache(job, entry, source, started)
        return

    inflight = tables.get_inflight(job.phash)
    if inflight is not None and inflight.age() < settings.inflight_timeout_seconds:
        tables.add_waiter(job.phash, job)
        metrics.cache_lookups_total.labels(source=CacheSource.INFLIGHT.value).inc()
        log.info("job_id=%s waits on job_id=%s for phash=%s", job.job_id, inflight.owner.job_id, job.phash)
        return
    # A miss (or a call presumed lost): this job pays for the model call; earlier waiters keep waiting on it.
    waiters = ([inflight.owner, *inflight.waiters] if inflight is not None else [])
    tables.start_inflight(job, waiters)
    metrics.cache_lookups_total.labels(source=CacheSource.MODEL.value).inc()
    await vision_requests_topic.send(
        key=job.phash, value=VisionRequest(phash=job.phash, job=job, requested_at=utcnow()).to_bytes()
    )


def _table_hit(phash: str) -> CachedClassification | None:
    settings = app_settings()
    return tables.fresh_result(phash, ttl_seconds=settings.cache_ttl_seconds, model_version=settings.model_version)


async def _answer_from_cache(job: ImageHashed, entry: CachedClassification, source: CacheSource,
                             started: float) -> None:
    metrics.cache_lookups_total.labels(source=source.value).inc()
    cache = CacheInfo(hit=True, source=source, phash=job.phash, model_version=entry.model_version,
                      reused_job_id=entry.job_id if entry.job_id != job.job_id else None)
    lookup_ms = round((time.monotonic() - started) * 1000, 2)
    await publish_result(done_result(job, entry.classification, cache, {"dedupe": lookup_ms}))


@app.timer(interval=30.0)
async def find_stale_entries() -> None:
    """Ask for expired results and seemingly lost model calls to be dealt with, on their own partitions.

    Tables can only be changed inside a stream (that is how Faust knows the changelog partition), so the
    timer sends a maintenance event keyed by the pHash instead of changing the table itself.
    """
    settings = app_settings()
    now = time.time()
    for phash, value in list(tables.results_by_phash.items()):
        if now - value.get("stored_at", 0) > settings.cache_ttl_seconds:
            await dedupe_maintenance_topic.send(key=phash, value=b"expire")
    for phash in list(tables.inflight_by_phash.keys()):
        inflight = tables.get_inflight(phash)
        if inflight is not None and inflight.age() >= settings.inflight_timeout_seconds:
            await dedupe_maintenance_topic.send(key=phash, value=b"inflight")


@app.agent(dedupe_maintenance_topic)
async def maintain_dedupe_state(stream: Any) -> None:
    async for event in stream.events():
        phash = event.key.decode() if isinstance(event.key, bytes) else event.key
        if event.value == b"expire":
            tables.fresh_result(phash, ttl_seconds=app_settings().cache_ttl_seconds,
                                model_version=app_settings().model_version)  # deletes it when expired
        elif event.value == b"inflight":
            await recover_lost_call(phash)


async def recover_lost_call(phash: str) -> None:
    """Re-issue a model call nobody answered within INFLIGHT_TIMEOUT_SECONDS; give up after three tries."""
    settings = app_settings()
    inflight = tables.get_inflight(phash)
    if inflight is None or inflight.age() < settings.inflight_timeout_seconds:
        return  # answered (or re-issued) since the timer looked
    if inflight.attempts >= 3:
        tables.finish_inflight(phash)
        for job in [inflight.owner, *inflight.waiters]:
            await publish_result(failed_result(
                job.job_id, ErrorCode.MODEL_TIMEOUT, "no answer from the vision model after 3 requests",
                key=job.key, image_url=job.image_url, fetch=job.fetch))
        return
    log.warning("phash=%s: model call of job_id=%s presumed lost, re-requesting", phash, inflight.owner.job_id)
    tables.start_inflight(inflight.owner, inflight.waiters, attempts=inflight.attempts + 1)
    await vision_requests_topic.send(
        key=phash, value=VisionRequest(phash=phash, job=inflight.owner, requested_at=utcnow()).to_bytes()
    )

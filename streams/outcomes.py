"""Build and publish the terminal result of a job, and dead-letter what could not be processed.

Every job ends with one ``AnalysisResult`` (repeated, identical, only if a worker dies just as it is delivered);
failures also go to the dead-letter topic with the original event, so an operator can replay them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError

from models.errors import ErrorCode
from models.records import (
    AnalysisResult,
    CachedClassification,
    CacheInfo,
    DeadLetter,
    ErrorInfo,
    FetchInfo,
    ImageHashed,
    JobStatus,
    utcnow,
)
from streams import cost, metrics, resources
from streams.channels import analysis_results_topic, dead_letter_topic

log = logging.getLogger(__name__)

# result:published:{app_id}:{job_id}: per worker group, so two deployments on one broker each answer a job.
PUBLISHED_PREFIX = "result:published:"


def elapsed_ms(since: datetime) -> float:
    return round((utcnow() - since).total_seconds() * 1000, 2)


def done_result(job: ImageHashed, entry: CachedClassification, cache: CacheInfo,
                timings_ms: dict[str, float]) -> AnalysisResult:
    timings = {**job.timings_ms, **timings_ms, "total": elapsed_ms(job.received_at)}
    return AnalysisResult(
        job_id=job.job_id, status=JobStatus.DONE, classification=entry.classification, cache=cache,
        fetch=job.fetch, timings_ms=timings, image_key=job.key, image_url=job.image_url,
        answered_by=entry.answered_by,
    )


def failed_result(job_id: str, code: ErrorCode, message: str, *, key: str | None = None,
                  image_url: str | None = None, fetch: FetchInfo | None = None, cache: CacheInfo | None = None,
                  timings_ms: dict[str, float] | None = None) -> AnalysisResult:
    return AnalysisResult(
        job_id=job_id, status=JobStatus.FAILED, classification=None, cache=cache, fetch=fetch,
        timings_ms=timings_ms or {}, error=ErrorInfo(code=code, message=message),
        image_key=key, image_url=image_url,
    )


async def publish_result(result: AnalysisResult, *, reused: CachedClassification | None = None) -> None:
    """Publish the job's terminal result, unless this worker group already did.

    ``reused``: the cached answer a cache hit reuses; its call's cost counts as saved for the result's tier.

    Kafka delivers at least once: after a crash or a rebalance, events are processed again from the last
    committed offset, and each would publish its job's result again. A marker per job in Redis lets the replay
    skip them. It is set once the broker has acknowledged the result (``send`` only buffers it): a crash in
    between can cost a duplicate, never a result.
    """
    res = await resources.ready()
    marker = f"{PUBLISHED_PREFIX}{res.settings.app_id}:{result.job_id}"
    # Results of this process whose marker is not written yet (it is, once the broker has acknowledged them): a
    # second request for the same pHash (a redelivery) can answer the same job in that window.
    if (res.redis is not None and result.job_id in _published_here) or await _redis_call(res, "exists", marker):
        metrics.results_suppressed_total.inc()
        log.info("job_id=%s: result already published (a redelivered event); not publishing another", result.job_id)
        return
    delivery = await analysis_results_topic.send(key=result.job_id, value=result.to_bytes())
    if res.redis is not None:
        _remember_published(result.job_id, delivery)
        _mark_when_delivered(res, delivery, marker, result.job_id)
    metrics.results_total.labels(status=result.status.value,
                                 source=result.cache.source.value if result.cache else "none").inc()
    if reused is not None and result.cache is not None and result.cache.hit:
        cost.record_saved(result.cache.source.value, reused.cost_usd)
    if result.error is not None:
        metrics.failures_total.labels(code=result.error.code.value).inc()
        log.warning("job_id=%s failed: %s %s", result.job_id, result.error.code, result.error.message)


# Jobs this process published whose marker is not written yet (bounded): the marker is the record once it exists.
_published_here: collections.OrderedDict[str, None] = collections.OrderedDict()
PUBLISHED_HERE_MAX = 100_000


def _remember_published(job_id: str, delivery: Any) -> None:
    _published_here[job_id] = None
    _published_here.move_to_end(job_id)
    while len(_published_here) > PUBLISHED_HERE_MAX:
        _published_here.popitem(last=False)
    if isinstance(delivery, asyncio.Future):  # refused by the broker: no marker follows, a replay may publish
        delivery.add_done_callback(
            lambda f: _published_here.pop(job_id, None) if f.cancelled() or f.exception() is not None else None)


# Marker writes under way (a task nobody holds a reference to may be collected before it runs).
_marking: set[asyncio.Future[Any]] = set()


def _mark_when_delivered(res: resources.Resources, delivery: Any, marker: str, job_id: str) -> None:
    def mark(_: Any = None) -> None:
        task = asyncio.ensure_future(_redis_call(res, "set", marker, b"1", ex=res.settings.result_dedup_ttl_seconds))
        _marking.add(task)
        task.add_done_callback(_marking.discard)
        # Written (or Redis failed, which the marker path tolerates anyway): the marker decides from now on.
        task.add_done_callback(lambda _: _published_here.pop(job_id, None))

    if not isinstance(delivery, asyncio.Future):  # already delivered (or a test double)
        mark()
        return
    # Not awaited here: the agent goes on at once; the marker follows the broker's acknowledgement.
    delivery.add_done_callback(lambda f: None if f.cancelled() or f.exception() is not None else mark())


async def _redis_call(res: resources.Resources, command: str, *args: Any, **kwargs: Any) -> Any:
    """One Redis command for the result markers; without Redis (or when it fails) results are still published."""
    if res.redis is None:
        return None
    try:
        return await getattr(res.redis, command)(*args, **kwargs)
    except RedisError as exc:
        log.warning("result marker %s failed (%s): a redelivered event may publish a duplicate", command, exc)
        return None


async def dead_letter(*, job_id: str | None, code: ErrorCode, message: str, stage: str, topic: str,
                      partition: int | None, offset: int | None, original: bytes | str) -> None:
    text = original.decode("utf-8", errors="replace") if isinstance(original, bytes) else original
    letter = DeadLetter(job_id=job_id, code=code, message=message, stage=stage, topic=topic,
                        partition=partition, offset=offset, original=text[:100_000])
    await dead_letter_topic.send(key=job_id, value=letter.to_bytes())


async def dead_letter_undecodable(event: Any, *, stage: str, topic: str, error: Exception) -> None:
    """An internal event that does not parse: a bug upstream, kept for replay rather than crashing the agent."""
    await dead_letter(job_id=None, code=ErrorCode.INTERNAL_ERROR, message=f"bad {stage} event: {error}",
                      stage=stage, topic=topic, partition=event.message.partition, offset=event.message.offset,
                      original=event.value)

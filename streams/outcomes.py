"""Build and publish the terminal result of a job, and dead-letter what could not be processed.

Every job ends with one ``AnalysisResult`` (repeated, identical, only if a worker dies just as it is delivered);
failures also go to the dead-letter topic with the original event, so an operator can replay them.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, TypeVar

from pydantic import ValidationError
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
    VisionRequest,
    utcnow,
)
from streams import metrics
from streams.channels import analysis_results_topic, dead_letter_topic
from streams.context import WorkerContext

log = logging.getLogger(__name__)

GroupEvent = TypeVar("GroupEvent", ImageHashed, VisionRequest)

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


async def publish_result(ctx: WorkerContext, result: AnalysisResult, *,
                         reused: CachedClassification | None = None) -> Any:
    """Publish the job's terminal result, unless this worker group already did; returns the delivery (a future
    the broker's acknowledgement resolves) or None when it was held back.

    ``reused``: the cached answer a cache hit reuses; its call's cost counts as saved for the result's tier.

    Kafka delivers at least once: after a crash or a rebalance, events are processed again from the last
    committed offset, and each would publish its job's result again. A marker per job in Redis lets the replay
    skip them. It is set once the broker has acknowledged the result (``send`` only buffers it): a crash in
    between can cost a duplicate, never a result. Until then the process remembers the job (``ctx.published``):
    a second request for the same pHash (a redelivery) could answer the same job in that window.
    """
    marker = f"{PUBLISHED_PREFIX}{ctx.settings.app_id}:{result.job_id}"
    marked = result.job_id in ctx.published or await _redis_call(ctx, "exists", marker)
    # Looked at again after Redis answered: on a redelivery two steps of this process (the fetch step's hit and the
    # dedupe step) may answer one job at the same moment, and the other may have published it meanwhile.
    if marked or result.job_id in ctx.published:
        metrics.results_suppressed_total.inc()
        log.info("job_id=%s: result already published (a redelivered event); not publishing another", result.job_id)
        return None
    ctx.published.remember(result.job_id, None)  # before the send, which may let that other step run
    try:
        delivery = await analysis_results_topic.send(key=result.job_id, value=result.to_bytes())
    except BaseException:
        ctx.published.forget(result.job_id)  # not published: a replay may publish it
        raise
    ctx.published.remember(result.job_id, delivery)
    ctx.published.mark_when_delivered(delivery, result.job_id, lambda: _redis_call(
        ctx, "set", marker, b"1", ex=ctx.settings.result_dedup_ttl_seconds))
    metrics.results_total.labels(status=result.status.value,
                                 source=result.cache.source.value if result.cache else "none").inc()
    if reused is not None and result.cache is not None and result.cache.hit:
        ctx.cost.record_saved(result.cache.source.value, reused.cost_usd)
    if result.error is not None:
        metrics.failures_total.labels(code=result.error.code.value).inc()
        log.warning("job_id=%s failed: %s %s", result.job_id, result.error.code, result.error.message)
    return delivery


async def _redis_call(ctx: WorkerContext, command: str, *args: Any, **kwargs: Any) -> Any:
    """One Redis command for the result markers; when Redis fails, results are still published."""
    try:
        return await getattr(ctx.redis, command)(*args, **kwargs)
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


async def read_event(ctx: WorkerContext, event: Any, model: type[GroupEvent], *, stage: str,
                     topic: str) -> GroupEvent | None:
    """An internal event of this worker group, or None: dead-lettered when it does not parse, skipped when another
    group made it (the internal topics have fixed names; that group answers it, see ImageHashed.origin)."""
    try:
        parsed = model.model_validate_json(event.value)
    except ValidationError as exc:
        await dead_letter_undecodable(event, stage=stage, topic=topic, error=exc)
        return None
    return parsed if parsed.of_group(ctx.settings.app_id) else None


async def fail_quietly(ctx: WorkerContext, job: ImageHashed, exc: Exception) -> None:
    """Fail ``job`` with INTERNAL_ERROR after a bug; a broker that cannot take the result is only logged."""
    try:
        await publish_result(ctx, failed_result(job.job_id, ErrorCode.INTERNAL_ERROR, type(exc).__name__,
                                                key=job.key, image_url=job.image_url, fetch=job.fetch))
    except Exception:  # the broker is unreachable: nothing more this agent can do for the job
        log.exception("job_id=%s: could not publish its failure", job.job_id)

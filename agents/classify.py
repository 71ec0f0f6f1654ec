"""vision.requests -> one paid model call per distinct pHash -> Redis + table -> results for the job and its waiters."""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import time
import zlib
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError

from models.errors import ErrorCode, PipelineError
from models.records import CachedClassification, CacheInfo, CacheSource, ImageHashed, VisionRequest, utcnow
from models.settings import VisionImageMode
from streams import metrics, near_index, reframed, reframed_index, resources, tables, topics
from streams.app import app
from streams.app import settings as app_settings
from streams.channels import vision_requests_topic
from streams.imaging import ImageLimits, content_digest, make_thumbnail, thumbnail_data_url
from streams.near_index import hamming
from streams.outcomes import dead_letter, dead_letter_undecodable, done_result, failed_result, publish_result

log = logging.getLogger(__name__)

# Model calls take seconds; this many run at once per worker (the client also caps them: VISION_CONCURRENCY).
CLASSIFY_CONCURRENCY = 32


@app.agent(vision_requests_topic, concurrency=CLASSIFY_CONCURRENCY)
async def classify(stream: Any) -> None:
    async for event in stream.events():
        try:
            request = VisionRequest.model_validate_json(event.value)
        except ValidationError as exc:
            await dead_letter_undecodable(event, stage="classify", topic=topics.VISION_REQUESTS, error=exc)
            continue
        if not request.job.of_group(app_settings().app_id):
            continue  # another worker group's request: that group pays for it, once
        try:
            await answer_request(request)
        except Exception:  # publishing itself failed: keep the actor alive; the timer re-issues lost calls
            log.exception("job_id=%s phash=%s: could not answer", request.job.job_id, request.phash)


class Delivery:
    """The jobs one request answers, worked out once (that takes them off the in-flight table), and which of
    them have had their result: a failure part-way through fails only the others, each job ends once."""

    def __init__(self, request: VisionRequest) -> None:
        self.request = request
        self.answered: set[str] = set()
        self._jobs: list[ImageHashed] | None = None

    def jobs(self) -> list[ImageHashed]:
        if self._jobs is None:
            try:
                self._jobs = _jobs_to_answer(self.request)
            except Exception:  # an unreadable table entry: its waiters are lost, the requesting job is not
                log.exception("phash=%s: could not read the call's waiters", self.request.phash)
                self._jobs = [self.request.job]
        return self._jobs

    def unanswered(self) -> list[ImageHashed]:
        return [job for job in self.jobs() if job.job_id not in self.answered]


async def answer_request(request: VisionRequest) -> None:
    delivery = Delivery(request)
    try:
        await _answer(delivery)
    except Exception as exc:  # a bug must not crash the actor and leave the jobs without their one result
        log.exception("job_id=%s phash=%s: unexpected error in classify", request.job.job_id, request.phash)
        await _fail_all(delivery, ErrorCode.INTERNAL_ERROR, type(exc).__name__)


async def _answer(delivery: Delivery) -> None:
    request = delivery.request
    res = await resources.ready()
    settings = res.settings
    while True:
        # Requests for one pHash run concurrently here (the agent's concurrency), and a second one exists after
        # a redelivery or a re-issued lost call: wait for a call under way in this worker, then look again.
        if (running := _calls_in_progress.get(request.phash)) is not None:
            await running.wait()
        # A redelivered request (after a crash or rebalance) may already be answered: never pay twice for it.
        entry = tables.fresh_result(request.phash, ttl_seconds=settings.cache_ttl_seconds,
                                    model_version=settings.model_version) or await _cached(res, request.phash)
        if entry is not None:
            # Another request for this pHash paid (a redelivery, a re-issued lost call): its features may not
            # have been with it. Posting them again is idempotent.
            await _index_reframed(res, request)
            await _answer_all(delivery, entry, paid=False)
            return
        if request.phash not in _calls_in_progress:  # nobody took the call while the cache was read
            break
    done = _calls_in_progress[request.phash] = asyncio.Event()
    try:
        await _call_and_answer(delivery, res)
    finally:
        del _calls_in_progress[request.phash]
        done.set()


# pHash -> set when this worker's model call for it has ended (answered, failed or crashed).
_calls_in_progress: dict[str, asyncio.Event] = {}


async def _call_and_answer(delivery: Delivery, res: resources.Resources) -> None:
    request = delivery.request
    settings = res.settings
    job = request.job
    try:
        image = await _image_for_model(res, delivery)  # the bytes that were hashed, or none
    except PipelineError as exc:
        await _fail_all(delivery, exc.code, exc.message)
        return
    if res.budget is not None and not (verdict := await res.budget.try_spend()).allowed:
        await _fail_all(delivery, ErrorCode.MODEL_BUDGET_EXCEEDED,
                        f"the service's model budget per {verdict.window} is used up; try again later")
        return
    started = time.monotonic()
    try:
        answer = await res.vision.classify(image)
    except PipelineError as exc:
        metrics.model_calls_total.labels(outcome=exc.code.value).inc()
        await _fail_all(delivery, exc.code, exc.message)
        return
    metrics.model_calls_total.labels(outcome="ok").inc()
    metrics.model_latency_seconds.observe(time.monotonic() - started)
    entry = CachedClassification(phash=request.phash, classification=answer.classification,
                                 model_version=settings.model_version, job_id=job.job_id, created_at=utcnow(),
                                 answered_by=answer.answered_by, cost_usd=answer.cost_usd)
    try:
        await res.cache.put(entry)  # Redis first: it is the shared source of truth other partitions read
    except RedisError as exc:  # the answer is paid for: deliver it; this worker's table still serves copies
        log.warning("job_id=%s phash=%s: could not cache the result (%s)", job.job_id, request.phash, exc)
    try:
        # Then the near-duplicate index (same TTL), the job -> pHash mapping, and the claim is dropped.
        await near_index.for_resources(res).add(entry)
    except RedisError as exc:  # the exact cache has it; only near-duplicates of it will miss
        log.warning("job_id=%s phash=%s: could not index the result (%s)", job.job_id, request.phash, exc)
    await _index_reframed(res, request)
    tables.remember_result(entry)
    await _answer_all(delivery, entry, paid=True, model_ms=answer.latency_ms, attempts=answer.attempts)


async def _index_reframed(res: resources.Resources, request: VisionRequest) -> None:
    """Post the photo's features (computed by dedupe's reframed lookup) in the reframed index, same TTL."""
    if not (res.settings.reframed_match and request.reframed_features):
        return
    try:
        blob = base64.b64decode(request.reframed_features)
        word_list = reframed.indexed_words(reframed.unpack(blob))
        await reframed_index.for_resources(res).add(request.phash, blob, word_list)
    except (RedisError, ValueError, zlib.error) as exc:  # reframed copies of it will pay; the result stands
        log.warning("phash=%s: could not index its features (%s)", request.phash, exc)


async def _cached(res: resources.Resources, phash: str) -> CachedClassification | None:
    try:
        return await res.cache.get(phash)
    except RedisError as exc:  # then the call is made: paying twice beats never answering
        log.warning("phash=%s: shared cache lookup failed (%s)", phash, exc)
        return None


def _jobs_to_answer(request: VisionRequest) -> list[ImageHashed]:
    """The requesting job and everyone who waited on this pHash, each once."""
    inflight = tables.finish_inflight(request.phash)
    jobs = [request.job, *(inflight.waiters if inflight else [])]
    if inflight is not None and inflight.owner.job_id != request.job.job_id:
        jobs.append(inflight.owner)  # the call was re-issued by another job; answer it too
    seen: set[str] = set()
    unique = []
    for job in jobs:
        if job.job_id not in seen:
            seen.add(job.job_id)
            unique.append(job)
    return unique


async def _answer_all(delivery: Delivery, entry: CachedClassification, *, paid: bool,
                      model_ms: float | None = None, attempts: int | None = None) -> None:
    request = delivery.request
    for job in delivery.unanswered():
        is_owner = paid and job.job_id == request.job.job_id
        source = CacheSource.MODEL if is_owner else CacheSource.INFLIGHT
        # Near-duplicates wait here too (ImageHashed.wait_on): their own pHash, and how far it is from this one.
        cache = CacheInfo(hit=not is_owner, source=source, phash=job.phash, model_version=entry.model_version,
                          distance=hamming(job.phash, request.phash),
                          reused_job_id=None if is_owner else entry.job_id,
                          matched_phash=request.phash if job.phash != request.phash else None)
        timings: dict[str, float] = {"wait": round((utcnow() - job.received_at).total_seconds() * 1000, 2)}
        if model_ms is not None:
            timings["model"] = round(model_ms, 2)
        if is_owner and attempts is not None:
            timings["model_attempts"] = attempts
        await publish_result(done_result(job, entry, cache, timings), reused=entry)
        delivery.answered.add(job.job_id)


async def _fail_all(delivery: Delivery, code: ErrorCode, message: str) -> None:
    request = delivery.request
    jobs = delivery.unanswered()
    res = await resources.ready()
    try:
        await near_index.for_resources(res).release(request.phash)  # near-duplicates arriving now pay themselves
    except RedisError as exc:  # the claim lapses after INFLIGHT_TIMEOUT_SECONDS
        log.warning("phash=%s: could not release the near-duplicate claim (%s)", request.phash, exc)
    await dead_letter(job_id=request.job.job_id, code=code, message=message, stage="classify",
                      topic=topics.VISION_REQUESTS, partition=None, offset=None,
                      original=request.model_dump_json(exclude={"job": {"thumbnail_b64"}}))
    for job in jobs:
        await publish_result(failed_result(job.job_id, code, message, key=job.key, image_url=job.image_url,
                                           fetch=job.fetch))
        delivery.answered.add(job.job_id)


# Thumbnails made at once per worker: each holds an image's bytes (up to MAX_IMAGE_BYTES) and a decode, so
# the classify agent's concurrency does not multiply the worker's memory (the fetch step has its own bound).
THUMBNAIL_SLOTS = 4
_thumbnail_slots: asyncio.Semaphore | None = None


async def _image_for_model(res: resources.Resources, delivery: Delivery) -> str:
    """What the model is shown: a small JPEG inline (by default) or the CDN URL, of the very bytes that were hashed.

    The image is fetched again (through the CDN that cached it when it was hashed: a few milliseconds beside a
    model call of seconds; the hashed-image events stay small for the hits) and its SHA-256 must be the one taken
    when it was hashed: an object replaced after upload-complete must not put its answer under the first image's
    pHash. A job whose object changed fails with IMAGE_CHANGED, and the bytes of a job waiting on this same pHash
    are shown instead; when no job's bytes can be shown, the last error is raised (and fails the rest).
    """
    request = delivery.request
    waiting = tables.get_inflight(request.phash)
    candidates = [request.job, *(w for w in (waiting.waiters if waiting else []) if w.phash == request.phash)]
    last: PipelineError | None = None
    for job in candidates:
        if job.job_id in delivery.answered:
            continue
        try:
            return await _verified_image(res, job)
        except PipelineError as exc:
            last = exc
            log.warning("job_id=%s phash=%s: no image for the model (%s: %s)", job.job_id, request.phash,
                        exc.code, exc.detail or exc.message)
            if exc.code is ErrorCode.IMAGE_CHANGED:
                await _fail_changed(delivery, job, exc)
    raise last or PipelineError(ErrorCode.INTERNAL_ERROR, "no image for the model")


async def _verified_image(res: resources.Resources, job: ImageHashed) -> str:
    global _thumbnail_slots
    settings = res.settings
    if job.thumbnail_b64:  # events written before thumbnails moved here: made from the hashed bytes
        return thumbnail_data_url(base64.b64decode(job.thumbnail_b64))
    if _thumbnail_slots is None:
        _thumbnail_slots = asyncio.Semaphore(THUMBNAIL_SLOTS)
    async with _thumbnail_slots:
        fetched = await res.fetcher.fetch(job.bucket, job.key)
        metrics.refetch_total.labels(source=fetched.info.source.value, cdn_cache=fetched.info.cdn_cache).inc()
        loop = asyncio.get_running_loop()
        if job.sha256 is None:  # an event from before digests were pinned: nothing to compare with
            log.warning("job_id=%s: hashed-image event without a digest; the bytes are not verified", job.job_id)
        elif (digest := await loop.run_in_executor(res.executor, content_digest, fetched.data)) != job.sha256:
            raise PipelineError(ErrorCode.IMAGE_CHANGED, "the image changed after it was uploaded",
                                detail=f"sha256 {digest} != {job.sha256} (hashed) for key={job.key}")
        if settings.vision_image_mode is not VisionImageMode.DATA_URL:
            # The model fetches the URL itself: the bytes behind it were the hashed ones just now (and the edge
            # keeps serving what it cached, for the TTLs of infra/cdn-policy.json).
            return job.image_url
        jpeg = await loop.run_in_executor(
            res.executor, functools.partial(make_thumbnail, fetched.data, max_pixels=settings.max_image_pixels,
                                            limits=ImageLimits.from_settings(settings)))
    return thumbnail_data_url(jpeg)


async def _fail_changed(delivery: Delivery, job: ImageHashed, exc: PipelineError) -> None:
    """This job's object is no longer the image it was hashed from: it ends here, the others may still be shown."""
    await dead_letter(job_id=job.job_id, code=exc.code, message=f"{exc.message} ({exc.detail})", stage="classify",
                      topic=topics.VISION_REQUESTS, partition=None, offset=None,
                      original=job.model_dump_json(exclude={"thumbnail_b64"}))
    await publish_result(failed_result(job.job_id, exc.code, exc.message, key=job.key, image_url=job.image_url,
                                       fetch=job.fetch))
    delivery.answered.add(job.job_id)

"""vision.requests -> one paid model call per distinct pHash -> Redis + table -> results for the job and its waiters.

Which jobs one call answers and what each is told is worked out by :mod:`streams.fan_out` (pure).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import time
import zlib
from typing import Any

from redis.exceptions import RedisError

from models.errors import ErrorCode, PipelineError
from models.records import CachedClassification, ImageHashed, VisionRequest, utcnow
from models.settings import VisionImageMode
from streams import metrics, reframed, topics
from streams.app import app
from streams.channels import vision_requests_topic
from streams.context import WorkerContext
from streams.dedupe_state import CallRegistry
from streams.fan_out import answers, jobs_of_call
from streams.imaging import ImageLimits, content_digest, make_thumbnail, thumbnail_data_url
from streams.outcomes import dead_letter, done_result, failed_result, publish_result, read_event
from streams.vision import VisionAnswer

log = logging.getLogger(__name__)

# Model calls take seconds; this many run at once per worker (the client also caps them: VISION_CONCURRENCY).
CLASSIFY_CONCURRENCY = 32


@app.agent(vision_requests_topic, concurrency=CLASSIFY_CONCURRENCY)
async def classify(stream: Any) -> None:
    async for event in stream.events():
        ctx = await app.context.ready()
        request = await read_event(ctx, event, VisionRequest, stage="classify", topic=topics.VISION_REQUESTS)
        if request is None:
            continue  # dead-lettered, or another worker group's request: that group pays for it, once
        try:
            await answer_request(ctx, request)
        except Exception:  # publishing itself failed: keep the actor alive; the timer re-issues lost calls
            log.exception("job_id=%s phash=%s: could not answer", request.job.job_id, request.phash)


class Delivery:
    """The jobs one request answers, and which of them have had their result: a failure part-way through fails
    only the others, each job ends once."""

    def __init__(self, request: VisionRequest) -> None:
        self.request = request
        self.answered: set[str] = set()
        self._jobs: list[ImageHashed] | None = None

    def jobs(self, calls: CallRegistry) -> list[ImageHashed]:
        """The call's jobs (the requester, the owner, the waiters), read from the in-flight table the first time
        (later: the same jobs). The entry stays there until their results are acknowledged (``finish``)."""
        if self._jobs is None:
            try:
                inflight = calls.entry(self.request.phash)
                self._jobs = jobs_of_call(self.request.job, inflight.owner if inflight else None,
                                          inflight.waiters if inflight else ())
            except Exception:  # an unreadable table entry: its waiters are lost, the requesting job is not
                log.exception("phash=%s: could not read the call's waiters", self.request.phash)
                self._jobs = [self.request.job]
        return self._jobs

    def finish(self, calls: CallRegistry) -> list[ImageHashed]:
        """Take the call off the in-flight table once every job on it is answered; else return the jobs that
        joined it since ``jobs`` and are still open (the caller answers them, then calls this again). The entry
        stays while any of them is open: a worker killed before their results are acknowledged leaves them in
        the table for the redelivered request (taking it first lost such late waiters in the crash test)."""
        try:
            inflight = calls.entry(self.request.phash)
            late = self.still_open(jobs_of_call(self.request.job, inflight.owner if inflight else None,
                                                inflight.waiters if inflight else ()))
            if not late:  # no await since the read: nobody joined in between
                calls.take(self.request.phash)
        except Exception:  # an unreadable entry: nothing more can be learnt from it
            log.exception("phash=%s: could not take the call off the in-flight table", self.request.phash)
            return []
        return late

    def still_open(self, jobs: list[ImageHashed]) -> list[ImageHashed]:
        return [job for job in jobs if job.job_id not in self.answered]


async def acknowledged(deliveries: list[Any]) -> None:
    """Wait until the broker has acknowledged these results (a refused one is logged: its job's replay answers)."""
    pending = [d for d in deliveries if isinstance(d, asyncio.Future)]
    for outcome in await asyncio.gather(*pending, return_exceptions=True):
        if isinstance(outcome, BaseException):
            log.warning("a result was not acknowledged by the broker: %s", outcome)


async def answer_request(ctx: WorkerContext, request: VisionRequest) -> None:
    delivery = Delivery(request)
    try:
        await _answer(ctx, delivery)
    except Exception as exc:  # a bug must not crash the actor and leave the jobs without their one result
        log.exception("job_id=%s phash=%s: unexpected error in classify", request.job.job_id, request.phash)
        await _fail_all(ctx, delivery, ErrorCode.INTERNAL_ERROR, type(exc).__name__)


async def _answer(ctx: WorkerContext, delivery: Delivery) -> None:
    phash = delivery.request.phash
    # The call's jobs are read now, while this worker holds the request's partition: a rebalance during the model
    # call can take the table's partition away (waiters that join meanwhile are picked up by Delivery.finish).
    delivery.jobs(ctx.calls)
    while True:
        # Requests for one pHash run concurrently here (the agent's concurrency), and a second one exists after
        # a redelivery or a re-issued lost call: wait for a call under way in this worker, then look again.
        await ctx.calls.wait_for_call_here(phash)
        # A redelivered request (after a crash or rebalance) may already be answered: never pay twice for it.
        entry = ctx.results.fresh(phash) or await _cached(ctx, phash)
        if entry is not None:
            # Another request for this pHash paid (a redelivery, a re-issued lost call): its features may not
            # have been with it. Posting them again is idempotent.
            await _index_reframed(ctx, delivery.request)
            await _answer_all(ctx, delivery, entry, paid=False)
            return
        if not ctx.calls.is_making(phash):  # nobody took the call while the cache was read
            break
    with ctx.calls.making(phash):
        await _call_and_answer(ctx, delivery)


async def _call_and_answer(ctx: WorkerContext, delivery: Delivery) -> None:
    request = delivery.request
    try:
        image = await _image_for_model(ctx, delivery)  # the bytes that were hashed, or none
        await _spend_budget(ctx)
        answer = await _classify(ctx, image)
    except PipelineError as exc:
        await _fail_all(ctx, delivery, exc.code, exc.message)
        return
    entry = CachedClassification(phash=request.phash, classification=answer.classification,
                                 model_version=ctx.settings.model_version, job_id=request.job.job_id,
                                 created_at=utcnow(), answered_by=answer.answered_by, cost_usd=answer.cost_usd)
    await _store(ctx, request, entry)
    await _answer_all(ctx, delivery, entry, paid=True, model_ms=answer.latency_ms, attempts=answer.attempts)


async def _spend_budget(ctx: WorkerContext) -> None:
    if ctx.budget is not None and not (verdict := await ctx.budget.try_spend()).allowed:
        raise PipelineError(ErrorCode.MODEL_BUDGET_EXCEEDED,
                            f"the service's model budget per {verdict.window} is used up; try again later")


async def _classify(ctx: WorkerContext, image: str) -> VisionAnswer:
    started = time.monotonic()
    try:
        answer = await ctx.vision.classify(image)
    except PipelineError as exc:
        metrics.model_calls_total.labels(outcome=exc.code.value).inc()
        raise
    metrics.model_calls_total.labels(outcome="ok").inc()
    metrics.model_latency_seconds.observe(time.monotonic() - started)
    return answer


async def _store(ctx: WorkerContext, request: VisionRequest, entry: CachedClassification) -> None:
    """Redis first (the shared source of truth other partitions read), then the near-duplicate index (same TTL,
    the job -> pHash mapping; the claim is dropped), the reframed index, and this partition's table."""
    try:
        await ctx.cache.put(entry)
    except RedisError as exc:  # the answer is paid for: deliver it; this worker's table still serves copies
        log.warning("job_id=%s phash=%s: could not cache the result (%s)", entry.job_id, entry.phash, exc)
    try:
        await ctx.near.add(entry)
    except RedisError as exc:  # the exact cache has it; only near-duplicates of it will miss
        log.warning("job_id=%s phash=%s: could not index the result (%s)", entry.job_id, entry.phash, exc)
    await _index_reframed(ctx, request)
    ctx.results.remember(entry)


async def _index_reframed(ctx: WorkerContext, request: VisionRequest) -> None:
    """Post the photo's features (computed by dedupe's reframed lookup) in the reframed index, same TTL."""
    if not (ctx.settings.reframed_match and request.reframed_features):
        return
    try:
        blob = base64.b64decode(request.reframed_features)
        word_list = reframed.indexed_words(reframed.unpack(blob))
        await ctx.reframed.index.add(request.phash, blob, word_list)
    except (RedisError, ValueError, zlib.error) as exc:  # reframed copies of it will pay; the result stands
        log.warning("phash=%s: could not index its features (%s)", request.phash, exc)


async def _cached(ctx: WorkerContext, phash: str) -> CachedClassification | None:
    try:
        return await ctx.cache.get(phash)
    except RedisError as exc:  # then the call is made: paying twice beats never answering
        log.warning("phash=%s: shared cache lookup failed (%s)", phash, exc)
        return None


async def _answer_all(ctx: WorkerContext, delivery: Delivery, entry: CachedClassification, *, paid: bool,
                      model_ms: float | None = None, attempts: int | None = None) -> None:
    request = delivery.request
    jobs = delivery.still_open(delivery.jobs(ctx.calls))
    while jobs:
        sent = []
        for answer in answers(jobs, phash=request.phash, requester_job_id=request.job.job_id, entry=entry,
                              paid=paid, now=utcnow(), model_ms=model_ms, attempts=attempts):
            sent.append(await publish_result(ctx, done_result(answer.job, entry, answer.cache, answer.timings_ms),
                                             reused=entry))
            delivery.answered.add(answer.job.job_id)
        # The call leaves the in-flight table only once the broker has its results: a worker that dies before
        # then has the request redelivered, which answers them again (the result markers hold back repeats).
        # Taking it off first lost the waiters of a call killed in between.
        await acknowledged(sent)
        jobs = delivery.finish(ctx.calls)


async def _fail_all(ctx: WorkerContext, delivery: Delivery, code: ErrorCode, message: str) -> None:
    request = delivery.request
    jobs = delivery.still_open(delivery.jobs(ctx.calls))
    await ctx.calls.release_claim(request.phash)  # near-duplicates arriving now pay themselves
    await dead_letter(job_id=request.job.job_id, code=code, message=message, stage="classify",
                      topic=topics.VISION_REQUESTS, partition=None, offset=None,
                      original=request.model_dump_json(exclude={"job": {"thumbnail_b64"}}))
    while jobs:
        sent = []
        for job in jobs:
            sent.append(await publish_result(ctx, failed_result(job.job_id, code, message, key=job.key,
                                                                image_url=job.image_url, fetch=job.fetch)))
            delivery.answered.add(job.job_id)
        await acknowledged(sent)  # as in _answer_all: off the table once the broker has the results
        jobs = delivery.finish(ctx.calls)


async def _image_for_model(ctx: WorkerContext, delivery: Delivery) -> str:
    """What the model is shown: a small JPEG inline (by default) or the CDN URL, of the very bytes that were hashed.

    The image is fetched again (through the CDN that cached it when it was hashed: a few milliseconds beside a
    model call of seconds; the hashed-image events stay small for the hits) and its SHA-256 must be the one taken
    when it was hashed: an object replaced after upload-complete must not put its answer under the first image's
    pHash. A job whose object changed fails with IMAGE_CHANGED, and the bytes of a job waiting on this same pHash
    are shown instead; when no job's bytes can be shown, the last error is raised (and fails the rest).
    """
    request = delivery.request
    waiting = ctx.calls.entry(request.phash)
    candidates = [request.job, *(w for w in (waiting.waiters if waiting else []) if w.phash == request.phash)]
    last: PipelineError | None = None
    for job in candidates:
        if job.job_id in delivery.answered:
            continue
        try:
            return await _verified_image(ctx, job)
        except PipelineError as exc:
            last = exc
            log.warning("job_id=%s phash=%s: no image for the model (%s: %s)", job.job_id, request.phash,
                        exc.code, exc.detail or exc.message)
            if exc.code is ErrorCode.IMAGE_CHANGED:
                await _fail_changed(ctx, delivery, job, exc)
    raise last or PipelineError(ErrorCode.INTERNAL_ERROR, "no image for the model")


async def _verified_image(ctx: WorkerContext, job: ImageHashed) -> str:
    settings = ctx.settings
    async with ctx.thumbnail_slots:
        fetched = await ctx.fetcher.fetch(job.bucket, job.key)
        metrics.refetch_total.labels(source=fetched.info.source.value, cdn_cache=fetched.info.cdn_cache).inc()
        loop = asyncio.get_running_loop()
        if job.sha256 is None:  # an event from before digests were pinned: nothing to compare with
            log.warning("job_id=%s: hashed-image event without a digest; the bytes are not verified", job.job_id)
        elif (digest := await loop.run_in_executor(ctx.executor, content_digest, fetched.data)) != job.sha256:
            raise PipelineError(ErrorCode.IMAGE_CHANGED, "the image changed after it was uploaded",
                                detail=f"sha256 {digest} != {job.sha256} (hashed) for key={job.key}")
        if settings.vision_image_mode is not VisionImageMode.DATA_URL:
            # The model fetches the URL itself: the bytes behind it were the hashed ones just now (and the edge
            # keeps serving what it cached, for the TTLs of infra/cdn-policy.json).
            return job.image_url
        jpeg = await loop.run_in_executor(
            ctx.executor, functools.partial(make_thumbnail, fetched.data, max_pixels=settings.max_image_pixels,
                                            limits=ImageLimits.from_settings(settings)))
    return thumbnail_data_url(jpeg)


async def _fail_changed(ctx: WorkerContext, delivery: Delivery, job: ImageHashed, exc: PipelineError) -> None:
    """This job's object is no longer the image it was hashed from: it ends here, the others may still be shown."""
    await dead_letter(job_id=job.job_id, code=exc.code, message=f"{exc.message} ({exc.detail})", stage="classify",
                      topic=topics.VISION_REQUESTS, partition=None, offset=None,
                      original=job.model_dump_json(exclude={"thumbnail_b64"}))
    await publish_result(ctx, failed_result(job.job_id, exc.code, exc.message, key=job.key, image_url=job.image_url,
                                            fetch=job.fetch))
    delivery.answered.add(job.job_id)

"""images.hashed -> this partition's table -> Redis -> near-duplicate index -> reframed tier -> result | wait | pay.

Events are keyed by pHash, so every copy of one image is handled here, on one partition, one at a time:
"one model call per distinct image, even under a burst" needs no distributed lock.

This module reads and acts; :mod:`streams.dedupe_decision` decides (the tiers and their order are described
there). Near-duplicates (another pHash within NEAR_DUPLICATE_MAX_DISTANCE bits) land on other partitions, so they
are found through the index in Redis that every worker shares (:mod:`streams.near_index`); a model call under way
for a near-duplicate is waited on by re-sending the job keyed by that call's pHash (``ImageHashed.wait_on``), so
the dedupe step of the call's own partition adds it to the call's waiters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
from redis.exceptions import RedisError

from models.errors import PipelineError
from models.records import CacheInfo, CacheSource, ImageHashed, VisionRequest, utcnow
from streams import metrics, near_index, topics
from streams.app import app
from streams.channels import images_hashed_topic, vision_requests_topic
from streams.context import WorkerContext
from streams.dedupe_decision import (
    Answer,
    AskAgain,
    Call,
    Decision,
    Lookup,
    Pay,
    Read,
    ReturnHome,
    Seen,
    WaitHere,
    WaitOn,
    decide,
)
from streams.outcomes import done_result, fail_quietly, publish_result, read_event
from streams.reframed_index import ReframedMatch

log = logging.getLogger(__name__)


@app.agent(images_hashed_topic)
async def dedupe(stream: Any) -> None:
    async for event in stream.events():
        ctx = await app.context.ready()
        job = await read_event(ctx, event, ImageHashed, stage="dedupe", topic=topics.IMAGES_HASHED)
        if job is None:
            continue
        try:
            await deduplicate(ctx, job)
        except Exception as exc:  # a bug must not crash the agent and leave the job without its one result
            log.exception("job_id=%s phash=%s: unexpected error in dedupe", job.job_id, job.phash)
            if not ctx.calls.holds(job):  # else the call it owns or waits on answers it (never twice)
                await fail_quietly(ctx, job, exc)


async def deduplicate(ctx: WorkerContext, job: ImageHashed) -> None:
    """Read what the decision needs (the local state again after every await), then carry the decision out."""
    started = time.monotonic()
    metrics.events_total.labels(stage="dedupe").inc()
    seen = Seen(job, near_on=ctx.settings.near_duplicate_max_distance > 0, reframed_on=ctx.settings.reframed_match)
    while isinstance(decision := decide(seen := _read_local(ctx, seen)), Lookup):
        seen = await _READS[decision.what](ctx, seen)
    await _carry_out(ctx, job, decision, started)


def _read_local(ctx: WorkerContext, seen: Seen) -> Seen:
    """This partition's table answer and call for the pHash looked at (synchronous: nothing runs in between)."""
    inflight = ctx.calls.entry(seen.looked_at)
    call = None if inflight is None else Call(inflight.owner, tuple(inflight.waiters), ctx.calls.is_live(inflight))
    return seen.read_again(ctx.results.fresh(seen.looked_at), call)


async def read_shared(ctx: WorkerContext, seen: Seen) -> Seen:
    """The Redis entry of the pHash looked at; a Redis that fails is a miss, never a failed job."""
    try:
        return replace(seen, shared=await ctx.cache.get(seen.looked_at))
    except RedisError as exc:
        log.warning("job_id=%s: shared cache lookup failed (%s); treating it as a miss", seen.job.job_id, exc)
        return replace(seen, shared=None)


async def _read_near(ctx: WorkerContext, seen: Seen) -> Seen:
    """Ask the shared index for a result or a call under way within T bits; claim this pHash if there is none.

    A job that already went back from a wait (``near_hops``) claims without looking at claims again, so it
    cannot bounce between partitions. An index that fails is a miss: the job pays, it is never failed for it.
    """
    job, settings = seen.job, ctx.settings
    try:
        match = await ctx.near.lookup(job.phash, claim=settings.near_duplicate_wait,
                                      pending=settings.near_duplicate_wait and job.near_hops == 0)
    except RedisError as exc:
        log.warning("job_id=%s phash=%s: near-duplicate lookup failed (%s); treating it as a miss",
                    job.job_id, job.phash, exc)
        match = near_index.MISS
    return replace(seen, near=match)


async def _read_reframed(ctx: WorkerContext, seen: Seen) -> Seen:
    """The reframed tier. Anything failing is a miss: the job pays, never fails."""
    job = seen.job
    try:
        found = await ctx.reframed.lookup(bucket=job.bucket, key=job.key, sha256=job.sha256, phash=job.phash)
    except (RedisError, PipelineError, aiohttp.ClientError, TimeoutError) as exc:
        log.warning("job_id=%s phash=%s: reframed lookup failed (%s); treating it as a miss", job.job_id, job.phash,
                    exc)
        found = ReframedMatch()
    except Exception:  # a bug in this optional tier must not fail the job: it pays for its call instead
        log.exception("job_id=%s phash=%s: reframed lookup crashed; treating it as a miss", job.job_id, job.phash)
        found = ReframedMatch()
    else:
        log.info("job_id=%s phash=%s reframed: %s after %d candidates %s", job.job_id, job.phash,
                 (found.verdict.describe() + f" ({found.verdict.reason})") if found.verdict else "no candidate",
                 found.verified, found.timings_ms)
    return replace(seen, reframed=found)


_READS: dict[Read, Callable[[WorkerContext, Seen], Awaitable[Seen]]] = {
    Read.SHARED: read_shared, Read.NEAR: _read_near, Read.REFRAMED: _read_reframed}


async def _carry_out(ctx: WorkerContext, job: ImageHashed, decision: Decision, started: float) -> None:
    if getattr(decision, "release_claim", False):
        await ctx.calls.release_claim(job.phash)
    match decision:
        case Answer():
            await answer(ctx, job, decision, started)
        case WaitHere():
            _wait_here(ctx, job, decision)
        case WaitOn(phash=phash, distance=distance):
            log.info("job_id=%s phash=%s waits on the call for near-duplicate phash=%s (%s bits)", job.job_id,
                     job.phash, phash, distance)
            await images_hashed_topic.send(key=phash, value=job.model_copy(update={"wait_on": phash}).to_bytes())
        case ReturnHome():
            log.info("job_id=%s: the call for phash=%s is gone; handling phash=%s on its own", job.job_id,
                     job.wait_on, job.phash)
            await images_hashed_topic.send(key=job.phash, value=job.model_copy(
                update={"wait_on": None, "near_hops": job.near_hops + 1}).to_bytes())
        case AskAgain(owner=owner):
            log.info("job_id=%s phash=%s: its event was redelivered; sending its model request again", owner.job_id,
                     owner.phash)
            await send_request_again(owner)
        case Pay():
            await _pay(ctx, job, decision)


async def answer(ctx: WorkerContext, job: ImageHashed, decision: Answer, started: float) -> None:
    """Publish the job's result from a cache tier (here, or in the fetch step for a Redis hit)."""
    entry = decision.entry
    if decision.remember:
        ctx.results.remember(entry)
    metrics.cache_lookups_total.labels(source=decision.source.value).inc()
    cache = CacheInfo(hit=True, source=decision.source, phash=job.phash, model_version=entry.model_version,
                      distance=decision.distance, reused_job_id=entry.job_id if entry.job_id != job.job_id else None,
                      matched_phash=entry.phash if entry.phash != job.phash else None, check=decision.check)
    lookup_ms = round((time.monotonic() - started) * 1000, 2)
    await publish_result(ctx, done_result(job, entry, cache, {"dedupe": lookup_ms}), reused=entry)


def _wait_here(ctx: WorkerContext, job: ImageHashed, decision: WaitHere) -> None:
    ctx.calls.add_waiter(decision.phash, job)
    metrics.cache_lookups_total.labels(source=CacheSource.INFLIGHT.value).inc()
    log.info("job_id=%s waits on job_id=%s for phash=%s", job.job_id, decision.owner_job_id, decision.phash)


async def send_request_again(owner: ImageHashed) -> None:
    """Send the model request of a call again: its owner's event came again (redelivered after a crash or a
    rebalance; the worker that sent the request may have died before it left, and waiting would leave every
    waiter stuck until the lost-call timer), or the call looks lost (agents/maintenance.py). A call that did get
    through is answered from the cache or joined in classify (one call per pHash per worker), never paid twice."""
    await vision_requests_topic.send(
        key=owner.phash, value=VisionRequest(phash=owner.phash, job=owner, requested_at=utcnow()).to_bytes())


async def _pay(ctx: WorkerContext, job: ImageHashed, decision: Pay) -> None:
    """A miss (or a call presumed lost): this job pays for the model call; earlier waiters keep waiting on it."""
    ctx.calls.start(job, decision.inherit)
    metrics.cache_lookups_total.labels(source=CacheSource.MODEL.value).inc()
    await vision_requests_topic.send(key=job.phash, value=VisionRequest(
        phash=job.phash, job=job, requested_at=utcnow(), reframed_features=decision.features).to_bytes())


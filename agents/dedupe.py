"""images.hashed -> this partition's table -> Redis -> near-duplicate index -> result (hit) | wait | vision.requests.

Events are keyed by pHash, so every copy of one image is handled here, on one partition, one at a time:
"one model call per distinct image, even under a burst" needs no distributed lock.

Near-duplicates (another pHash within NEAR_DUPLICATE_MAX_DISTANCE bits: a re-encode, a resize, a screenshot) land
on other partitions, so they are found through the index in Redis that every worker shares
(:mod:`streams.near_index`): a cached result is reused (``cache.source = "near"``), and a model call under way
for a near-duplicate is waited on by re-sending the job keyed by that call's pHash (``ImageHashed.wait_on``), so
the dedupe step of the call's own partition adds it to the call's waiters.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

import aiohttp
from pydantic import ValidationError
from redis.exceptions import RedisError

from models.errors import ErrorCode, PipelineError
from models.records import CachedClassification, CacheInfo, CacheSource, ImageHashed, VisionRequest, utcnow
from streams import metrics, near_index, reframed_index, resources, tables, topics
from streams.app import app
from streams.app import settings as app_settings
from streams.channels import dedupe_maintenance_topic, images_hashed_topic, vision_requests_topic
from streams.near_index import INVALIDATED_KEY, NearKind, NearMatch, hamming
from streams.outcomes import dead_letter_undecodable, done_result, failed_result, publish_result

log = logging.getLogger(__name__)

# How often each worker reads the invalidations operators made (streams/invalidation.py).
INVALIDATION_POLL_SECONDS = 2.0
# Invalidation records are re-read this far back, so a writer's clock running a little behind loses none.
INVALIDATION_LOOKBACK_SECONDS = 60.0


@app.agent(images_hashed_topic)
async def dedupe(stream: Any) -> None:
    async for event in stream.events():
        try:
            job = ImageHashed.model_validate_json(event.value)
        except ValidationError as exc:
            await dead_letter_undecodable(event, stage="dedupe", topic=topics.IMAGES_HASHED, error=exc)
            continue
        if not job.of_group(app_settings().app_id):
            continue  # another worker group's fetch: that group answers it (see ImageHashed.origin)
        try:
            await deduplicate(job)
        except Exception as exc:  # a bug must not crash the agent and leave the job without its one result
            log.exception("job_id=%s phash=%s: unexpected error in dedupe", job.job_id, job.phash)
            if not tables.is_handed_on(job):  # else the call it owns or waits on answers it (never twice)
                await _fail_quietly(job, exc)


async def _fail_quietly(job: ImageHashed, exc: Exception) -> None:
    try:
        await publish_result(failed_result(job.job_id, ErrorCode.INTERNAL_ERROR, type(exc).__name__,
                                           key=job.key, image_url=job.image_url, fetch=job.fetch))
    except Exception:  # the broker is unreachable: nothing more this agent can do for the job
        log.exception("job_id=%s: could not publish its failure", job.job_id)


async def deduplicate(job: ImageHashed) -> None:
    res = await resources.ready()
    settings = res.settings
    started = time.monotonic()
    metrics.events_total.labels(stage="dedupe").inc()
    if job.wait_on is not None:
        await _join_near_call(job, started)
        return

    entry = _table_hit(job.phash)
    if entry is not None:
        await _answer_from_cache(job, entry, CacheSource.TABLE, started)
        return
    entry = await _shared_cache_get(res, job)
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
        if inflight.owner.job_id == job.job_id:
            await _ask_again(inflight)
            return
        tables.add_waiter(job.phash, job)
        metrics.cache_lookups_total.labels(source=CacheSource.INFLIGHT.value).inc()
        log.info("job_id=%s waits on job_id=%s for phash=%s", job.job_id, inflight.owner.job_id, job.phash)
        return

    match = near_index.MISS
    if inflight is None and settings.near_duplicate_max_distance > 0:
        match = await _near_lookup(res, job)
        if match.kind is NearKind.NEAR:
            assert match.entry is not None
            await _answer_from_cache(job, match.entry, CacheSource.NEAR, started, distance=match.distance or 0)
            return
        if match.kind is NearKind.PENDING:
            assert match.phash is not None
            await _wait_on_near_call(job, match)
            return
    features: str | None = None
    if inflight is None and settings.reframed_match:
        found = await _reframed_lookup(res, job)
        if found.entry is not None and found.verdict is not None and found.verdict.accepted:
            await _release_claim(res, job.phash, match)
            await _answer_from_cache(job, found.entry, CacheSource.REFRAMED, started,
                                     distance=hamming(job.phash, found.entry.phash), check=found.verdict.describe())
            return
        features = base64.b64encode(found.stored).decode("ascii") if found.stored else None
    if inflight is None and (settings.near_duplicate_max_distance > 0 or settings.reframed_match):
        # Nothing near (this pHash is now claimed, if claims are on). The await let other events run: a result
        # or a call for this very pHash may have appeared meanwhile.
        entry = _table_hit(job.phash)
        if entry is not None:
            await _release_claim(res, job.phash, match)
            await _answer_from_cache(job, entry, CacheSource.TABLE, started)
            return
        inflight = tables.get_inflight(job.phash)
        if inflight is not None and inflight.age() < settings.inflight_timeout_seconds:
            await _release_claim(res, job.phash, match)
            tables.add_waiter(job.phash, job)
            metrics.cache_lookups_total.labels(source=CacheSource.INFLIGHT.value).inc()
            return
    # A miss (or a call presumed lost): this job pays for the model call; earlier waiters keep waiting on it.
    waiters = ([inflight.owner, *inflight.waiters] if inflight is not None else [])
    tables.start_inflight(job, waiters)
    metrics.cache_lookups_total.labels(source=CacheSource.MODEL.value).inc()
    await vision_requests_topic.send(
        key=job.phash, value=VisionRequest(phash=job.phash, job=job, requested_at=utcnow(),
                                           reframed_features=features).to_bytes()
    )


async def _reframed_lookup(res: resources.Resources, job: ImageHashed) -> reframed_index.ReframedMatch:
    """The reframed tier (only after the pHash tiers missed): features off the event loop, candidates from the
    visual-word index, a geometric and a pixel check. Anything failing is a miss: the job pays, never fails."""
    try:
        found = await reframed_index.lookup(res, bucket=job.bucket, key=job.key, sha256=job.sha256, phash=job.phash)
    except (RedisError, PipelineError, aiohttp.ClientError, TimeoutError) as exc:
        log.warning("job_id=%s phash=%s: reframed lookup failed (%s); treating it as a miss", job.job_id, job.phash,
                    exc)
        return reframed_index.ReframedMatch()
    except Exception:  # a bug in this optional tier must not fail the job: it pays for its call instead
        log.exception("job_id=%s phash=%s: reframed lookup crashed; treating it as a miss", job.job_id, job.phash)
        return reframed_index.ReframedMatch()
    log.info("job_id=%s phash=%s reframed: %s after %d candidates %s", job.job_id, job.phash,
             (found.verdict.describe() + f" ({found.verdict.reason})") if found.verdict else "no candidate",
             found.verified, found.timings_ms)
    return found


async def _ask_again(inflight: tables.Inflight) -> None:
    """The owner's own event came again (redelivered after a crash or a rebalance): the worker that sent its model
    request may have died before the request left it, and waiting on it would leave every waiter stuck until the
    lost-call timer (INFLIGHT_TIMEOUT_SECONDS). Send the request again: a call that did get through is answered
    from the cache or joined in classify (one call per pHash per worker), never paid twice."""
    owner = inflight.owner
    log.info("job_id=%s phash=%s: its event was redelivered; sending its model request again", owner.job_id,
             owner.phash)
    await vision_requests_topic.send(
        key=owner.phash, value=VisionRequest(phash=owner.phash, job=owner, requested_at=utcnow()).to_bytes()
    )


async def _shared_cache_get(res: resources.Resources, job: ImageHashed, phash: str | None = None
                            ) -> CachedClassification | None:
    """The Redis entry for ``phash`` (default: the job's); a Redis that fails is a miss, never a failed job."""
    try:
        return await res.cache.get(phash or job.phash)
    except RedisError as exc:
        log.warning("job_id=%s: shared cache lookup failed (%s); treating it as a miss", job.job_id, exc)
        return None


def _table_hit(phash: str) -> CachedClassification | None:
    settings = app_settings()
    return tables.fresh_result(phash, ttl_seconds=settings.cache_ttl_seconds, model_version=settings.model_version)


async def _answer_from_cache(job: ImageHashed, entry: CachedClassification, source: CacheSource,
                             started: float, *, distance: int = 0, check: str | None = None) -> None:
    metrics.cache_lookups_total.labels(source=source.value).inc()
    cache = CacheInfo(hit=True, source=source, phash=job.phash, model_version=entry.model_version, distance=distance,
                      reused_job_id=entry.job_id if entry.job_id != job.job_id else None,
                      matched_phash=entry.phash if entry.phash != job.phash else None, check=check)
    lookup_ms = round((time.monotonic() - started) * 1000, 2)
    await publish_result(done_result(job, entry, cache, {"dedupe": lookup_ms}), reused=entry)


# --- near-duplicates -------------------------------------------------------------------------------------------


async def _near_lookup(res: resources.Resources, job: ImageHashed) -> NearMatch:
    """Ask the shared index for a result or a call under way within T bits; claim this pHash if there is none.

    A job that already went back from a wait (``near_hops``) claims without looking at claims again, so it
    cannot bounce between partitions. An index that fails is a miss: the job pays, it is never failed for it.
    """
    settings = res.settings
    wait = settings.near_duplicate_wait and job.near_hops == 0
    try:
        return await near_index.for_resources(res).lookup(job.phash, claim=settings.near_duplicate_wait,
                                                          pending=wait)
    except RedisError as exc:
        log.warning("job_id=%s phash=%s: near-duplicate lookup failed (%s); treating it as a miss",
                    job.job_id, job.phash, exc)
        return near_index.MISS


async def _release_claim(res: resources.Resources, phash: str, match: NearMatch) -> None:
    if match.kind is NearKind.CLAIMED:
        await _near_release(res, phash)


async def _near_release(res: resources.Resources, phash: str) -> None:
    try:
        await near_index.for_resources(res).release(phash)
    except RedisError as exc:  # the claim then lapses after INFLIGHT_TIMEOUT_SECONDS
        log.warning("phash=%s: could not release the near-duplicate claim (%s)", phash, exc)


async def _wait_on_near_call(job: ImageHashed, match: NearMatch) -> None:
    """Send the job to the partition of the near-duplicate's call (keyed by its pHash), to wait on it there."""
    assert match.phash is not None
    log.info("job_id=%s phash=%s waits on the call for near-duplicate phash=%s (%s bits)", job.job_id, job.phash,
             match.phash, match.distance)
    await images_hashed_topic.send(key=match.phash, value=job.model_copy(update={"wait_on": match.phash}).to_bytes())


async def _join_near_call(job: ImageHashed, started: float) -> None:
    """On the partition of ``job.wait_on``: join its call as a waiter, or take its result if it is done."""
    res = await resources.ready()
    settings = res.settings
    owner = job.wait_on
    assert owner is not None
    distance = hamming(job.phash, owner)
    for attempt in range(2):
        entry = _table_hit(owner)
        if entry is not None:
            await _answer_from_cache(job, entry, CacheSource.NEAR, started, distance=distance)
            return
        inflight = tables.get_inflight(owner)
        if inflight is not None and inflight.age() < settings.inflight_timeout_seconds:
            tables.add_waiter(owner, job)
            metrics.cache_lookups_total.labels(source=CacheSource.INFLIGHT.value).inc()
            log.info("job_id=%s waits on job_id=%s for near-duplicate phash=%s", job.job_id, inflight.owner.job_id,
                     owner)
            return
        if attempt == 0:
            entry = await _shared_cache_get(res, job, owner)  # answered on another worker, or before this one
            if entry is not None:
                await _answer_from_cache(job, entry, CacheSource.NEAR, started, distance=distance)
                return
    # The call went away without a result (it failed, or was given up): the job goes back to its own pHash.
    log.info("job_id=%s: the call for phash=%s is gone; handling phash=%s on its own", job.job_id, owner, job.phash)
    await images_hashed_topic.send(
        key=job.phash, value=job.model_copy(update={"wait_on": None, "near_hops": job.near_hops + 1}).to_bytes()
    )


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


@app.timer(interval=INVALIDATION_POLL_SECONDS)
async def follow_invalidations() -> None:
    res = await resources.ready()
    try:
        await apply_invalidations(res)
    except RedisError as exc:
        log.warning("could not read invalidations: %s", exc)


_invalidations_read_until: float | None = None


async def apply_invalidations(res: resources.Resources) -> list[str]:
    """Stop serving table copies of results invalidated in Redis; returns the pHashes read this time.

    On start the worker reads every record younger than the cache TTL (older ones cannot have a table copy).
    """
    global _invalidations_read_until
    settings = res.settings
    now = time.time()
    cutoff = now - settings.cache_ttl_seconds
    since = cutoff if _invalidations_read_until is None else max(
        cutoff, _invalidations_read_until - INVALIDATION_LOOKBACK_SECONDS)
    records: list[tuple[bytes | str, float]] = await res.redis.zrangebyscore(  # type: ignore[assignment]
        INVALIDATED_KEY, since, "+inf", withscores=True)
    phashes = []
    for member, at in records:
        phash = member.decode() if isinstance(member, bytes) else str(member)
        tables.revoke(phash, float(at))
        phashes.append(phash)
        copy = tables.results_by_phash.get(phash)
        if copy and tables.is_revoked(phash, copy["stored_at"]):  # delete it on its partition (changelog)
            await dedupe_maintenance_topic.send(key=phash, value=b"invalidate")
    _invalidations_read_until = max([now, *(float(at) for _, at in records)])
    tables.forget_revocations_before(cutoff)
    await res.redis.zremrangebyscore(INVALIDATED_KEY, "-inf", cutoff)  # no table copy can be older
    return phashes


@app.agent(dedupe_maintenance_topic)
async def maintain_dedupe_state(stream: Any) -> None:
    async for event in stream.events():
        phash = event.key.decode() if isinstance(event.key, bytes) else event.key
        if event.value in (b"expire", b"invalidate"):
            tables.fresh_result(phash, ttl_seconds=app_settings().cache_ttl_seconds,
                                model_version=app_settings().model_version)  # deletes it when expired/revoked
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
        await _near_release(await resources.ready(), phash)
        for job in [inflight.owner, *inflight.waiters]:
            await publish_result(failed_result(
                job.job_id, ErrorCode.MODEL_TIMEOUT, "no answer from the vision model after 3 requests",
                key=job.key, image_url=job.image_url, fetch=job.fetch))
        return
    log.warning("phash=%s: model call of job_id=%s presumed lost, re-requesting", phash, inflight.owner.job_id)
    tables.start_inflight(inflight.owner, inflight.waiters, attempts=inflight.attempts + 1)
    res = await resources.ready()
    if res.settings.near_duplicate_wait and res.settings.near_duplicate_max_distance > 0:
        try:
            await near_index.for_resources(res).claim(phash)  # near-duplicates keep waiting on the new request
        except RedisError as exc:
            log.warning("phash=%s: could not renew the near-duplicate claim (%s)", phash, exc)
    await vision_requests_topic.send(
        key=phash, value=VisionRequest(phash=phash, job=inflight.owner, requested_at=utcnow()).to_bytes()
    )

"""Upkeep of the dedupe step's tables: expired answers, invalidated answers, model calls that look lost.

Tables can only be changed inside a stream (that is how Faust knows the changelog partition), so the timers send
a :class:`models.records.MaintenanceCommand` to ``waste.dedupe.maintenance`` keyed by the pHash, and the agent
here carries it out on that pHash's partition. Operators' invalidations (streams/invalidation.py) are read from
Redis every INVALIDATION_POLL_SECONDS into the worker's revocations, so a table copy is never served again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.exceptions import RedisError

from agents.dedupe import send_request_again
from models.errors import ErrorCode
from models.records import MaintenanceCommand
from streams.app import app
from streams.channels import dedupe_maintenance_topic
from streams.context import WorkerContext
from streams.near_index import INVALIDATED_KEY
from streams.outcomes import failed_result, publish_result

log = logging.getLogger(__name__)

STALE_CHECK_SECONDS = 30.0
# Answers are served only while younger than CACHE_TTL_SECONDS (readers check), so deleting expired ones only frees
# space and can wait: a sweep reads the whole results table (a million entries on RocksDB cost tens of seconds of
# CPU), so it runs every few minutes, in batches (docs/SCALING.md, "Tables").
EXPIRY_SWEEP_SECONDS = 600.0
# How often each worker reads the invalidations operators made (streams/invalidation.py).
INVALIDATION_POLL_SECONDS = 2.0
# Invalidation records are re-read this far back, so a writer's clock running a little behind loses none.
INVALIDATION_LOOKBACK_SECONDS = 60.0
# A lost call is asked for this many times in all before its jobs fail with MODEL_TIMEOUT.
MAX_CALL_ATTEMPTS = 3


@app.timer(interval=STALE_CHECK_SECONDS)
async def find_stale_entries() -> None:
    """Ask for seemingly lost model calls to be dealt with, on their own partitions."""
    ctx = await app.context.ready()
    for phash in ctx.calls.presumed_lost():
        await send(phash, MaintenanceCommand.INFLIGHT)


@app.timer(interval=EXPIRY_SWEEP_SECONDS)
async def find_expired_answers() -> None:
    """Ask for expired answers to be deleted, on their own partitions."""
    ctx = await app.context.ready()
    async for expired in ctx.results.expired_batches():
        for phash in expired:
            await send(phash, MaintenanceCommand.EXPIRE)


async def send(phash: str, command: MaintenanceCommand) -> None:
    await dedupe_maintenance_topic.send(key=phash, value=command.to_bytes())


@app.agent(dedupe_maintenance_topic)
async def maintain_dedupe_state(stream: Any) -> None:
    async for event in stream.events():
        ctx = await app.context.ready()
        phash = event.key.decode() if isinstance(event.key, bytes) else event.key
        await carry_out(ctx, phash, MaintenanceCommand.parse(event.value))


async def carry_out(ctx: WorkerContext, phash: str, command: MaintenanceCommand | None) -> None:
    if command in (MaintenanceCommand.EXPIRE, MaintenanceCommand.INVALIDATE):
        ctx.results.fresh(phash)  # deletes the answer when it is expired or invalidated
    elif command is MaintenanceCommand.INFLIGHT:
        await recover_lost_call(ctx, phash)
    else:
        log.warning("phash=%s: unknown maintenance command ignored", phash)


async def recover_lost_call(ctx: WorkerContext, phash: str) -> None:
    """Re-issue a model call nobody answered within INFLIGHT_TIMEOUT_SECONDS; give up after three tries."""
    inflight = ctx.calls.entry(phash)
    if inflight is None or ctx.calls.is_live(inflight):
        return  # answered (or re-issued) since the timer looked
    if inflight.attempts >= MAX_CALL_ATTEMPTS:
        ctx.calls.take(phash)
        await ctx.calls.release_claim(phash)
        for job in inflight.jobs:
            await publish_result(ctx, failed_result(
                job.job_id, ErrorCode.MODEL_TIMEOUT, f"no answer from the vision model after {MAX_CALL_ATTEMPTS} "
                "requests", key=job.key, image_url=job.image_url, fetch=job.fetch))
        return
    log.warning("phash=%s: model call of job_id=%s presumed lost, re-requesting", phash, inflight.owner.job_id)
    ctx.calls.start(inflight.owner, inflight.waiters, attempts=inflight.attempts + 1)
    await ctx.calls.renew_claim(phash)  # near-duplicates keep waiting on the new request
    await send_request_again(inflight.owner)


@app.timer(interval=INVALIDATION_POLL_SECONDS)
async def follow_invalidations() -> None:
    ctx = await app.context.ready()
    try:
        await apply_invalidations(ctx)
    except RedisError as exc:
        log.warning("could not read invalidations: %s", exc)


async def apply_invalidations(ctx: WorkerContext) -> list[str]:
    """Stop serving table copies of results invalidated in Redis; returns the pHashes read this time.

    On start the worker reads every record younger than the cache TTL (older ones cannot have a table copy).
    """
    now = time.time()
    cutoff = now - ctx.settings.cache_ttl_seconds
    read_until = ctx.timers.invalidations_read_until
    since = cutoff if read_until is None else max(cutoff, read_until - INVALIDATION_LOOKBACK_SECONDS)
    records: list[tuple[bytes | str, float]] = await ctx.redis.zrangebyscore(
        INVALIDATED_KEY, since, "+inf", withscores=True)
    phashes = [member.decode() if isinstance(member, bytes) else str(member) for member, _ in records]
    for phash, (_, at) in zip(phashes, records, strict=True):
        ctx.revocations.revoke(phash, float(at))
        stored_at = ctx.results.stored_at(phash)
        if stored_at is not None and ctx.revocations.covers(phash, stored_at):
            await send(phash, MaintenanceCommand.INVALIDATE)  # delete it on its partition (changelog)
    ctx.timers.invalidations_read_until = max([now, *(float(at) for _, at in records)])
    ctx.revocations.forget_before(cutoff)
    await ctx.redis.zremrangebyscore(INVALIDATED_KEY, "-inf", cutoff)  # no table copy can be older
    return phashes

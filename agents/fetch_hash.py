"""uploads.completed -> fetch (CDN, S3 fallback) -> pHash (known for these bytes, or decoded in the executor)
-> a Redis hit for the pHash answered here (``ANSWER_HITS_AT_FETCH``), or else images.hashed (key=phash).

A hit answered here skips one produce, one consume and one record parse; the lookup, the decision and the answer
are the dedupe step's own (agents/dedupe.py, streams/dedupe_decision.py), minus the copy into the pHash's table,
whose partition this step does not own. Everything else (the table, calls under way, near-duplicates, claims,
payments) stays with the dedupe step on the pHash's partition. The result markers hold back a replayed job here
as there. After a crash, a job's upload and its hashed event may both come again and be answered here and there at
once: publish_result keeps that to one result within a process; across two processes it can cost a duplicate
(the same classification), never a missing result.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from agents.dedupe import answer, read_shared
from models.errors import ErrorCode, PipelineError
from models.records import FetchInfo, ImageHashed, UploadCompleted, utcnow
from streams import metrics, topics
from streams.app import app
from streams.channels import images_hashed_topic, uploads_completed_topic
from streams.context import WorkerContext
from streams.dedupe_decision import Seen, decide_before_hop
from streams.fetch import cdn_url
from streams.imaging import ImageLimits, check_declared_type, content_digest, digest_and_hash, hash_image
from streams.outcomes import dead_letter, failed_result, publish_result
from streams.upload_checks import RefusedEvent, check_upload

log = logging.getLogger(__name__)

# Fetches are I/O-bound: several per worker overlap network waits. Job order does not matter in this step.
FETCH_CONCURRENCY = 8


@app.agent(uploads_completed_topic, concurrency=FETCH_CONCURRENCY)
async def fetch_and_hash(stream: Any) -> None:
    async for event in stream.events():
        ctx = await app.context.ready()
        await process_upload(ctx, event.key, event.value, event.message.partition, event.message.offset)


@dataclass(frozen=True)
class _Source:
    """The event as it came, for the dead letter of a refusal or a failure."""

    value: bytes
    partition: int | None
    offset: int | None


@dataclass(frozen=True)
class _Hashed:
    phash: str
    sha256: str
    fetch: FetchInfo
    timings_ms: dict[str, float]


async def process_upload(ctx: WorkerContext, key: str | bytes | None, value: bytes, partition: int | None,
                         offset: int | None) -> None:
    """Handle one upload-complete event; every outcome is either an ImageHashed event or a failed result."""
    received_at = utcnow()
    metrics.events_total.labels(stage="upload").inc()
    source = _Source(value, partition, offset)
    try:
        # Before anything is fetched: only the configured bucket, only keys of the API's scheme, and a result
        # only for a job the body itself names under its own Kafka key (streams/upload_checks.py).
        upload = check_upload(ctx.settings, key.decode("utf-8", "replace") if isinstance(key, bytes) else key, value)
    except RefusedEvent as exc:
        await _fail(ctx, exc.job_id, ErrorCode.INVALID_EVENT, exc.message, source, detail=exc.detail)
        return
    try:
        hashed = await _fetch_and_hash(ctx, upload)
    except PipelineError as exc:
        await _fail(ctx, upload.job_id, exc.code, exc.message, source, image_key=upload.key, detail=exc.detail)
        return
    except Exception as exc:  # a bug must not lose the job: answer it, keep the traceback
        log.exception("job_id=%s partition=%s offset=%s: unexpected error", upload.job_id, partition, offset)
        await _fail(ctx, upload.job_id, ErrorCode.INTERNAL_ERROR, type(exc).__name__, source, image_key=upload.key)
        return
    event = ImageHashed(job_id=upload.job_id, bucket=upload.bucket, key=upload.key, phash=hashed.phash,
                        image_url=cdn_url(ctx.settings, upload.key), fetch=hashed.fetch, received_at=received_at,
                        sha256=hashed.sha256, origin=ctx.settings.app_id, timings_ms=hashed.timings_ms)
    log.debug("job_id=%s phash=%s source=%s", upload.job_id, hashed.phash, hashed.fetch.source)
    if ctx.settings.answer_hits_at_fetch and await _answered_before_hop(ctx, event):
        return
    await images_hashed_topic.send(key=hashed.phash, value=event.to_bytes())


async def _answered_before_hop(ctx: WorkerContext, job: ImageHashed) -> bool:
    """Answer a Redis hit for the job's pHash here, as the dedupe step would; False: the job goes on to it."""
    started = time.monotonic()
    decision = decide_before_hop(await read_shared(ctx, Seen(job)))
    if decision is None:
        return False
    await answer(ctx, job, decision, started)
    return True


async def _fetch_and_hash(ctx: WorkerContext, upload: UploadCompleted) -> _Hashed:
    started = time.monotonic()
    fetched = await ctx.fetcher.fetch_patiently(upload.bucket, upload.key)
    fetch_ms = (time.monotonic() - started) * 1000
    metrics.fetch_total.labels(source=fetched.info.source.value, cdn_cache=fetched.info.cdn_cache).inc()
    check_declared_type(fetched.data, upload.content_type)
    started = time.monotonic()
    phash, sha256, decode_ms = await _phash(ctx, fetched.data)
    hash_ms = (time.monotonic() - started) * 1000
    metrics.stage_seconds.labels(stage="fetch").observe(fetch_ms / 1000)
    metrics.stage_seconds.labels(stage="hash").observe(hash_ms / 1000)
    # "decode" only when the image was decoded: a byte-identical re-upload's pHash is looked up instead.
    timings = {"fetch": round(fetch_ms, 2), "hash": round(hash_ms, 2),
               **({"decode": round(decode_ms, 2)} if decode_ms is not None else {})}
    return _Hashed(phash, sha256, fetched.info, timings)


async def _phash(ctx: WorkerContext, data: bytes) -> tuple[str, str, float | None]:
    """The image's pHash, remembered for these exact bytes or else decoded and hashed (off the event loop),
    the SHA-256 of the bytes (classify checks it is shown these very bytes), and the time spent decoding
    (None when it was remembered)."""
    if ctx.digests is None:  # every upload is decoded
        return await _decode_with_digest(ctx, data)
    loop = asyncio.get_running_loop()
    limits = ImageLimits.from_settings(ctx.settings)
    digest = await loop.run_in_executor(ctx.executor, content_digest, data)
    try:
        known = await ctx.digests.phash_of(digest, max_pixels=ctx.settings.max_image_pixels)
    except RedisError as exc:  # then decode, as without the cache
        log.warning("digest lookup failed (%s); decoding", exc)
        known = None
    if known is not None:
        metrics.hash_total.labels(path="digest").inc()
        return known, digest, None
    started = time.monotonic()
    hashed = await loop.run_in_executor(
        ctx.executor, functools.partial(hash_image, data, max_pixels=ctx.settings.max_image_pixels, limits=limits))
    decode_ms = (time.monotonic() - started) * 1000
    metrics.hash_total.labels(path="decode").inc()
    try:
        await ctx.digests.remember(digest, hashed.phash, pixels=hashed.width * hashed.height)
    except RedisError as exc:
        log.warning("could not remember the digest (%s)", exc)
    return hashed.phash, digest, decode_ms


async def _decode_with_digest(ctx: WorkerContext, data: bytes) -> tuple[str, str, float]:
    """The SHA-256 and the decode in one hand-off to the executor (``CONTENT_DIGEST_CACHE=false``)."""
    started = time.monotonic()
    digest, hashed = await asyncio.get_running_loop().run_in_executor(
        ctx.executor, functools.partial(digest_and_hash, data, max_pixels=ctx.settings.max_image_pixels,
                                        limits=ImageLimits.from_settings(ctx.settings)))
    metrics.hash_total.labels(path="decode").inc()
    return hashed.phash, digest, (time.monotonic() - started) * 1000


async def _fail(ctx: WorkerContext, job_id: str | None, code: ErrorCode, message: str, source: _Source, *,
                image_key: str | None = None, detail: str | None = None) -> None:
    """Dead-letter the event (with the details) and, when it proved its job, fail that job (with ``message``
    only: results reach clients, and name no internal host, port, bucket or path)."""
    await dead_letter(job_id=job_id, code=code, message=f"{message} ({detail})" if detail else message,
                      stage="fetch_hash", topic=topics.UPLOADS_COMPLETED, partition=source.partition,
                      offset=source.offset, original=source.value)
    if job_id:
        await publish_result(ctx, failed_result(job_id, code, message, key=image_key))
    else:
        log.error("partition=%s offset=%s: event proving no job dead-lettered (%s: %s; %r)", source.partition,
                  source.offset, code, message, (detail or "")[:300])

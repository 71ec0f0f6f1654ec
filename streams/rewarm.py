"""Put this worker's table answers back into Redis after Redis lost them, instead of paying for them again.

The Faust table ``results_by_phash`` is durable (its changelog is in Kafka); Redis holds the shared copy that other
partitions and workers read: the exact cache (``cache:image:hash:{phash}``) and the near-duplicate index. A Redis
that restarts empty (no persistence, a failover to a replica that had not caught up), or loses its last second of
writes (AOF ``appendfsync everysec``), or cannot be written while it is down, leaves the tables with answers Redis
does not have: near-duplicates on other partitions would pay for them again. Two passes put them back:

- **the recent pass**, every ``REWARM_INTERVAL_SECONDS``: the answers this process stored in its table in the
  last ``RECENT_WINDOW_SECONDS`` are written again (``SET NX`` with their remaining TTL, and indexed). That
  covers what a Redis outage or a crash's lost second dropped; for answers Redis kept, it is one no-op each.
- **the full pass**, when Redis has lost everything: a key ``cache:warm-epoch`` holds a random token. When it is
  gone, Redis lost its data; the first worker to notice sets a new token, and every worker, seeing the token
  differ from the one it knew, writes its whole table back (the same way, a few hundred entries per round trip
  batch). A worker that starts against a Redis whose token exists adopts it and writes nothing.

Both run only when the worker's tables are recovered, so a pass never writes answers it has not read yet.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from models.records import CachedClassification
from streams.cache import ResultCache
from streams.near_index import INVALIDATED_KEY, NearIndex

log = logging.getLogger(__name__)

EPOCH_KEY = "cache:warm-epoch"
REWARM_INTERVAL_SECONDS = 2.0
# Longer than a check interval plus AOF's one second plus a slow check: no recent answer falls between passes.
RECENT_WINDOW_SECONDS = 15.0
# Entries read from the table per round of invalidation look-ups and writes.
WRITE_BACK_BATCH = 500


@dataclass
class RewarmState:
    epoch: str | None = None
    epoch_key: str = EPOCH_KEY
    full_passes: int = 0
    written: int = 0  # answers that were missing from Redis and were put back
    failures: int = 0
    last_pass_at: float | None = None
    errors: list[str] = field(default_factory=list)


async def current_epoch(redis: object, key: str = EPOCH_KEY) -> tuple[str, bool]:
    """Redis's data epoch, and whether this call started a new one (Redis had lost its data, or is new)."""
    token = uuid.uuid4().hex
    created = bool(await redis.set(key, token, nx=True))  # type: ignore[attr-defined]
    if created:
        return token, True
    raw = await redis.get(key)  # type: ignore[attr-defined]
    if raw is None:  # deleted in between: take it again next time
        return token, True
    return (raw.decode() if isinstance(raw, bytes) else str(raw)), False


Entries = Iterable[tuple[CachedClassification, float]]


async def write_back(cache: ResultCache, index: NearIndex | None, entries: Entries, *, ttl_seconds: int,
                     index_all: bool, now: float | None = None) -> int:
    """Write each (entry, stored_at) that is still fresh into Redis unless it is there, and index it (every one
    with ``index_all``, else those that were missing: an entry Redis kept was indexed right after it was written).
    An answer an operator invalidated after it was stored (``cache:image:invalidated``, read here, not from the
    worker's copy of it, which lags by up to 2 s) is never written back. Returns how many were missing."""
    now = time.time() if now is None else now
    missing = 0
    remaining = iter(entries)
    # A batch at a time: a full pass over a large table (RocksDB, docs/SCALING.md "Tables") is read as it goes.
    while batch := list(itertools.islice(remaining, WRITE_BACK_BATCH)):
        revoked_at = await _invalidated_at(cache, [entry.phash for entry, _ in batch])
        for entry, stored_at in batch:
            left = int(ttl_seconds - (now - stored_at))
            if left <= 1 or revoked_at.get(entry.phash, -1.0) >= stored_at:
                continue
            was_missing = await cache.put_if_absent(entry, ttl_seconds=left)
            missing += was_missing
            if index is not None and (index_all or was_missing):
                await index.add(entry)
    return missing


async def _invalidated_at(cache: ResultCache, phashes: list[str]) -> dict[str, float]:
    found: dict[str, float] = {}
    for start in range(0, len(phashes), 500):
        batch = phashes[start:start + 500]
        scores = await cache.redis.zmscore(INVALIDATED_KEY, batch)
        found.update({p: float(s) for p, s in zip(batch, scores, strict=True) if s is not None})
    return found


async def rewarm(state: RewarmState, redis: object, cache: ResultCache, index: NearIndex | None, *,
                 table: Callable[[], Entries], recent: Callable[[], Entries], ttl_seconds: int) -> int:
    """One check: a full pass when Redis's epoch changed under us, else the recent pass. Returns entries written."""
    epoch, created = await current_epoch(redis, state.epoch_key)
    first_check = state.epoch is None
    lost = created or (not first_check and epoch != state.epoch)
    if lost:
        log.warning("Redis has lost its data (epoch %s -> %s): writing this worker's table answers back",
                    state.epoch, epoch)
        written = await write_back(cache, index, table(), ttl_seconds=ttl_seconds, index_all=True)
        state.full_passes += 1
    else:
        written = await write_back(cache, index, recent(), ttl_seconds=ttl_seconds, index_all=False)
    state.epoch = epoch
    state.written += written
    state.last_pass_at = time.time()
    if written:
        log.info("re-warmed Redis with %d answers from the table (full pass: %s)", written, lost)
    return written


async def rewarm_quietly(state: RewarmState, *args: object, **kwargs: object) -> int:
    try:
        return await rewarm(state, *args, **kwargs)  # type: ignore[arg-type]
    except RedisError as exc:  # down: the next check, once it is back, puts the recent answers back
        state.failures += 1
        log.warning("cache re-warm check failed (%s); retrying in %.0f s", exc, REWARM_INTERVAL_SECONDS)
        return 0

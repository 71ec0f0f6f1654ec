"""Stop serving one cached result: by its pHash, or by the job whose model call produced it.

Used by ``python -m tools.invalidate`` and by the API's operator endpoint. Only Redis is touched: the entry
``cache:image:hash:{phash}``, its near-duplicate index memberships (under every layout and model version that
indexed it), and the ``cache:job:{near}:{job_id}`` mapping are deleted, and the invalidation is recorded in
``cache:image:invalidated`` (pHash scored by time). Workers read that record every few seconds and stop serving
the copies their Faust tables hold (see ``agents/maintenance.py``), so the next upload of the photo, or of a
near-duplicate, pays for a fresh model call.
"""

from __future__ import annotations

import re
import time

from redis.asyncio import Redis, RedisCluster

from models.records import CachedClassification
from streams.cache import cache_key
from streams.near_index import INDEX_PREFIX, INVALIDATED_KEY, JOB_PREFIX, LAYOUTS_KEY, chunk_keys, layout_for
from streams.redis_client import get_many

_PHASH = re.compile(r"^[0-9a-f]{64}$")


def is_phash(value: str) -> bool:
    return bool(_PHASH.match(value))


async def invalidate(redis: Redis, *, phash: str | None = None, job_id: str | None = None) -> list[str]:
    """Invalidate the cached result of ``phash`` and/or of the job ``job_id``; returns the pHashes invalidated.

    An empty list means nothing was cached under them (already expired, or never produced). ``job_id`` is the
    job that paid for the model call (a result's ``cache.reused_job_id``, or its own id when it paid).
    Raises ``ValueError`` for a malformed pHash, or when neither argument is given.
    """
    if phash is None and job_id is None:
        raise ValueError("give a phash or a job id")
    phashes: list[str] = []
    if phash is not None:
        phash = phash.strip().lower()
        if not is_phash(phash):
            raise ValueError("a pHash is 64 hexadecimal characters")
        phashes.append(phash)
    if job_id is not None:
        found = await redis.get(JOB_PREFIX + job_id)
        if found is not None:
            mapped = _text(found)
            if mapped not in phashes:
                phashes.append(mapped)
    if not phashes:
        return []
    # Every chunk layout (model version x T) that indexed anything still alive: "{tag}:{chunks}".
    members: list[bytes | str] = await redis.zrangebyscore(LAYOUTS_KEY, time.time(), "+inf")  # type: ignore[assignment]
    layouts: dict[str, int] = {}
    for member in members:
        layout_tag, count = _text(member).rsplit(":", 1)
        layouts[layout_tag] = int(count)
    raw_entries: list[bytes | str | None] = await get_many(redis, [cache_key(p) for p in phashes])
    now = time.time()
    spans: list[tuple[str, int, int]] = []  # pHash, first reply, reply count (its DEL, job DELs and ZREMs)
    # One MULTI on a single Redis; a cluster splits the pipeline by slot (each step is idempotent).
    async with redis.pipeline(transaction=not isinstance(redis, RedisCluster)) as pipe:
        for p, raw in zip(phashes, raw_entries, strict=True):
            first = len(pipe)
            pipe.delete(cache_key(p))
            owner = _owner(raw)
            for job in {j for j in (owner, job_id) if j is not None}:
                pipe.delete(JOB_PREFIX + job)
            for tag, chunks in layouts.items():
                for key in chunk_keys(INDEX_PREFIX, tag, p, layout_for(chunks - 1)):
                    pipe.zrem(key, p)
            spans.append((p, first, len(pipe) - first))
            pipe.zadd(INVALIDATED_KEY, {p: now})
        replies = await pipe.execute()
    return [p for p, first, count in spans if any(int(r) for r in replies[first:first + count])]


def _owner(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    try:
        return CachedClassification.model_validate_json(raw).job_id
    except ValueError:
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

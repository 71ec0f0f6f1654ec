"""The shared result cache in Redis: ``cache:image:hash:{phash}`` with a TTL (7 days by default).

The key format is the original design's, so an existing cache stays valid. Redis, not the Faust table, is the
source of truth for expiry: Faust tables have no per-key TTL.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError
from redis.asyncio import Redis

from models.records import CachedClassification

log = logging.getLogger(__name__)

KEY_PREFIX = "cache:image:hash:"


def cache_key(phash: str) -> str:
    return f"{KEY_PREFIX}{phash}"


class ResultCache:
    def __init__(self, redis: Redis, *, ttl_seconds: int, model_version: str) -> None:
        self._redis = redis
        self._ttl = ttl_seconds
        self._model_version = model_version

    async def get(self, phash: str) -> CachedClassification | None:
        """The cached classification for ``phash`` if it was made by the current model, prompt and taxonomy."""
        raw = await self._redis.get(cache_key(phash))
        if raw is None:
            return None
        try:
            entry = CachedClassification.model_validate_json(raw)
        except ValidationError:
            # An entry in another format (or corrupted) is a miss, never an error for the job.
            log.warning("ignoring unreadable cache entry for phash=%s", phash)
            return None
        if entry.model_version != self._model_version:
            return None
        return entry

    async def put(self, entry: CachedClassification) -> None:
        await self._redis.set(cache_key(entry.phash), entry.to_bytes(), ex=self._ttl)

    @property
    def redis(self) -> Redis:
        return self._redis

    async def put_if_absent(self, entry: CachedClassification, *, ttl_seconds: int) -> bool:
        """Write ``entry`` unless the key exists (a re-warm never overwrites a newer answer); True if written."""
        return bool(await self._redis.set(cache_key(entry.phash), entry.to_bytes(), ex=ttl_seconds, nx=True))

    async def delete(self, phash: str) -> bool:
        return bool(await self._redis.delete(cache_key(phash)))

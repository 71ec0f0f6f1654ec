"""Operator invalidation as a backend: the endpoint (api/admin.py) sees the protocol, tests a fake."""

from __future__ import annotations

from typing import Protocol

from redis.asyncio import Redis

from streams.invalidation import invalidate


class CacheAdmin(Protocol):
    async def invalidate(self, *, phash: str | None, job_id: str | None) -> list[str]: ...


class RedisCacheAdmin:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def invalidate(self, *, phash: str | None, job_id: str | None) -> list[str]:
        return await invalidate(self._redis, phash=phash, job_id=job_id)

"""The near-duplicate index's behaviour suite (tests/near_index_behaviour.py) on Redis: single and cluster.

The same tests run on the in-memory double in tests/unit/test_near_index.py. Keys are namespaced by a per-test
prefix and expire within a minute.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from models.records import CachedClassification
from streams import redis_client
from streams.cache import KEY_PREFIX as ENTRY_PREFIX
from streams.near_index import RedisNearIndex
from tests.near_index_behaviour import NearIndexBehaviour, Subject, T

pytestmark = pytest.mark.stack


@pytest.fixture
async def redis(stack_any_redis_url: str) -> AsyncIterator[Any]:
    client = await redis_client.open_client(stack_any_redis_url)
    yield client
    await client.aclose()


class TestRedisNearIndex(NearIndexBehaviour):
    @pytest.fixture
    def subject(self, redis: Any) -> Subject:
        prefix = f"test-behaviour:{uuid.uuid4().hex[:8]}:"

        def make(version: str) -> RedisNearIndex:
            return RedisNearIndex(redis, max_distance=T, model_version=version, ttl_seconds=60,
                                  claim_ttl_seconds=10, prefix=prefix)

        async def store(e: CachedClassification) -> None:
            await redis.set(prefix + ENTRY_PREFIX + e.phash, e.to_bytes(), ex=60)

        async def drop(phash: str) -> None:
            await redis.delete(prefix + ENTRY_PREFIX + phash)

        return Subject(make=make, store=store, drop=drop)

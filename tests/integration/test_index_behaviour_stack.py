"""The index behaviour suites (tests/near_index_behaviour.py, tests/reframed_index_behaviour.py) on Redis: single
and cluster.

The same tests run on the in-memory doubles in tests/unit/test_near_index.py and tests/unit/test_reframed.py.
Keys are namespaced per test (a prefix, or a model version of its own) and expire within a minute.
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
from streams.reframed_index import RedisReframedIndex
from tests.near_index_behaviour import NearIndexBehaviour, Subject, T
from tests.reframed_index_behaviour import CAP, ReframedIndexBehaviour

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


class TestRedisReframedIndex(ReframedIndexBehaviour):
    @pytest.fixture
    def index(self, redis: Any) -> RedisReframedIndex:
        return RedisReframedIndex(redis, model_version=f"test-{uuid.uuid4().hex}", ttl_seconds=60, word_cap=CAP)

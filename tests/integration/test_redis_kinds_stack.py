"""The worker's and the API's Redis code on a single Redis and on the Redis Cluster, with the same assertions.

Each test runs twice (``[single]``, ``[cluster]``). Keys are unique per test; what a test writes expires.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import RedisCluster

from api.limits import RedisRateLimiter
from models.classification import WasteCategory, WasteClassification
from models.records import CachedClassification
from streams import job_claims, redis_client, rewarm
from streams.cache import ResultCache
from streams.digests import DigestIndex
from streams.near_index import INVALIDATED_KEY, NearKind, RedisNearIndex

pytestmark = pytest.mark.stack
T = 12


@pytest.fixture
async def redis(stack_any_redis_url: str) -> AsyncIterator[Any]:
    client = await redis_client.open_client(stack_any_redis_url)
    yield client
    await client.aclose()


def entry(phash: str, version: str) -> CachedClassification:
    return CachedClassification(
        phash=phash, model_version=version, job_id=f"job-{uuid.uuid4().hex[:8]}", created_at=datetime.now(UTC),
        classification=WasteClassification(category=WasteCategory.GLASS, item_name="jar", recyclable=True,
                                           disposal_instructions="rinse", confidence=0.9),
    )


def near(phash: str, bits: int, rng: random.Random) -> str:
    value = int(phash, 16)
    for b in rng.sample(range(256), bits):
        value ^= 1 << b
    return f"{value:064x}"


async def test_the_url_chooses_the_client(redis: Any, stack_redis_kind: str) -> None:
    assert isinstance(redis, RedisCluster) == (stack_redis_kind == "cluster")
    assert await redis.ping()


async def test_cache_and_digest_index(redis: Any) -> None:
    version = f"v-{uuid.uuid4().hex[:8]}"
    cache = ResultCache(redis, ttl_seconds=60, model_version=version)
    e = entry(f"{random.getrandbits(256):064x}", version)
    await cache.put(e)
    assert await cache.get(e.phash) == e
    assert not await cache.put_if_absent(e, ttl_seconds=60)  # never overwrites
    digests = DigestIndex(redis, ttl_seconds=60)
    digest = uuid.uuid4().hex * 2
    await digests.remember(digest, e.phash, pixels=100)
    assert await digests.phash_of(digest, max_pixels=1000) == e.phash
    assert await digests.phash_of(digest, max_pixels=10) is None
    assert await cache.delete(e.phash) and await cache.get(e.phash) is None


async def test_near_index_serves_claims_once_and_reads_entries_in_other_slots(redis: Any) -> None:
    rng = random.Random()
    version = f"v-{uuid.uuid4().hex[:8]}"
    prefix = f"test-kinds:{uuid.uuid4().hex[:8]}:"
    index = RedisNearIndex(redis, max_distance=T, model_version=version, ttl_seconds=60, claim_ttl_seconds=10,
                           prefix=prefix)
    first = f"{rng.getrandbits(256):064x}"
    queries = [near(first, 3, rng) for _ in range(8)]
    # Eight near-duplicates at once: exactly one claims, the others see its claim and wait.
    kinds = await asyncio.gather(*(index.lookup(q, claim=True) for q in queries))
    claimed = [q for q, k in zip(queries, kinds, strict=True) if k.kind is NearKind.CLAIMED]
    assert len(claimed) == 1 and {k.kind for k in kinds} == {NearKind.CLAIMED, NearKind.PENDING}
    owner = claimed[0]
    # Its answer lands: the claim goes, and near-duplicates get the entry (read from its own slot).
    e = entry(owner, version)
    await redis.set(prefix + "cache:image:hash:" + owner, e.to_bytes(), ex=60)
    await index.add(e)
    found = await index.lookup(near(owner, 5, rng), claim=True)
    assert found.kind is NearKind.NEAR and found.entry == e and found.distance == 5
    # An indexed entry that is gone from the cache is not served: the lookup claims instead.
    await redis.delete(prefix + "cache:image:hash:" + owner)
    assert (await index.lookup(near(owner, 2, rng), claim=True)).kind is NearKind.CLAIMED


async def test_rate_limits_and_publish_claims(redis: Any) -> None:
    limiter = RedisRateLimiter(redis)
    client = f"c-{uuid.uuid4().hex}"
    verdicts = [await limiter.hit("analyze", client, 3, 60) for _ in range(5)]
    assert verdicts[:3] == [None] * 3 and all(v is not None and 0 < v <= 60 for v in verdicts[3:])
    jobs = [f"job-{uuid.uuid4().hex}" for _ in range(5)]
    for j in jobs[:3]:
        await redis.set(job_claims.JOB_KEY.format(job_id=j), '{"bucket": "b", "key": "k", "state": "queued"}', ex=60)
    issued = await job_claims.issued_jobs(redis, jobs)  # keys in several slots
    assert set(issued) == set(jobs[:3])
    claims = await asyncio.gather(*(job_claims.claim(redis, jobs[0]) for _ in range(6)))
    assert claims.count(True) == 1


async def test_rewarm_puts_a_lost_answer_back_and_a_lost_epoch_triggers_a_full_pass(redis: Any) -> None:
    rng = random.Random()
    version = f"v-{uuid.uuid4().hex[:8]}"
    cache = ResultCache(redis, ttl_seconds=600, model_version=version)
    index = RedisNearIndex(redis, max_distance=T, model_version=version, ttl_seconds=600, claim_ttl_seconds=10)
    kept, lost, old = (entry(f"{rng.getrandbits(256):064x}", version) for _ in range(3))
    now = datetime.now(UTC).timestamp()
    table = [(kept, now - 5), (lost, now - 100), (old, now - 10_000)]  # "old" is past its TTL: never written
    await cache.put(kept)
    state = rewarm.RewarmState(epoch_key=f"test-rewarm-epoch:{uuid.uuid4().hex}")  # not the workers' epoch
    try:
        await redis.set(state.epoch_key, "epoch-1", ex=60)
        # Redis intact: the recent pass writes back only what it is missing.
        written = await rewarm.rewarm(state, redis, cache, index, table=lambda: table, recent=lambda: table[:2],
                                      ttl_seconds=600)
        assert written == 1 and state.full_passes == 0 and state.epoch == "epoch-1"
        assert await cache.get(lost.phash) == lost and await cache.get(old.phash) is None
        assert 490 <= await redis.ttl("cache:image:hash:" + lost.phash) <= 500  # its remaining TTL, not a new one
        # Redis lost everything (the epoch went): the full pass writes the table back and indexes it.
        for e in (kept, lost):
            await cache.delete(e.phash)
        await redis.delete(state.epoch_key)
        written = await rewarm.rewarm(state, redis, cache, index, table=lambda: table, recent=lambda: [],
                                      ttl_seconds=600)
        assert written == 2 and state.full_passes == 1 and state.epoch != "epoch-1"
        assert await cache.get(kept.phash) == kept
        match = await index.lookup(near(kept.phash, 4, rng), claim=False)
        assert match.kind is NearKind.NEAR and match.phash == kept.phash  # indexed again: near-duplicates find it
        # An answer an operator invalidated after it was stored is never written back, even by a full pass.
        await cache.delete(kept.phash)
        await redis.zadd(INVALIDATED_KEY, {kept.phash: now + 1})
        await redis.delete(state.epoch_key)
        await rewarm.rewarm(state, redis, cache, index, table=lambda: table, recent=lambda: table,
                            ttl_seconds=600)
        assert state.full_passes == 2 and await cache.get(kept.phash) is None
    finally:
        for e in (kept, lost, old):
            await cache.delete(e.phash)
        await redis.zrem(INVALIDATED_KEY, kept.phash)
        await redis.delete(state.epoch_key)

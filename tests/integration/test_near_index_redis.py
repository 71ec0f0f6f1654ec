"""The Redis near-duplicate index through its public class, on the single Redis and on the Redis Cluster.

Needs Redis only (no worker, no Kafka): what each Lua script leaves in Redis (members, their expiry scores, the
sets' own expiry, job mappings, the layouts in use), what a lookup answers, and the key names other releases
and tools read. Keys are namespaced by a per-test prefix and deleted afterwards.
"""

from __future__ import annotations

import math
import random
import time
from types import SimpleNamespace
from typing import Any

import pytest

from models.records import CachedClassification
from streams.cache import KEY_PREFIX as ENTRY_PREFIX
from streams.near_index import (
    INDEX_PREFIX,
    JOB_PREFIX,
    LAYOUTS_KEY,
    NEAR_CANDIDATES,
    PENDING_PREFIX,
    NearKind,
    RedisNearIndex,
    layout_for,
    layout_tag,
    redis_index,
)
from tools.kit.hashes import cached_entry, flip, random_hash

pytestmark = pytest.mark.stack
T = 4  # five chunks of 52, 51, 51, 51, 51 bits: the uneven layout
VERSION = "m|p1|t1"
TTL = 300
CLAIM_TTL = 30


@pytest.fixture
def redis(stack_scratch_redis: Any) -> Any:
    return stack_scratch_redis


@pytest.fixture
def prefix(stack_key_prefix: str) -> str:
    return stack_key_prefix


def make_index(redis: Any, prefix: str, *, version: str = VERSION, max_distance: int = T, ttl: int = TTL,
               claim_ttl: float = CLAIM_TTL) -> RedisNearIndex:
    return RedisNearIndex(redis, max_distance=max_distance, model_version=version, ttl_seconds=ttl,
                          claim_ttl_seconds=claim_ttl, prefix=prefix)


async def store(redis: Any, index: RedisNearIndex, phash: str, *, version: str | None = None,
                job_id: str | None = None) -> CachedClassification:
    e = cached_entry(phash, version or index.model_version, job_id)
    await redis.set(index.prefix + ENTRY_PREFIX + phash, e.to_bytes(), ex=TTL)
    await index.add(e)
    return e


async def members(redis: Any, key: str) -> dict[str, float]:
    return {(m.decode() if isinstance(m, bytes) else m): s for m, s in await redis.zrange(key, 0, -1, withscores=True)}


async def assert_set_expires_with_its_latest_member(redis: Any, key: str) -> None:
    scores = (await members(redis, key)).values()
    assert scores
    assert await redis.expiretime(key) == math.ceil(max(scores))


# --- key names: what other releases, the admin tools and docs/NEAR_DUPLICATES.md read -----------------------------


def test_the_key_names_are_the_documented_ones() -> None:
    index = RedisNearIndex(redis=SimpleNamespace(register_script=lambda s: s), max_distance=T,  # type: ignore[arg-type]
                           model_version=VERSION, ttl_seconds=TTL, claim_ttl_seconds=CLAIM_TTL, prefix="p:")
    phash = "0123456789abcdef" * 4
    tag = layout_tag(VERSION, layout_for(T))
    assert tag == "3a40ac01"  # sha1("m|p1|t1|m5")[:8]: a change would orphan every indexed result
    assert index.tag == tag
    # 256 bits in 5 chunks: 52 bits (13 hex digits) and then 51 bits each (13 hex digits, zero-padded).
    value = int(phash, 16)
    spans = [(0, 52), (52, 51), (103, 51), (154, 51), (205, 51)]
    chunks = [f"{(value >> (256 - s - w)) & ((1 << w) - 1):013x}" for s, w in spans]
    assert index.result_keys(phash) == [f"p:cache:image:mih:{{near}}:{tag}:{i}:{c}" for i, c in enumerate(chunks)]
    assert index.pending_keys(phash) == [f"p:cache:image:mihp:{{near}}:{tag}:{i}:{c}" for i, c in enumerate(chunks)]
    assert index.result_keys(phash)[0] == f"p:cache:image:mih:{{near}}:{tag}:0:0123456789abc"
    assert (INDEX_PREFIX, PENDING_PREFIX, JOB_PREFIX, LAYOUTS_KEY) == (
        "cache:image:mih:{near}:", "cache:image:mihp:{near}:", "cache:job:{near}:", "cache:image:near-layouts:{near}")


# --- lookups and claims -------------------------------------------------------------------------------------------


async def test_a_miss_without_a_claim_writes_nothing(redis: Any, prefix: str) -> None:
    index = make_index(redis, prefix)
    phash = random_hash(random.Random(1))
    match = await index.lookup(phash, claim=False)
    assert match.kind is NearKind.MISS and match.phash is None and match.entry is None
    assert [k async for k in redis.scan_iter(match=prefix + "*")] == []


async def test_a_claim_marks_every_chunk_for_the_claim_ttl_and_a_near_duplicate_waits_on_it(
        redis: Any, prefix: str) -> None:
    index = make_index(redis, prefix)
    phash = random_hash(random.Random(2))
    before = time.time()
    assert (await index.lookup(phash, claim=True)).kind is NearKind.CLAIMED
    after = time.time()
    for key in index.pending_keys(phash):
        [(member, score)] = (await members(redis, key)).items()
        assert member == phash
        assert math.ceil(before + CLAIM_TTL) <= score <= math.ceil(after + CLAIM_TTL)
        await assert_set_expires_with_its_latest_member(redis, key)
    for key in index.result_keys(phash):
        assert await redis.exists(key) == 0

    near = flip(phash, [0, 100, 255])
    waiting = await index.lookup(near, claim=True)
    assert (waiting.kind, waiting.phash, waiting.distance, waiting.entry) == (NearKind.PENDING, phash, 3, None)
    for key in index.pending_keys(near):  # the waiter claimed nothing
        assert near not in await members(redis, key)
    # With claims left out of the lookup, the near-duplicate claims for itself.
    assert (await index.lookup(near, claim=True, pending=False)).kind is NearKind.CLAIMED
    await index.release(near)
    # The claimer's own claim is never a reason to wait: looking again, it claims again.
    assert (await index.lookup(phash, claim=True)).kind is NearKind.CLAIMED
    await index.release(phash)
    assert (await index.lookup(near, claim=False)).kind is NearKind.MISS


async def test_a_claim_further_than_t_is_not_waited_on(redis: Any, prefix: str) -> None:
    index = make_index(redis, prefix)
    phash = random_hash(random.Random(3))
    await index.claim(phash)
    # T + 1 bits apart, all in the first chunk: the chunks 1-4 are shared, the distance is over T.
    far = flip(phash, [255, 254, 253, 252, 251])
    assert (await index.lookup(far, claim=False)).kind is NearKind.MISS
    at_t = flip(phash, [255, 254, 253, 252])
    match = await index.lookup(at_t, claim=False)
    assert (match.kind, match.phash, match.distance) == (NearKind.PENDING, phash, T)


async def test_release_drops_the_claim_and_claim_renews_it(redis: Any, prefix: str) -> None:
    index = make_index(redis, prefix, claim_ttl=5)
    phash = random_hash(random.Random(4))
    near = flip(phash, [7])
    await index.claim(phash)
    first = (await members(redis, index.pending_keys(phash)[0]))[phash]
    assert (await index.lookup(near, claim=False)).kind is NearKind.PENDING
    await index.release(phash)
    for key in index.pending_keys(phash):
        assert await redis.exists(key) == 0
    assert (await index.lookup(near, claim=False)).kind is NearKind.MISS
    longer = make_index(redis, prefix, claim_ttl=50)
    await longer.claim(phash)
    renewed = (await members(redis, index.pending_keys(phash)[0]))[phash]
    assert renewed >= first + 45
    await assert_set_expires_with_its_latest_member(redis, index.pending_keys(phash)[0])


async def test_an_expired_claim_is_dropped_on_the_next_touch(redis: Any, prefix: str) -> None:
    index = make_index(redis, prefix)
    phash = random_hash(random.Random(5))
    stale = flip(phash, [1, 2])
    for key in index.pending_keys(stale):  # a claim whose call was lost long ago
        await redis.zadd(key, {stale: time.time() - 60})
    assert (await index.lookup(phash, claim=True)).kind is NearKind.CLAIMED
    for key in index.pending_keys(phash):
        assert set(await members(redis, key)) == {phash}


# --- results ------------------------------------------------------------------------------------------------------


async def test_add_indexes_the_result_maps_its_job_records_the_layout_and_drops_the_claim(
        redis: Any, prefix: str) -> None:
    index = make_index(redis, prefix)
    phash = random_hash(random.Random(6))
    await index.lookup(phash, claim=True)
    before = time.time()
    e = await store(redis, index, phash, job_id="job-add-1")
    after = time.time()
    for key in index.result_keys(phash):
        [(member, score)] = (await members(redis, key)).items()
        assert member == phash
        assert math.ceil(before + TTL) <= score <= math.ceil(after + TTL)
        await assert_set_expires_with_its_latest_member(redis, key)
    for key in index.pending_keys(phash):
        assert phash not in await members(redis, key)
    job_key = prefix + JOB_PREFIX + e.job_id
    assert await redis.get(job_key) in (phash, phash.encode())
    assert 0 < await redis.ttl(job_key) <= TTL
    layouts = await members(redis, prefix + LAYOUTS_KEY)
    assert list(layouts) == [f"{index.tag}:{T + 1}"]
    assert math.ceil(before + TTL) <= layouts[f"{index.tag}:{T + 1}"] <= math.ceil(after + TTL)
    await assert_set_expires_with_its_latest_member(redis, prefix + LAYOUTS_KEY)


async def test_a_near_duplicate_gets_the_closest_valid_result_with_its_distance(redis: Any, prefix: str) -> None:
    index = make_index(redis, prefix)
    rng = random.Random(7)
    query = random_hash(rng)
    three = await store(redis, index, flip(query, [10, 70, 130]))
    one = await store(redis, index, flip(query, [200]))
    await store(redis, index, flip(query, [3, 4, 5, 6, 7, 8]))  # beyond T: never an answer
    await store(redis, index, random_hash(rng))  # unrelated
    match = await index.lookup(query, claim=True)
    assert (match.kind, match.phash, match.distance) == (NearKind.NEAR, one.phash, 1)
    assert match.entry is not None and match.entry.job_id == one.job_id
    for key in index.pending_keys(query):  # a hit claims nothing
        assert await redis.exists(key) == 0
    # The closest one's entry is gone (evicted): the next closest is served.
    await redis.delete(prefix + ENTRY_PREFIX + one.phash)
    match = await index.lookup(query, claim=False)
    assert (match.kind, match.phash, match.distance) == (NearKind.NEAR, three.phash, 3)
    # An exact re-upload is at distance 0.
    match = await index.lookup(three.phash, claim=False)
    assert (match.kind, match.phash, match.distance) == (NearKind.NEAR, three.phash, 0)
    # Results left out of the lookup: nothing near is looked for.
    assert (await index.lookup(query, claim=False, results=False)).kind is NearKind.MISS


@pytest.mark.parametrize("spoil", ["other-version", "unreadable", "missing"])
async def test_an_indexed_result_without_a_valid_entry_is_not_served_and_the_job_claims(
        redis: Any, prefix: str, spoil: str) -> None:
    index = make_index(redis, prefix)
    query = random_hash(random.Random(8))
    cached = flip(query, [9])
    e = await store(redis, index, cached)
    if spoil == "other-version":
        await redis.set(prefix + ENTRY_PREFIX + cached, cached_entry(cached, "m|p0|t1", e.job_id).to_bytes())
    elif spoil == "unreadable":
        await redis.set(prefix + ENTRY_PREFIX + cached, b"{not json")
    else:
        await redis.delete(prefix + ENTRY_PREFIX + cached)
    match = await index.lookup(query, claim=True)
    assert match.kind is NearKind.CLAIMED and match.entry is None
    for key in index.pending_keys(query):
        assert query in await members(redis, key)


async def test_a_lookup_that_ignores_claims_still_ignores_them_after_a_stale_result(redis: Any, prefix: str) -> None:
    # The lookup looks again without results when the ones it found have no valid entry: that second look keeps
    # the caller's choice to ignore calls under way (a job that came back from waiting claims for itself).
    index = make_index(redis, prefix)
    query = random_hash(random.Random(13))
    stale = flip(query, [9])
    await store(redis, index, stale)
    await redis.delete(prefix + ENTRY_PREFIX + stale)
    await index.claim(flip(query, [20]))  # a near call under way
    assert (await index.lookup(query, claim=True, pending=False)).kind is NearKind.CLAIMED
    assert (await index.lookup(flip(query, [30]), claim=False)).kind is NearKind.PENDING


async def test_only_the_closest_candidates_are_read(redis: Any, prefix: str) -> None:
    # NEAR_CANDIDATES results within T whose entries are all gone hide a farther valid one: the script answers
    # the closest NEAR_CANDIDATES only, and the lookup then claims rather than reading on.
    index = make_index(redis, prefix, max_distance=12)
    rng = random.Random(9)
    query = random_hash(rng)
    for n in range(NEAR_CANDIDATES):
        gone = await store(redis, index, flip(query, [n]))
        await redis.delete(prefix + ENTRY_PREFIX + gone.phash)
    await store(redis, index, flip(query, [20, 21, 22]))
    assert (await index.lookup(query, claim=False)).kind is NearKind.MISS
    # One candidate fewer in the way: the valid one is within the answered ones.
    for key in index.result_keys(flip(query, [0])):
        await redis.zrem(key, flip(query, [0]))
    match = await index.lookup(query, claim=False)
    assert (match.kind, match.distance) == (NearKind.NEAR, 3)


async def test_another_version_or_layout_lives_under_other_keys(redis: Any, prefix: str) -> None:
    index = make_index(redis, prefix)
    phash = random_hash(random.Random(10))
    await store(redis, index, phash)
    for other in (make_index(redis, prefix, version="m|p2|t1"), make_index(redis, prefix, max_distance=T + 1)):
        assert other.tag != index.tag
        assert (await other.lookup(flip(phash, [0]), claim=False)).kind is NearKind.MISS


async def test_expired_results_are_trimmed_on_the_next_touch(redis: Any, prefix: str) -> None:
    index = make_index(redis, prefix)
    phash = random_hash(random.Random(11))
    old = flip(phash, [5])
    # the entry itself still there
    await redis.set(prefix + ENTRY_PREFIX + old, cached_entry(old, VERSION).to_bytes(), ex=TTL)
    for key in index.result_keys(old):
        await redis.zadd(key, {old: time.time() - 1})
    assert (await index.lookup(phash, claim=False)).kind is NearKind.MISS
    shared = [k for k in index.result_keys(old) if k in index.result_keys(phash)]
    assert len(shared) == T  # every chunk but the one bit 5 is in
    for key in shared:  # the sets the lookup read are emptied, and an empty set is no key
        assert await redis.exists(key) == 0
    # An insert into a set trims it as well.
    for key in index.result_keys(old):
        await redis.zadd(key, {old: time.time() - 1})
    await store(redis, index, old)
    for key in index.result_keys(old):
        assert list(await members(redis, key)) == [old]


# --- building the index -----------------------------------------------------------------------------------------


async def test_the_index_of_the_settings(redis: Any, prefix: str, settings_factory: Any) -> None:
    settings = settings_factory(near_duplicate_max_distance=7, cache_ttl_seconds=1234, inflight_timeout_seconds=56)
    index = redis_index(redis, settings, prefix=prefix)
    assert (index.max_distance, index.model_version, index.prefix) == (7, settings.model_version, prefix)
    phash = random_hash(random.Random(12))
    now = time.time()
    await index.claim(phash)
    claim_score = (await members(redis, index.pending_keys(phash)[0]))[phash]
    assert math.ceil(now + 56) <= claim_score <= math.ceil(time.time() + 56)
    await store(redis, index, phash)
    result_score = (await members(redis, index.result_keys(phash)[0]))[phash]
    assert math.ceil(now + 1234) <= result_score <= math.ceil(time.time() + 1234)

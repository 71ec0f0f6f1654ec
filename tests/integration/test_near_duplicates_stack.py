"""Near-duplicates on the real stack: the Redis index (Lua, expiry, claims, invalidation), then the whole pipeline.

Index tests use Redis database 15 and delete what they write; each runs on the single Redis and again on the Redis
Cluster (database 0 there, the only one a cluster has). Pipeline tests send re-uploads made by
``bench.variants`` (none byte-identical) through the running worker and the simulator. They start from the sample
photos flipped left to right: the other tests of the session upload the sample photos themselves, and a
re-encode of one of those is (rightly) a near-duplicate of it, which would hide the calls these tests count.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bench.variants import variant_folders
from models.records import AnalysisResult, CachedClassification, JobStatus
from streams.cache import KEY_PREFIX as ENTRY_PREFIX
from streams.cache import ResultCache
from streams.imaging import hamming_distance as hamming
from streams.imaging import hash_image
from streams.invalidation import invalidate
from streams.near_index import (
    INDEX_PREFIX,
    INVALIDATED_KEY,
    JOB_PREFIX,
    NearKind,
    RedisNearIndex,
)
from tools.kit import Simulator
from tools.kit.hashes import cached_entry, flip, random_hash
from tools.kit.results import of_group

simulator = Simulator().request  # the stack's shared simulator

ROOT = Path(__file__).resolve().parents[2]
T = 12  # NEAR_DUPLICATE_MAX_DISTANCE's default
# What pHash can catch: re-encodes, resizes, screenshots, brightness, EXIF rotation (docs/NEAR_DUPLICATES.md).
CATCHABLE = ("original.jpg", "q70.jpg", "resize50.jpg", "screenshot.png", "bright10.jpg", "exif-rot.jpg")
UNCATCHABLE = ("crop5.jpg", "text.jpg")


async def wait_until_clock_passes(epoch_seconds: float, timeout: float = 30.0) -> None:
    """Wait on the condition "the wall clock is past ``epoch_seconds``" (what Redis scores expiries by)."""
    deadline = time.monotonic() + timeout
    while time.time() <= epoch_seconds:
        assert time.monotonic() < deadline, f"the clock did not pass {epoch_seconds} within {timeout}s"
        await asyncio.sleep(0.05)


@pytest.fixture
def redis15(stack_scratch_redis: Redis) -> Redis:
    return stack_scratch_redis


@pytest.fixture
def prefix(stack_key_prefix: str) -> str:
    return f"{stack_key_prefix}near:"  # removed with the test's other keys


def make_index(redis: Redis, prefix: str, *, version: str = "m|p1|t1", ttl: int = 300,
               claim_ttl: float = 30) -> RedisNearIndex:
    return RedisNearIndex(redis, max_distance=T, model_version=version, ttl_seconds=ttl, claim_ttl_seconds=claim_ttl,
                          prefix=prefix)


async def store(redis: Redis, index: RedisNearIndex, phash: str, *, ttl: int = 300) -> CachedClassification:
    e = cached_entry(phash, index.model_version)
    await redis.set(index.prefix + ENTRY_PREFIX + phash, e.to_bytes(), ex=ttl)
    await index.add(e)
    return e


async def count_keys(redis: Redis, pattern: str) -> int:
    return len([k async for k in redis.scan_iter(match=pattern, count=1000)])


# --- the Redis index ---------------------------------------------------------------------------------------------


@pytest.mark.stack
async def test_the_script_finds_every_hash_within_t_with_its_exact_distance(redis15: Redis, prefix: str) -> None:
    rng = random.Random(11)
    index = make_index(redis15, prefix)
    stored = [random_hash(rng) for _ in range(300)]
    for h in stored:
        await store(redis15, index, h)
    for h in stored:
        bits = rng.randint(0, T)
        match = await index.lookup(flip(h, bits, rng), claim=False)
        assert (match.kind, match.phash, match.distance) == (NearKind.NEAR, h, bits)
        assert match.entry is not None and match.entry.phash == h
    for h in stored[:50]:  # just beyond T: never (the popcount in Lua agrees with Python's at the boundary)
        assert (await index.lookup(flip(h, T + 1, rng), claim=False)).kind is NearKind.MISS
    for _ in range(300):
        assert (await index.lookup(random_hash(rng), claim=False)).kind is NearKind.MISS


@pytest.mark.stack
async def test_another_version_is_never_served(redis15: Redis, prefix: str) -> None:
    rng = random.Random(12)
    old = make_index(redis15, prefix, version="m|p1|t1")
    h = random_hash(rng)
    await store(redis15, old, h)
    assert (await make_index(redis15, prefix, version="m|p2|t1").lookup(flip(h, 2, rng), claim=False)).kind \
        is NearKind.MISS
    # The shared exact entry now holds another version's answer: the old index's member must not serve it.
    await redis15.set(prefix + ENTRY_PREFIX + h, cached_entry(h, "m|p9|t1").to_bytes(), ex=60)
    assert (await old.lookup(flip(h, 2, rng), claim=False)).kind is NearKind.MISS


@pytest.mark.stack
async def test_index_sets_expire_with_their_entries_and_are_trimmed_on_touch(redis15: Redis, prefix: str) -> None:
    rng = random.Random(13)
    short = make_index(redis15, prefix, ttl=1)
    hashes = [random_hash(rng) for _ in range(40)]
    for h in hashes:
        await store(redis15, short, h, ttl=1)
    assert await count_keys(redis15, prefix + INDEX_PREFIX + "*") == 40 * (T + 1)
    # A set that is touched after its member expired is trimmed: the new member is alone in the shared sets.
    survivor = hashes[0]
    # Wait until the clock has passed the expiry every member was stored with (whole seconds, so up to 2 s).
    expiries = [score for key in short.result_keys(survivor)
                for _, score in await redis15.zrange(key, 0, -1, withscores=True)]
    await wait_until_clock_passes(max(expiries))
    longer = make_index(redis15, prefix, ttl=300)
    neighbour = f"{int(survivor, 16) ^ 1:064x}"  # same chunks except the last one
    await store(redis15, longer, neighbour)
    shared = longer.result_keys(neighbour)[0]
    assert await redis15.zrange(shared, 0, -1) == [neighbour.encode()]
    # Sets nobody touches disappear with their last member (Redis expires them): no growth after the entries
    # expire. Only the neighbour's sets are left, once Redis has expired the others.
    deadline = time.monotonic() + 30
    while (left := await count_keys(redis15, prefix + INDEX_PREFIX + "*")) != T + 1:
        assert left > T + 1 and time.monotonic() < deadline, f"{left} index sets left, expected {T + 1}"
        await asyncio.sleep(0.1)
    assert await redis15.ttl(shared) > 250


@pytest.mark.stack
async def test_concurrent_near_duplicates_claim_once(redis15: Redis, prefix: str) -> None:
    """Twenty near-duplicates look up at once (as twenty partitions would): one claims, all others wait on it."""
    rng = random.Random(14)
    index = make_index(redis15, prefix)
    base = random_hash(rng)
    burst = [flip(base, rng.randint(0, T // 2), rng) for _ in range(20)]
    burst = list(dict.fromkeys(burst))
    matches = await asyncio.gather(*(index.lookup(h, claim=True) for h in burst))
    kinds = collections.Counter(m.kind for m in matches)
    assert kinds[NearKind.CLAIMED] == 1 and kinds[NearKind.PENDING] == len(burst) - 1
    owner = burst[[m.kind for m in matches].index(NearKind.CLAIMED)]
    assert all(m.phash == owner for m in matches if m.kind is NearKind.PENDING)
    await store(redis15, index, owner)  # the result lands: the claim goes, the result is served
    assert await count_keys(redis15, prefix + "cache:image:mihp:*") == 0
    assert (await index.lookup(burst[-1], claim=True)).kind is NearKind.NEAR


@pytest.mark.stack
async def test_invalidation_by_phash_and_by_job_id(redis15: Redis) -> None:
    """Production key names (in database 15): the entry, its index memberships and the job mapping go."""
    rng = random.Random()
    version = f"test-{uuid.uuid4().hex[:8]}"
    index = RedisNearIndex(redis15, max_distance=T, model_version=version, ttl_seconds=60, claim_ttl_seconds=10)
    cache = ResultCache(redis15, ttl_seconds=60, model_version=version)
    first, second = random_hash(rng), random_hash(rng)
    try:
        for h in (first, second):
            e = cached_entry(h, version)
            await cache.put(e)
            await index.add(e)
        job = (await cache.get(second)).job_id  # type: ignore[union-attr]
        assert await redis15.get(JOB_PREFIX + job) == second.encode()

        assert await invalidate(redis15, phash=first.upper()) == [first]
        assert await cache.get(first) is None
        assert (await index.lookup(flip(first, 3, rng), claim=False)).kind is NearKind.MISS
        assert not any([await redis15.zscore(k, first) for k in index.result_keys(first)])
        assert await redis15.zscore(INVALIDATED_KEY, first) is not None

        assert await invalidate(redis15, job_id=job) == [second]
        assert await cache.get(second) is None and await redis15.get(JOB_PREFIX + job) is None
        assert await invalidate(redis15, job_id=job) == [] and await invalidate(redis15, phash=second) == []
        with pytest.raises(ValueError):
            await invalidate(redis15, phash="not-a-phash")
    finally:
        await redis15.zrem(INVALIDATED_KEY, first, second)


@pytest.mark.stack
async def test_the_invalidate_command(redis15: Redis, stack_scratch_redis_url: str) -> None:
    rng = random.Random()
    version = f"test-{uuid.uuid4().hex[:8]}"
    h = random_hash(rng)
    e = cached_entry(h, version)
    await ResultCache(redis15, ttl_seconds=60, model_version=version).put(e)
    await RedisNearIndex(redis15, max_distance=T, model_version=version, ttl_seconds=60, claim_ttl_seconds=10).add(e)
    env = {**os.environ, "REDIS_URL": stack_scratch_redis_url}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tools.invalidate", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)

    try:
        done = run("--job-id", e.job_id)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"invalidated": [h]}
        again = run("--phash", h)
        assert again.returncode == 1 and json.loads(again.stdout) == {"invalidated": []}
        assert run("--phash", "xyz").returncode == 2
    finally:
        await redis15.zrem(INVALIDATED_KEY, h)


# --- the pipeline ------------------------------------------------------------------------------------------------


async def _calls() -> int:
    return int((await simulator("GET", "/_sim/stats"))["calls"])


def _photo_of(results: dict[str, AnalysisResult], photo_by_job: dict[str, int],
              files: list[tuple[int, Path]]) -> dict[str, int]:
    """For every result, the photo whose model call answered it: the paying job's photo when that job is one of
    this burst's, else the photo whose re-uploads hash nearest to the matched pHash (a job from elsewhere)."""
    reference = [(photo, int(hash_image(p.read_bytes(), max_pixels=50_000_000).phash, 16)) for photo, p in files]
    answered = {}
    for job, r in results.items():
        reused = r.cache.reused_job_id
        if reused is None or reused in photo_by_job:
            answered[job] = photo_by_job.get(reused or job, -1)
        else:
            matched = int(r.cache.matched_phash or r.cache.phash, 16)
            answered[job] = min(reference, key=lambda ph: (matched ^ ph[1]).bit_count())[0]
    return answered


async def _burst(pipeline, files: list[tuple[int, Path]], seed: int = 5):  # type: ignore[no-untyped-def]
    """Upload every file, then publish all their upload-complete events at once, in a shuffled order."""
    rng = random.Random(seed)
    files = list(files)
    rng.shuffle(files)
    blobs = [p.read_bytes() for _, p in files]
    assert len({hash(b) for b in blobs}) == len(blobs), "re-uploads must not be byte-identical"
    keys = await pipeline.client.upload_many(blobs)
    before = await _calls()
    async with pipeline.client.results() as watcher:
        job_ids = await asyncio.gather(*(watcher.publish(k) for k in keys))
        await watcher.wait_for(job_ids, timeout=180)
        results = await _own_results(watcher, job_ids, pipeline.settings.model_version)
        await watcher.drain(1.0)
    calls = await _calls() - before
    photo_by_job = {job: photo for job, (photo, _) in zip(job_ids, files, strict=True)}
    duplicates = [j for j in job_ids if len(_own(watcher.received.get(j, []), pipeline.settings.model_version)) != 1]
    return results, calls, photo_by_job, duplicates


def _own(results: list[AnalysisResult], version: str) -> list[AnalysisResult]:
    # Another worker of another consumer group on the same broker (a benchmark, say) answers these jobs too.
    # Only this session's worker is under test.
    return [r for r in results if of_group(r, version)]


async def _own_results(watcher, job_ids: list[str], version: str, timeout: float = 120) -> dict[str, AnalysisResult]:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while True:
            own = {j: _own(watcher.received.get(j, []), version) for j in job_ids}
            if all(own.values()):
                return {j: rs[0] for j, rs in own.items()}
            await watcher.drain(0.3)


@pytest.mark.pipeline
async def test_a_burst_of_reuploads_costs_one_call_per_photo(pipeline) -> None:  # type: ignore[no-untyped-def]
    """40 photos x 6 re-uploads (re-encode, resize, screenshot, +10% brightness, EXIF rotation), all at once."""
    assert pipeline.settings.near_duplicate_max_distance == T and pipeline.settings.near_duplicate_wait
    folders = variant_folders(40, size="native", mirror=True)
    files = [(i, folder / name) for i, folder in enumerate(folders) for name in CATCHABLE]
    results, calls, photo_by_job, duplicates = await _burst(pipeline, files)

    assert collections.Counter(r.status for r in results.values()) == {JobStatus.DONE: len(files)}
    assert not duplicates, "a job got more than one result"
    # Zero false matches: every job was answered by a model call made for its own photo.
    answered_by = _photo_of(results, photo_by_job, files)
    assert all(answered_by[j] == photo_by_job[j] for j in results), "a result came from another photo"
    paid = [r for r in results.values() if r.cache.source.value == "model"]
    assert len(paid) == calls, "the simulator counted a model call no job paid for"
    # Within a few percent of one call per photo (pHash misses a few re-uploads beyond T bits).
    assert len(folders) <= calls <= len(folders) + max(1, round(0.05 * len(folders))), calls
    # Near matches say how they matched.
    sources = collections.Counter(r.cache.source.value for r in results.values())
    assert sources["near"] + sources["inflight"] > len(files) // 2, sources
    for r in results.values():
        if r.cache.matched_phash is not None:
            assert r.cache.distance == hamming(r.cache.phash, r.cache.matched_phash) <= T
            assert r.cache.source.value in ("near", "inflight") and r.cache.reused_job_id
        else:
            assert r.cache.distance == 0


@pytest.mark.pipeline
async def test_crops_and_overlays_never_borrow_another_photos_answer(pipeline) -> None:  # type: ignore[no-untyped-def]
    """What pHash cannot catch (a 5% crop, a caption) pays for its own call, but never gets a wrong answer."""
    folders = variant_folders(40, size="native", offset=3, mirror=True)[:12]
    files = [(i, folder / name) for i, folder in enumerate(folders) for name in ("original.jpg", *UNCATCHABLE)]
    results, calls, photo_by_job, duplicates = await _burst(pipeline, files, seed=6)
    assert collections.Counter(r.status for r in results.values()) == {JobStatus.DONE: len(files)}
    assert not duplicates
    answered_by = _photo_of(results, photo_by_job, files)
    assert all(answered_by[j] == photo_by_job[j] for j in results), "a result came from another photo"
    assert calls >= 2 * len(folders)  # most crops and overlays are beyond T: they pay


@pytest.mark.pipeline
async def test_an_invalidated_result_is_not_served_again(pipeline) -> None:  # type: ignore[no-untyped-def]
    folder = variant_folders(40, size="native", offset=5, mirror=True)[15]  # photo 35: no other test here sends it
    original, rotated = (folder / "original.jpg").read_bytes(), (folder / "exif-rot.jpg").read_bytes()
    keys = [await pipeline.client.upload(original) for _ in range(2)] + [await pipeline.client.upload(rotated)]
    redis = Redis.from_url(pipeline.settings.redis_url)
    invalidated: list[str] = []
    try:
        async with pipeline.client.results() as watcher:
            first = await watcher.publish(keys[0])
            version = pipeline.settings.model_version
            await watcher.wait_for([first])
            paid = (await _own_results(watcher, [first], version))[first]
            assert paid.cache.source.value == "model"
            invalidated = await invalidate(redis, job_id=first)
            assert invalidated == [paid.cache.phash]
            # The worker reads invalidations on a timer: until it has, its table copy may still answer a copy
            # (never paying). Send copies of the same photo until one is not answered from that copy; it must
            # pay for a call of its own, and within a deadline.
            deadline = time.monotonic() + 60
            while True:
                again = await watcher.publish(await pipeline.client.upload(original))
                await watcher.wait_for([again])
                result = (await _own_results(watcher, [again], version))[again]
                if result.cache.source.value != "table":
                    break
                assert time.monotonic() < deadline, "the invalidated table copy is still served"
            assert result.cache.source.value == "model" and result.cache.reused_job_id is None
            near = await watcher.publish(keys[2])  # a near-duplicate gets the new answer, not the invalidated one
            await watcher.wait_for([near])
            near_result = (await _own_results(watcher, [near], version))[near]
            assert near_result.cache.reused_job_id == again
    finally:
        if invalidated:
            await redis.zrem(INVALIDATED_KEY, *invalidated)
        await redis.aclose()


def test_variant_hashes_of_one_photo_fall_within_t() -> None:
    """The premise of the burst test, checked on its own photos with the pipeline's hashing."""
    folders = variant_folders(40, size="native", mirror=True)
    beyond = 0
    for folder in folders:
        hashes = [hash_image((folder / n).read_bytes(), max_pixels=50_000_000).phash for n in CATCHABLE]
        beyond += sum(hamming(hashes[0], h) > T for h in hashes[1:])
    assert beyond <= 2

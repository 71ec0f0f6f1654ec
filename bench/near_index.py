"""Near-duplicate benchmarks on the local stack: index lookup cost, and model calls on a burst of re-uploads.

    python -m bench.near_index lookup                  # T from the settings' default, sizes 1e4 1e5 1e6
    python -m bench.near_index lookup --t 12 --sizes 10000 100000 --json
    python -m bench.near_index burst --photos 40       # exact only / near without waiting / near + waiting

**lookup**

Uses its own Redis database (15 by default) and a unique key prefix, and deletes every key it made at the end,
so it never touches the pipeline's cache. Cached hashes are uniform random 256-bit values (real pHashes are close
to uniform: the team's 330 photos' per-bit entropy sums to 253 of 256 bits); the index is bulk-loaded with the same
keys, scores and expiries as ``RedisNearIndex.add`` writes. At each size it measures, one lookup at a time
(what one dedupe step does):

- ``miss``: a random hash, nothing within T (the path of a new photo: the script also claims it);
- ``near``: a cached hash with 1..T random bits flipped (must find it: recall is checked, not assumed);
- candidates per lookup (members of the query's chunk sets) and Redis memory per cached hash.

**burst** starts one worker per configuration (its own consumer group and prompt version, so each starts with an
empty cache), uploads the re-uploads ``bench.variants`` makes of ``--photos`` sample photos (original, quality 70,
50% resize, screenshot, +10% brightness, EXIF rotation: none byte-identical), publishes all their upload-complete
events at once in a shuffled order, and counts model calls (the simulator's counter and the results that say
``model``), second calls (calls beyond one per photo) and false matches (a result answered by a call made for
another photo). Run it on a quiet stack: any other worker on the same topics answers these jobs too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from redis.asyncio import Redis

from models.settings import Settings
from streams.cache import KEY_PREFIX as ENTRY_PREFIX
from streams.imaging import hash_image
from streams.near_index import NearKind, RedisNearIndex
from tools.kit import PipelineClient, Simulator, free_port, start_worker, wait_until_pipeline_answers
from tools.kit.hashes import cached_entry, flip, random_hash

# KEYS: m chunk keys per hash, hash after hash. ARGV: m, expiry (epoch s), then the hashes.
BULK_LUA = """
local m = tonumber(ARGV[1])
local expiry = tonumber(ARGV[2])
for j = 3, #ARGV do
  local base = (j - 3) * m
  for i = 1, m do
    local key = KEYS[base + i]
    redis.call('ZADD', key, expiry, ARGV[j])
    redis.call('EXPIREAT', key, expiry)
  end
end
return #ARGV - 2
"""

# Delete this run's keys server-side, one SCAN page per call.
CLEAN_LUA = """
local page = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', 20000)
for _, key in ipairs(page[2]) do redis.call('UNLINK', key) end
return page[1]
"""

BATCH = 200
QUERIES = 2000
TTL = 3600


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


async def _bulk_load(redis: Redis, index: RedisNearIndex, hashes: list[str]) -> None:
    script = redis.register_script(BULK_LUA)
    expiry = int(time.time()) + TTL
    pending: list[Any] = []
    for start in range(0, len(hashes), BATCH):
        batch = hashes[start:start + BATCH]
        keys = [k for h in batch for k in index.result_keys(h)]
        pending.append(script(keys=keys, args=[index.layout.chunks, expiry, *batch]))
        if len(pending) >= 8:  # a few calls in flight keep Redis busy while Python builds the next keys
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)


async def _used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def _measure(redis: Redis, index: RedisNearIndex, cached: list[str], sample: list[str],
                   rng: random.Random) -> dict[str, Any]:
    misses, nears, found, candidates = [], [], 0, []
    queries = [random_hash(rng) for _ in range(QUERIES)]
    near_queries = [(h, flip(h, rng.randint(1, index.max_distance), rng)) for h in
                    (rng.choice(sample) for _ in range(QUERIES))]
    for q in queries[:20]:  # warm the connection and the script cache
        await index.lookup(q, claim=False)
    for q in queries:
        t = time.perf_counter()
        match = await index.lookup(q, claim=True)  # a new photo's path: look, find nothing, claim
        misses.append(time.perf_counter() - t)
        if match.kind is not NearKind.CLAIMED:
            raise AssertionError(f"a random hash matched something: {match}")
    for original, q in near_queries:
        t = time.perf_counter()
        match = await index.lookup(q, claim=False)
        nears.append(time.perf_counter() - t)
        found += match.kind is NearKind.NEAR and match.phash == original
    async with redis.pipeline(transaction=False) as pipe:
        for q in queries[:200]:
            for key in index.result_keys(q):
                pipe.zcard(key)
        cards = await pipe.execute()
    m = index.layout.chunks
    candidates = [sum(cards[i:i + m]) for i in range(0, len(cards), m)]
    for q in queries:  # drop this round's claims
        await index.release(q)
    return {
        "cached": len(cached),
        "miss": _percentiles(misses),
        "near": _percentiles(nears),
        "near_recall": round(found / len(near_queries), 4),
        "candidates_per_lookup": round(statistics.fmean(candidates), 2),
    }


async def run(sizes: list[int], *, max_distance: int, redis_url: str, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    redis = Redis.from_url(redis_url)
    prefix = f"bench:near:{uuid.uuid4().hex[:8]}:"
    model_version = "bench|p0|t0"
    index = RedisNearIndex(redis, max_distance=max_distance, model_version=model_version, ttl_seconds=TTL,
                           claim_ttl_seconds=60, prefix=prefix)
    rows = []
    cached: list[str] = []
    try:
        base_memory = await _used_memory(redis)
        sample: list[str] = []
        for size in sorted(sizes):
            started = time.monotonic()
            new = [random_hash(rng) for _ in range(size - len(cached))]
            await _bulk_load(redis, index, new)
            cached.extend(new)
            # Entries (what a near hit returns) for a sample of the cached hashes; the others need only the index.
            async with redis.pipeline(transaction=False) as pipe:
                for h in new[:1000]:
                    entry = cached_entry(h, model_version, f"bench-{h[:12]}")
                    pipe.set(prefix + ENTRY_PREFIX + h, entry.to_bytes(), ex=TTL)
                await pipe.execute()
            sample.extend(new[:1000])
            load_s = time.monotonic() - started
            memory = await _used_memory(redis) - base_memory
            row = await _measure(redis, index, cached, sample, rng)
            row["load_s"] = round(load_s, 1)
            row["index_bytes_per_hash"] = round(memory / len(cached))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    finally:
        clean = redis.register_script(CLEAN_LUA)
        cursor = "0"
        while True:
            cursor = (await clean(args=[cursor, prefix + "*"])).decode()
            if cursor == "0":
                break
        await redis.aclose()
    return {"max_distance": max_distance, "chunks": index.layout.chunks,
            "chunk_bits": sorted({w for _, w in index.layout.spans}), "queries": QUERIES, "rows": rows}


def render(report: dict[str, Any]) -> str:
    lines = [f"T = {report['max_distance']}: {report['chunks']} chunks of {report['chunk_bits']} bits, "
             f"{report['queries']} lookups of each kind, one at a time",
             f"{'cached':>9}  {'miss p50':>9} {'p99':>7}  {'near p50':>9} {'p99':>7}  {'recall':>6}  "
             f"{'candidates':>10}  {'bytes/hash':>10}  {'load s':>6}"]
    for r in report["rows"]:
        lines.append(f"{r['cached']:>9}  {r['miss']['p50_ms']:>9.3f} {r['miss']['p99_ms']:>7.3f}  "
                     f"{r['near']['p50_ms']:>9.3f} {r['near']['p99_ms']:>7.3f}  {r['near_recall']:>6.1%}  "
                     f"{r['candidates_per_lookup']:>10}  {r['index_bytes_per_hash']:>10}  {r['load_s']:>6}")
    return "\n".join(lines)


# --- burst --------------------------------------------------------------------------------------------------

CATCHABLE = ("original.jpg", "q70.jpg", "resize50.jpg", "screenshot.png", "bright10.jpg", "exif-rot.jpg")
CONFIGS = {
    "exact": {"near_duplicate_max_distance": 0, "near_duplicate_wait": False},
    "near-no-wait": {"near_duplicate_wait": False},
    "near-wait": {"near_duplicate_wait": True},
}


def _answered_for(result: Any, photo_of: dict[str, int], reference: list[tuple[int, int]]) -> int:
    """The photo whose model call answered ``result``: its paying job's photo when that job is in the burst,
    else (a job of an earlier run) the photo whose re-uploads' hashes are nearest to the matched pHash."""
    cache = result.cache
    if cache.reused_job_id is None or cache.reused_job_id in photo_of:
        return photo_of.get(cache.reused_job_id or result.job_id, -1)
    matched = int(cache.matched_phash or cache.phash, 16)
    return min(reference, key=lambda ph: (matched ^ ph[1]).bit_count())[0]


async def _burst_once(name: str, overrides: dict[str, Any], files: list[tuple[int, bytes]],
                      latency_ms: int, reference: list[tuple[int, int]]) -> dict[str, Any]:
    session = uuid.uuid4().hex[:8]
    settings = Settings(_env_file=None, app_id=f"waste-near-bench-{session}",  # type: ignore[call-arg]
                        prompt_version=f"near-bench-{session}",
                        worker_web_port=free_port(), **overrides)
    simulator = Simulator()  # the stack's: its workers' calls are counted while nothing else runs
    await simulator.configure(latency_ms=latency_ms, jitter_ms=latency_ms // 6, script=[])
    worker = start_worker(settings, name=f"near-bench-{name}")
    client = PipelineClient(settings)
    try:
        await wait_until_pipeline_answers(client, worker)
        keys = await client.upload_many([blob for _, blob in files])
        calls_before = await simulator.calls()
        started = time.monotonic()
        async with client.results() as watcher:
            job_ids = await asyncio.gather(*(watcher.publish(k) for k in keys))
            await watcher.wait_for(job_ids, timeout=300)
            own: dict[str, Any] = {}
            while len(own) < len(job_ids):  # only this worker's results (its prompt version)
                for j in job_ids:
                    mine = [r for r in watcher.received.get(j, [])
                            if r.cache is None or r.cache.model_version == settings.model_version]
                    if mine:
                        own[j] = mine[0]
                if len(own) < len(job_ids):
                    await watcher.drain(0.3)
        elapsed = time.monotonic() - started
        calls = await simulator.calls() - calls_before
    finally:
        worker.stop()
    photo_of = {j: photo for j, (photo, _) in zip(job_ids, files, strict=True)}
    photos = len({p for p, _ in files})
    sources: dict[str, int] = {}
    false_matches = failed = 0
    for j, r in own.items():
        if r.cache is None:
            failed += 1
            continue
        sources[r.cache.source.value] = sources.get(r.cache.source.value, 0) + 1
        if _answered_for(r, photo_of, reference) != photo_of[j]:
            false_matches += 1
    paid = sources.get("model", 0)
    return {
        "config": name, "jobs": len(files), "photos": photos, "model_calls": calls, "paid_results": paid,
        "second_calls": paid - photos, "second_call_rate": round((paid - photos) / (len(files) - photos), 4),
        "false_matches": false_matches, "failed": failed, "sources": sources, "seconds": round(elapsed, 1),
    }


async def burst(photos: int, *, size: str, configs: list[str], latency_ms: int, seed: int = 5) -> dict[str, Any]:
    from bench.variants import variant_folders

    folders = variant_folders(photos, size=size)
    files = [(i, (folder / name).read_bytes()) for i, folder in enumerate(folders) for name in CATCHABLE]
    random.Random(seed).shuffle(files)
    with ThreadPoolExecutor(2) as pool:  # every re-upload's pHash, to tell which photo a matched hash is from
        hashes = list(pool.map(lambda f: hash_image(f[1], max_pixels=50_000_000).phash, files))
    reference = [(photo, int(h, 16)) for (photo, _), h in zip(files, hashes, strict=True)]
    simulator = Simulator()
    saved = await simulator.request("GET", "/_sim/config")
    rows = []
    try:
        for name in configs:
            row = await _burst_once(name, CONFIGS[name], files, latency_ms, reference)
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    finally:  # leave the simulator as it was found
        await simulator.configure(**{k: saved[k] for k in ("latency_ms", "jitter_ms") if k in saved})
    return {"size": size, "variants": list(CATCHABLE), "model_latency_ms": latency_ms, "rows": rows}


def render_burst(report: dict[str, Any]) -> str:
    lines = [f"{report['rows'][0]['photos']} photos x {len(report['variants'])} re-uploads ({report['size']} size), "
             f"all at once; simulated model latency {report['model_latency_ms']} ms",
             f"{'config':<14}{'jobs':>6}{'calls':>7}{'paid':>6}{'2nd calls':>11}{'2nd-call rate':>15}"
             f"{'false':>7}  sources"]
    for r in report["rows"]:
        lines.append(f"{r['config']:<14}{r['jobs']:>6}{r['model_calls']:>7}{r['paid_results']:>6}"
                     f"{r['second_calls']:>11}{r['second_call_rate']:>15.1%}{r['false_matches']:>7}  {r['sources']}")
        if r["model_calls"] != r["paid_results"]:
            lines.append(f"  ^ the simulator counted {r['model_calls'] - r['paid_results']} calls no result paid for: "
                         "another worker shared the topics during this run; rerun on a quiet stack")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    lookup = sub.add_parser("lookup", help="lookup latency at growing index sizes")
    lookup.add_argument("--t", type=int, default=None, help="max distance (default: NEAR_DUPLICATE_MAX_DISTANCE's)")
    lookup.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    lookup.add_argument("--redis-db", type=int, default=15)
    lookup.add_argument("--json", action="store_true")
    b = sub.add_parser("burst", help="model calls on a burst of re-uploads, per configuration")
    b.add_argument("--photos", type=int, default=40)
    b.add_argument("--size", choices=("native", "phone"), default="native")
    b.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    b.add_argument("--latency-ms", type=int, default=1500, help="simulated model latency")
    b.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "burst":
        report = asyncio.run(burst(args.photos, size=args.size, configs=args.configs, latency_ms=args.latency_ms))
        print(json.dumps(report, indent=2) if args.json else render_burst(report))
        return 0
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    max_distance = args.t if args.t is not None else settings.near_duplicate_max_distance
    base = settings.redis_url.rsplit("/", 1)[0] if settings.redis_url.count("/") > 2 else settings.redis_url
    report = asyncio.run(run(args.sizes, max_distance=max_distance, redis_url=f"{base}/{args.redis_db}"))
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

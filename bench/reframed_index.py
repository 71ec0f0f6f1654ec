"""What the reframed tier costs in Redis: lookups with word sets as full as a million cached photos make them (and
as full as the cap allows), and Redis memory per cached photo.

    python -m bench.reframed_index                # Redis database 15, its own key prefix, deleted afterwards

A million photos posting ~62 words each over 2^24 words put ~3.7 members in an average word set; the cap
(REFRAMED_WORD_CAP, 32) bounds the worst case whatever the size. The lookup reads the query's words (one pipeline
of single-key ZRANGEBYSCOREs) and fetches up to REFRAMED_CANDIDATES feature blobs (one pipeline of GETs): it is
timed with every word set the query touches filled to 4 members (a million photos) and to the cap (any size).
Memory per photo is measured by posting ``--photos`` synthetic photos (random words, real-size blobs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
import uuid

from redis.asyncio import Redis

from streams import reframed
from streams.imaging import ImageLimits
from streams.reframed_index import ID_HEX, RedisReframedIndex, word_key
from tools.evaluate_reframed import lookalike_set
from tools.photos import sample_photos


async def _lookup_ms(index: RedisReframedIndex, words: list[int], candidates: int, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        votes = await index.votes(words)
        await index.features([i for i, _ in votes.most_common(candidates)])
        out.append((time.perf_counter() - started) * 1000)
    return out


async def run(url: str, photos: int, runs: int, cap: int, candidates: int) -> dict[str, object]:
    redis = Redis.from_url(url)
    version = f"bench-{uuid.uuid4().hex[:8]}"
    index = RedisReframedIndex(redis, model_version=version, ttl_seconds=3600, word_cap=cap)
    tag = index._tag
    blob_photo = lookalike_set(sample_photos()[:1])[0]
    # A real query's words (a 3% crop of a sample photo) and a real photo's blob.
    query, stored = reframed.features_of_bytes(blob_photo["crop3c"], limits=ImageLimits(max_pixels=50_000_000))
    blob = reframed.pack(stored)
    words = reframed.query_words(query)
    report: dict[str, object] = {"query_words": len(words), "blob_bytes": len(blob)}
    try:
        rng = random.Random(1)
        before = int((await redis.info("memory"))["used_memory"])
        for start in range(0, photos, 16):  # synthetic photos: random ids, random words, real-size blobs
            pipe_tasks = []
            for _ in range(start, min(photos, start + 16)):
                phash = f"{rng.getrandbits(256):064x}"
                pipe_tasks.append(index.add(phash, blob, [rng.getrandbits(reframed.WORD_BITS) for _ in range(62)]))
            await asyncio.gather(*pipe_tasks)
        after = int((await redis.info("memory"))["used_memory"])
        report["photos_posted"] = photos
        report["redis_bytes_per_photo"] = round((after - before) / photos) if photos else None
        for label, members in (("1M (4 per word)", 4), (f"cap ({cap} per word)", cap)):
            pipe = redis.pipeline(transaction=False)
            expiry = int(time.time()) + 3600
            for word in words:
                pipe.zadd(word_key(tag, word), {f"{rng.getrandbits(64):0{ID_HEX}x}": expiry for _ in range(members)})
            await pipe.execute()
            for member in range(candidates):  # candidates that share many words: their blobs are fetched
                pid = f"{member:0{ID_HEX}x}"
                await redis.set(f"cache:image:rff:{tag}:{pid}", ("0" * 64).encode() + blob, ex=3600)
                pipe = redis.pipeline(transaction=False)
                for word in words[member::candidates][:20]:
                    pipe.zadd(word_key(tag, word), {pid: expiry + 1})
                await pipe.execute()
            times = await _lookup_ms(index, words, candidates, runs)
            times.sort()
            report[label] = {"p50_ms": round(statistics.median(times), 2),
                             "p99_ms": round(times[int(len(times) * 0.99) - 1], 2),
                             "members_read": len(words) * members}
    finally:
        cursor = 0
        while True:
            cursor, keys = await redis.scan(cursor, match=f"cache:image:rf?:{tag}:*", count=5000)
            if keys:
                await redis.delete(*keys)
            if cursor == 0:
                break
        await redis.aclose()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--cap", type=int, default=32)
    parser.add_argument("--candidates", type=int, default=8)
    args = parser.parse_args(argv)
    print(asyncio.run(run(args.redis, args.photos, args.runs, args.cap, args.candidates)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

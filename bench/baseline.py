"""The original worker, re-created faithfully, as the baseline the Faust pipeline is compared with.

What the original design's worker did for each upload, one at a time (DESIGN.md section 5):
download the object from S3 (aiobotocore ``get_object``), decode the whole JPEG and hash it
(``imagehash.phash(Image.open(f), hash_size=16)``, on the event loop), ``GET cache:image:hash:{phash}``
from Redis and, only on a miss, call the vision model (the OpenAI client, here pointed at the simulator,
with the image's CDN URL as the original did) and ``SETEX`` the answer for 7 days.

It does not consume Kafka events: it walks the same list of object keys the pipeline is sent, doing the
same I/O per event. Its cache lives in its own Redis database (``BASELINE_REDIS_DB``) under the original
key format, so it never touches the service's cache, and its keys are deleted afterwards.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import imagehash
from openai import AsyncOpenAI
from PIL import Image
from redis.asyncio import Redis

from bench.stats import latency_summary
from models.settings import Settings
from streams.clients import s3_client
from streams.fetch import cdn_url

BASELINE_REDIS_DB = 1
KEY_PREFIX = "cache:image:hash:"  # the original design's key format
TTL_SECONDS = 7 * 24 * 3600
PROMPT = "Classify this piece of household waste and say how to dispose of it. Answer with JSON."


def _redis_url(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


@dataclass
class Pass:
    seconds: float
    latencies: list[float] = field(default_factory=list)
    hits: int = 0
    misses: int = 0

    @property
    def ev_s(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


class OriginalWorker:
    def __init__(self, settings: Settings, model_base_url: str) -> None:
        self.settings = settings
        self.model_base_url = model_base_url
        self.keys_written: set[str] = set()

    async def __aenter__(self) -> OriginalWorker:
        self._s3_cm = s3_client(self.settings)
        self._s3 = await self._s3_cm.__aenter__()
        self._redis = Redis.from_url(_redis_url(self.settings.redis_url, BASELINE_REDIS_DB))
        self._openai = AsyncOpenAI(api_key="sim-key", base_url=self.model_base_url, max_retries=2, timeout=30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.keys_written:
            await self._redis.delete(*self.keys_written)
        await self._redis.aclose()
        await self._openai.close()
        await self._s3_cm.__aexit__(None, None, None)

    async def handle(self, key: str) -> bool:
        """One upload, the original way. Returns True on a cache hit."""
        resp = await self._s3.get_object(Bucket=self.settings.s3_bucket_name, Key=key)
        async with resp["Body"] as body:
            data = await body.read()
        phash = str(imagehash.phash(Image.open(io.BytesIO(data)), hash_size=16))
        cache_key = f"{KEY_PREFIX}{phash}"
        cached = await self._redis.get(cache_key)
        if cached is not None:
            json.loads(cached)
            return True
        completion = await self._openai.chat.completions.create(
            model=self.settings.vision_model,
            messages=[{"role": "user", "content": [
                {"type": "text", "text": PROMPT},
                {"type": "image_url", "image_url": {"url": cdn_url(self.settings, key)}},
            ]}],
            response_format={"type": "json_object"},
        )
        answer = completion.choices[0].message.content or "{}"
        await self._redis.setex(cache_key, TTL_SECONDS, json.dumps({"result": json.loads(answer)}))
        self.keys_written.add(cache_key)
        return False

    async def run(self, keys: Sequence[str]) -> Pass:
        """Handle ``keys`` one after another, like the original single consumer loop."""
        started = time.perf_counter()
        result = Pass(0.0)
        for key in keys:
            t0 = time.perf_counter()
            hit = await self.handle(key)
            result.latencies.append(time.perf_counter() - t0)
            if hit:
                result.hits += 1
            else:
                result.misses += 1
        result.seconds = time.perf_counter() - started
        return result

    async def forget(self, keys: Sequence[str]) -> None:
        """Drop the baseline's cache entries for the photos in ``keys``, so a warm-up pass starts cold."""
        for key in keys:
            resp = await self._s3.get_object(Bucket=self.settings.s3_bucket_name, Key=key)
            async with resp["Body"] as body:
                data = await body.read()
            phash = str(imagehash.phash(Image.open(io.BytesIO(data)), hash_size=16))
            await self._redis.delete(f"{KEY_PREFIX}{phash}")


async def measure(settings: Settings, model_base_url: str, warm_keys: Sequence[str], hit_keys: Sequence[str],
                  repeats: int) -> dict[str, object]:
    """Warm the baseline's cache with one pass over ``warm_keys`` (misses), then time ``repeats`` hit passes."""
    async with OriginalWorker(settings, model_base_url) as worker:
        await worker.forget(warm_keys)
        warm = await worker.run(warm_keys)
        passes = [await worker.run(hit_keys) for _ in range(repeats)]
    rates = sorted(p.ev_s for p in passes)
    median_pass = sorted(passes, key=lambda p: p.ev_s)[len(passes) // 2]
    all_latencies = [x for p in passes for x in p.latencies]
    return {
        "hit_ev_s": round(rates[len(rates) // 2], 2),
        "hit_ev_s_runs": [round(r, 2) for r in rates],
        "hit_latency": latency_summary(median_pass.latencies),
        "hit_latency_all": latency_summary(all_latencies),
        "hits": sum(p.hits for p in passes),
        "misses_in_hit_passes": sum(p.misses for p in passes),
        "warm_pass": {"events": len(warm.latencies), "misses": warm.misses, "seconds": round(warm.seconds, 2)},
        "events_per_pass": len(hit_keys),
        "repeats": repeats,
    }

"""The reframed tier's index in Redis: visual words -> cached photos, and each cached photo's features.

Keys (every command touches one key: no scripts, no multi-key commands, so it runs on Redis Cluster as it is;
lookups are pipelines of single-key reads, which a cluster client splits by node)::

    cache:image:rfw:{tag}:{word}    sorted set: member = first 16 hex of a pHash, score = the entry's expiry
    cache:image:rff:{tag}:{id}      the photo's packed features (streams.reframed.pack) + its full pHash, TTL =
                                    the entry's

``{word}`` is the 24-bit visual word in hex; ``tag`` a digest of the model version and the feature format, so
another model, prompt or taxonomy never shares words (the entry's own model version is checked again when it is
served). Each photo is posted under the words of its INDEXED_KEYPOINTS strongest keypoints (~64 keys).

**Bounded work at any size.** A word set keeps at most ``cap`` members (the ones expiring last): an insert adds,
drops expired members and trims to the cap, and sets the key's expiry to its newest member's. A lookup reads at
most 2 x QUERY_WORD_KEYPOINTS words (live members only), counts votes, and fetches and verifies at most
``candidates`` photos: 2 round trips for a miss, 3 for a hit (the entry itself). With 24-bit words and 64 postings
per photo, a million cached photos put ~4 members in an average word set (bench.reframed_index measures it).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import struct
import time
import zlib
from collections import Counter
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis

from models.records import CachedClassification
from models.settings import Settings
from streams import reframed
from streams.imaging import ImageLimits, content_digest

WORD_PREFIX = "cache:image:rfw:"
FEATURES_PREFIX = "cache:image:rff:"
ID_HEX = 16
MIN_VOTES = 2  # a candidate shares at least this many words with the query (one shared word is noise)


def index_tag(model_version: str) -> str:
    return hashlib.sha1(f"{model_version}|rf{reframed.WORD_BITS}|{reframed._FORMAT_VERSION}".encode()).hexdigest()[:8]


def word_key(tag: str, word: int) -> str:
    return f"{WORD_PREFIX}{tag}:{word:06x}"


def features_key(tag: str, phash: str) -> str:
    return f"{FEATURES_PREFIX}{tag}:{phash[:ID_HEX]}"


@dataclass(frozen=True)
class Candidate:
    phash: str
    votes: int
    features: reframed.Features


class ReframedIndex(Protocol):
    """What the worker needs of the index: :class:`RedisReframedIndex` (tests/doubles.py has one in memory)."""

    async def add(self, phash: str, blob: bytes, word_list: list[int]) -> None: ...

    async def votes(self, word_list: list[int]) -> Counter[str]: ...

    async def features(self, ids: list[str]) -> list[tuple[str, bytes]]: ...

    async def delete(self, phash: str) -> None: ...


class RedisReframedIndex:
    def __init__(self, redis: Redis, *, model_version: str, ttl_seconds: int, word_cap: int = 32) -> None:
        self._redis = redis
        self._tag = index_tag(model_version)
        self._ttl = ttl_seconds
        self._cap = word_cap

    async def add(self, phash: str, blob: bytes, word_list: list[int]) -> None:
        """Post a paid-for photo (one round trip): its features with the entry's TTL, and its words."""
        now = time.time()
        expiry = int(now + self._ttl) + 1
        member = phash[:ID_HEX]
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(features_key(self._tag, phash), phash.encode() + blob, ex=self._ttl)
        for word in word_list:
            key = word_key(self._tag, word)
            pipe.zadd(key, {member: expiry})
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zremrangebyrank(key, 0, -(self._cap + 1))  # the cap: keep the members expiring last
            pipe.expireat(key, expiry)
        await pipe.execute()

    async def votes(self, word_list: list[int]) -> Counter[str]:
        """Cached photos (id) sharing the query's words, with how many words each shares. One round trip."""
        now = time.time()
        pipe = self._redis.pipeline(transaction=False)
        for word in word_list:
            pipe.zrangebyscore(word_key(self._tag, word), f"({now}", "+inf", start=0, num=self._cap)
        counts: Counter[str] = Counter()
        for members in await pipe.execute():
            for m in members:
                counts[m.decode() if isinstance(m, bytes) else m] += 1
        return counts

    async def features(self, ids: list[str]) -> list[tuple[str, bytes]]:
        """(full pHash, packed features) of the given ids that still exist. One round trip (single-key GETs)."""
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for id_ in ids:
            pipe.get(f"{FEATURES_PREFIX}{self._tag}:{id_}")
        out = []
        for raw in await pipe.execute():
            if raw and len(raw) > 64:
                out.append((raw[:64].decode("ascii", "replace"), bytes(raw[64:])))
        return out

    async def delete(self, phash: str) -> None:
        """Forget a photo's features (its word postings then point at nothing and are skipped)."""
        await self._redis.delete(features_key(self._tag, phash))


# --- the lookup the dedupe step makes when the pHash tiers missed --------------------------------------------------


@dataclass(frozen=True)
class ReframedMatch:
    entry: CachedClassification | None = None  # the reused result (None: nothing accepted)
    verdict: reframed.Verdict | None = None  # the check that accepted it (on a miss: the closest rejection)
    stored: bytes | None = None  # this upload's packed features, for the index if the job pays for its call
    verified: int = 0  # candidates verified
    timings_ms: dict[str, float] | None = None


def rule_from_settings(settings: Settings) -> reframed.Rule:
    return reframed.Rule(min_inliers=settings.reframed_min_inliers,
                         min_correlation=settings.reframed_min_correlation,
                         max_angle_degrees=settings.reframed_max_angle_degrees)


def _verify_all(query: reframed.Query, blobs: list[tuple[str, bytes]], rule: reframed.Rule
                ) -> list[tuple[str, reframed.Verdict]]:
    """Verify candidates in order until one is accepted (runs in the executor)."""
    out = []
    for phash, blob in blobs:
        try:
            features = reframed.unpack(blob)
        except (ValueError, zlib.error, struct.error):
            continue
        verdict = reframed.verify(query, features, rule)
        out.append((phash, verdict))
        if verdict.accepted:
            break
    return out


class ReframedTier:
    """The lookup the dedupe step makes when the pHash tiers missed, over the worker's index and clients."""

    def __init__(self, index: ReframedIndex, *, fetcher: Any, cache: Any, executor: Executor,
                 settings: Settings) -> None:
        self.index = index
        self._fetcher = fetcher
        self._cache = cache
        self._executor = executor
        self._settings = settings

    async def lookup(self, *, bucket: str, key: str, sha256: str | None, phash: str) -> ReframedMatch:
        """Re-fetch the upload (the CDN has it), compute its features off the event loop, and look for a cached
        photo it is a reframed copy of. Raises RedisError / PipelineError / aiohttp errors: the caller treats them
        as a miss."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        fetched = await self._fetcher.fetch(bucket, key)
        if sha256 is not None and await loop.run_in_executor(self._executor, content_digest, fetched.data) != sha256:
            return ReframedMatch()  # the object changed after it was hashed: no features of other bytes
        timings = {"fetch": _ms_since(started)}
        started = time.monotonic()
        query, stored = await loop.run_in_executor(self._executor, functools.partial(
            reframed.features_of_bytes, fetched.data, limits=ImageLimits.from_settings(self._settings)))
        blob = reframed.pack(stored)
        timings["features"] = _ms_since(started)
        started = time.monotonic()
        blobs = await self._candidates(query, phash)
        timings["index"] = _ms_since(started)
        started = time.monotonic()
        verdicts = await loop.run_in_executor(self._executor, _verify_all, query, blobs,
                                              rule_from_settings(self._settings))
        timings["verify"] = _ms_since(started)
        return await self._accepted(verdicts, blob, timings)

    async def _candidates(self, query: reframed.Query, phash: str) -> list[tuple[str, bytes]]:
        votes = await self.index.votes(reframed.query_words(query))
        votes.pop(phash[:ID_HEX], None)
        ids = [id_ for id_, n in votes.most_common(self._settings.reframed_candidates) if n >= MIN_VOTES]
        return await self.index.features(ids)

    async def _accepted(self, verdicts: list[tuple[str, reframed.Verdict]], blob: bytes,
                        timings: dict[str, float]) -> ReframedMatch:
        for matched, verdict in verdicts:
            if verdict.accepted:
                entry = await self._cache.get(matched)  # checks the model version; None when expired or invalidated
                if entry is not None:
                    return ReframedMatch(entry, verdict, blob, len(verdicts), timings)
        best = max((v for _, v in verdicts), key=lambda v: (v.inliers, v.correlation), default=None)
        return ReframedMatch(None, best, blob, len(verdicts), timings)


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 2)

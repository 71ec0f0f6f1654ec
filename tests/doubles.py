"""Test doubles of the worker's Redis-backed parts: in-memory indexes and the few Redis commands the worker's
markers and invalidation poll use. Product code requires Redis; only tests build a context from these."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from models.records import CachedClassification
from streams.imaging import hamming_distance
from streams.near_index import (
    INDEX_PREFIX,
    MISS,
    PENDING_PREFIX,
    NearKind,
    NearMatch,
    chunk_keys,
    layout_for,
    layout_tag,
)
from streams.reframed_index import ID_HEX


class LocalNearIndex:
    """The same index in this process's memory, with the same chunks, claims and expiry.

    Entries are read through ``get_entry`` (the exact cache), as the Redis script reads ``cache:image:hash:{phash}``.
    Not shared between processes: a test double (tests/unit/test_near_index.py runs the same behaviour suite on it
    and tests/integration/test_near_index_stack.py on the Redis index).
    """

    def __init__(self, get_entry: Callable[[str], Awaitable[CachedClassification | None]], *, max_distance: int,
                 model_version: str, ttl_seconds: int, claim_ttl_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.layout = layout_for(max_distance)
        self.model_version = model_version
        self.tag = layout_tag(model_version, self.layout)
        self.ttl_seconds = ttl_seconds
        self.claim_ttl_seconds = claim_ttl_seconds
        self.clock = clock
        self.get_entry = get_entry
        self.sets: dict[str, dict[str, float]] = {}  # key -> member -> expiry
        self.jobs: dict[str, str] = {}

    @property
    def max_distance(self) -> int:
        return self.layout.max_distance

    def result_keys(self, phash: str) -> list[str]:
        return chunk_keys(INDEX_PREFIX, self.tag, phash, self.layout)

    def pending_keys(self, phash: str) -> list[str]:
        return chunk_keys(PENDING_PREFIX, self.tag, phash, self.layout)

    def _near(self, keys: list[str], phash: str, *, skip_self: bool) -> list[tuple[str, int]]:
        now = self.clock()
        found: dict[str, int] = {}
        for key in keys:
            members = self.sets.get(key)
            if members is None:
                continue
            for member in [m for m, exp in members.items() if exp <= now]:
                del members[member]
            if not members:
                del self.sets[key]
            for member in members:
                if member not in found and not (skip_self and member == phash):
                    found[member] = hamming_distance(member, phash)
        return sorted(((h, d) for h, d in found.items() if d <= self.max_distance), key=lambda hd: hd[1])

    def _put(self, key: str, member: str, expiry: float) -> None:
        self.sets.setdefault(key, {})[member] = expiry

    async def lookup(self, phash: str, *, claim: bool, pending: bool = True, results: bool = True) -> NearMatch:
        if results:
            for member, distance in self._near(self.result_keys(phash), phash, skip_self=False):
                entry = await self.get_entry(member)
                if entry is not None and entry.model_version == self.model_version:
                    return NearMatch(NearKind.NEAR, member, distance, entry)
        if pending:
            claims = self._near(self.pending_keys(phash), phash, skip_self=True)
            if claims:
                return NearMatch(NearKind.PENDING, claims[0][0], claims[0][1])
        if claim:
            await self.claim(phash)
            return NearMatch(NearKind.CLAIMED)
        return MISS

    async def add(self, entry: CachedClassification) -> None:
        expiry = self.clock() + self.ttl_seconds
        self._near(self.result_keys(entry.phash), entry.phash, skip_self=False)  # trims, as the script does
        for key in self.result_keys(entry.phash):
            self._put(key, entry.phash, expiry)
        await self.release(entry.phash)
        self.jobs[entry.job_id] = entry.phash

    async def claim(self, phash: str) -> None:
        for key in self.pending_keys(phash):
            self._put(key, phash, self.clock() + self.claim_ttl_seconds)

    async def release(self, phash: str) -> None:
        for key in self.pending_keys(phash):
            members = self.sets.get(key, {})
            members.pop(phash, None)
            if not members:
                self.sets.pop(key, None)

    def member_count(self) -> int:
        """Members in live sets. A set whose latest member has expired is gone, as Redis's EXPIREAT makes it."""
        now = self.clock()
        for key in [k for k, members in self.sets.items() if max(members.values(), default=0) <= now]:
            del self.sets[key]
        return sum(len(m) for m in self.sets.values())


class LocalReframedIndex:
    """The same index in memory (the agent tests); the behaviour suite in tests/unit/test_reframed.py."""

    def __init__(self, *, ttl_seconds: int, word_cap: int = 32) -> None:
        self._ttl = ttl_seconds
        self._cap = word_cap
        self.words: dict[int, dict[str, float]] = {}
        self.blobs: dict[str, tuple[str, bytes, float]] = {}

    async def add(self, phash: str, blob: bytes, word_list: list[int]) -> None:
        expiry = time.time() + self._ttl
        self.blobs[phash[:ID_HEX]] = (phash, blob, expiry)
        for word in word_list:
            members = self.words.setdefault(word, {})
            members[phash[:ID_HEX]] = expiry
            for stale in sorted(members, key=members.__getitem__)[:-self._cap]:
                del members[stale]

    async def votes(self, word_list: list[int]) -> Counter[str]:
        now = time.time()
        return Counter(m for word in word_list for m, at in self.words.get(word, {}).items() if at > now)

    async def features(self, ids: list[str]) -> list[tuple[str, bytes]]:
        now = time.time()
        return [(p, b) for p, b, at in (self.blobs.get(i, ("", b"", 0.0)) for i in ids) if at > now]

    async def delete(self, phash: str) -> None:
        self.blobs.pop(phash[:ID_HEX], None)


class FakeRedis:
    """The Redis commands of the result markers (streams/outcomes.py) and the invalidation poll, in memory."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.sorted_sets: dict[str, dict[str, float]] = {}

    async def exists(self, key: str) -> int:
        return int(key in self.values)

    async def set(self, key: str, value: Any, **_: Any) -> bool:
        self.values[key] = value
        return True

    async def get(self, key: str) -> Any:
        return self.values.get(key)

    async def zadd(self, key: str, mapping: dict[str, float]) -> int:
        self.sorted_sets.setdefault(key, {}).update(mapping)
        return len(mapping)

    async def zrangebyscore(self, key: str, low: float | str, high: float | str, withscores: bool = False) -> list[Any]:
        lo, hi = float(low), float(high)
        found = sorted((at, m) for m, at in self.sorted_sets.get(key, {}).items() if lo <= at <= hi)
        return [(m, at) for at, m in found] if withscores else [m for _, m in found]

    async def zremrangebyscore(self, key: str, low: float | str, high: float | str) -> int:
        members = self.sorted_sets.get(key, {})
        gone = [m for m, at in members.items() if float(low) <= at <= float(high)]
        for m in gone:
            del members[m]
        return len(gone)

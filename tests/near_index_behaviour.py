"""One behaviour suite for every near-duplicate index: the in-memory double (tests/doubles.py) and the Redis index
on a single Redis and on a Redis Cluster run the same tests.

Subclass :class:`NearIndexBehaviour` and give it a ``subject`` fixture returning a :class:`Subject`:
tests/unit/test_near_index.py (in memory) and tests/integration/test_index_behaviour_stack.py (Redis).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from models.records import CachedClassification
from streams.near_index import HASH_BITS, NearIndex, NearKind
from tools.kit.hashes import cached_entry, flip, random_hash

T = 10
VERSION = "m|p1|t1"


def entry(phash: str, model_version: str = VERSION, job_id: str | None = None) -> CachedClassification:
    return cached_entry(phash, model_version, job_id or f"job-{phash[:8]}")


@dataclass
class Subject:
    """An index implementation under test, and the exact cache its lookups read entries from."""

    make: Callable[[str], NearIndex]  # model version -> an index (T bits, claims of 10 s) over the same cache
    store: Callable[[CachedClassification], Awaitable[None]]  # put an entry in the exact cache
    drop: Callable[[str], Awaitable[None]]  # delete a pHash's entry from the exact cache

    async def add(self, index: NearIndex, phash: str, model_version: str = VERSION) -> CachedClassification:
        e = entry(phash, model_version)
        await self.store(e)
        await index.add(e)
        return e


class NearIndexBehaviour:
    """What the worker relies on, whatever the implementation."""

    async def test_stored_hashes_are_found_within_t_and_random_hashes_are_not(self, subject: Subject) -> None:
        rng = random.Random(3)
        index = subject.make(VERSION)
        stored = {random_hash(rng): None for _ in range(60)}
        entries = {h: await subject.add(index, h) for h in stored}
        for h in stored:
            bits = rng.randint(0, T)
            match = await index.lookup(flip(h, rng.sample(range(HASH_BITS), bits)), claim=False)
            assert match.kind is NearKind.NEAR and match.phash == h and match.distance == bits
            assert match.entry == entries[h]
        for _ in range(60):
            assert (await index.lookup(random_hash(rng), claim=False)).kind is NearKind.MISS

    async def test_the_closest_result_wins(self, subject: Subject) -> None:
        index = subject.make(VERSION)
        h = random_hash(random.Random(5))
        await subject.add(index, flip(h, [1, 2, 3, 4, 5, 6]))
        await subject.add(index, flip(h, [100, 101]))
        match = await index.lookup(h, claim=False)
        assert match.phash == flip(h, [100, 101]) and match.distance == 2

    async def test_a_result_of_another_version_is_not_served(self, subject: Subject) -> None:
        old, new = subject.make(VERSION), subject.make("m|p2|t1")
        h = random_hash(random.Random(6))
        await subject.add(old, h)
        assert (await new.lookup(flip(h, [7]), claim=False)).kind is NearKind.MISS
        # Same layout tag, but the cached entry itself was made by another version: not served either.
        await subject.store(entry(h, model_version="m|p0|t1"))
        assert (await old.lookup(flip(h, [7]), claim=False)).kind is NearKind.MISS

    async def test_a_missing_entry_is_not_served(self, subject: Subject) -> None:
        index = subject.make(VERSION)
        h = random_hash(random.Random(7))
        await subject.add(index, h)
        await subject.drop(h)  # expired, evicted or invalidated in the exact cache
        assert (await index.lookup(flip(h, [3]), claim=False)).kind is NearKind.MISS

    async def test_a_claim_makes_near_duplicates_wait_until_the_result_lands(self, subject: Subject) -> None:
        index = subject.make(VERSION)
        owner = random_hash(random.Random(8))
        near = flip(owner, [10, 20, 30])
        assert (await index.lookup(owner, claim=True)).kind is NearKind.CLAIMED
        waiting = await index.lookup(near, claim=True)
        assert waiting.kind is NearKind.PENDING and waiting.phash == owner and waiting.distance == 3
        # Its own claim never counts: the owner asking again claims again.
        assert (await index.lookup(owner, claim=True)).kind is NearKind.CLAIMED
        await subject.add(index, owner)  # the result lands: the claim is dropped, the result is served
        done = await index.lookup(near, claim=True)
        assert done.kind is NearKind.NEAR and done.phash == owner

    async def test_a_released_claim_stops_holding_near_duplicates(self, subject: Subject) -> None:
        index = subject.make(VERSION)
        owner = random_hash(random.Random(9))
        await index.lookup(owner, claim=True)
        await index.release(owner)
        assert (await index.lookup(flip(owner, [1]), claim=False)).kind is NearKind.MISS
        await index.claim(owner)  # a re-issued call claims again, unconditionally
        assert (await index.lookup(flip(owner, [1]), claim=False)).kind is NearKind.PENDING

    async def test_claims_can_be_ignored(self, subject: Subject) -> None:
        index = subject.make(VERSION)
        owner = random_hash(random.Random(10))
        await index.lookup(owner, claim=True)
        assert (await index.lookup(flip(owner, [2]), claim=True, pending=False)).kind is NearKind.CLAIMED
        assert (await index.lookup(flip(owner, [3]), claim=False, pending=False)).kind is NearKind.MISS

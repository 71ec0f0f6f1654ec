"""The near-duplicate index without Redis: chunk layout, the pigeonhole guarantee, the behaviour suite on the
in-memory double, claims and expiry on its clock, revocation."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from models.classification import WasteCategory, WasteClassification
from models.records import CachedClassification
from streams.dedupe_state import ResultTable, Revocations
from streams.imaging import hamming_distance as hamming
from streams.near_index import HASH_BITS, NearKind, chunk_keys, chunk_values, layout_for, layout_tag
from tests.doubles import LocalNearIndex
from tests.near_index_behaviour import NearIndexBehaviour, Subject

T = 10


def random_hash(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def flip(phash: str, bits: list[int]) -> str:
    value = int(phash, 16)
    for b in bits:
        value ^= 1 << b
    return f"{value:064x}"


def entry(phash: str, model_version: str = "m|p1|t1", job_id: str | None = None) -> CachedClassification:
    return CachedClassification(
        phash=phash, model_version=model_version, job_id=job_id or f"job-{phash[:8]}", created_at=datetime.now(UTC),
        classification=WasteClassification(category=WasteCategory.GLASS, item_name="jar", recyclable=True,
                                           disposal_instructions="rinse", confidence=0.9),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Store:
    """The exact cache the local index reads entries from."""

    def __init__(self) -> None:
        self.entries: dict[str, CachedClassification] = {}

    async def get(self, phash: str) -> CachedClassification | None:
        return self.entries.get(phash)


def make_index(store: Store, clock: Clock, *, max_distance: int = T, model_version: str = "m|p1|t1",
               ttl: int = 100, claim_ttl: float = 10) -> LocalNearIndex:
    return LocalNearIndex(store.get, max_distance=max_distance, model_version=model_version, ttl_seconds=ttl,
                          claim_ttl_seconds=claim_ttl, clock=clock)


async def add(index: LocalNearIndex, store: Store, phash: str, **kw: str) -> CachedClassification:
    e = entry(phash, model_version=index.model_version, **kw)
    store.entries[phash] = e
    await index.add(e)
    return e


# --- layout and pigeonhole ------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [0, 1, 4, 8, 10, 12, 16, 31])
def test_layout_has_t_plus_one_chunks_covering_every_bit_once(t: int) -> None:
    layout = layout_for(t)
    assert layout.chunks == t + 1
    covered = [b for start, width in layout.spans for b in range(start, start + width)]
    assert covered == list(range(HASH_BITS))
    assert max(w for _, w in layout.spans) - min(w for _, w in layout.spans) <= 1


def test_layout_rejects_distances_that_leave_chunks_too_small() -> None:
    with pytest.raises(ValueError):
        layout_for(64)
    with pytest.raises(ValueError):
        layout_for(-1)


def test_chunks_reassemble_into_the_hash() -> None:
    rng = random.Random(1)
    for t in (3, 10, 16):
        layout = layout_for(t)
        for _ in range(50):
            h = random_hash(rng)
            value = 0
            for v, (_, width) in zip(chunk_values(h, layout), layout.spans, strict=True):
                value = (value << width) | v
            assert f"{value:064x}" == h


def test_any_hash_within_t_shares_a_whole_chunk() -> None:
    """The pigeonhole principle the index relies on, on random hashes and random flips of up to T bits."""
    rng = random.Random(2)
    layout = layout_for(T)
    for _ in range(3000):
        h = random_hash(rng)
        q = flip(h, rng.sample(range(HASH_BITS), rng.randint(0, T)))
        assert any(a == b for a, b in zip(chunk_values(h, layout), chunk_values(q, layout), strict=True))


def test_t_plus_one_flips_can_defeat_every_chunk() -> None:
    """Tightness: one flipped bit in each of the T+1 chunks leaves no chunk equal (why m must exceed T)."""
    layout = layout_for(T)
    h = "0" * 64
    q = flip(h, [HASH_BITS - 1 - start for start, _ in layout.spans])
    assert hamming(h, q) == T + 1
    assert not any(a == b for a, b in zip(chunk_values(h, layout), chunk_values(q, layout), strict=True))


def test_keys_name_the_version_and_layout() -> None:
    layout = layout_for(T)
    keys = chunk_keys("cache:image:mih:", layout_tag("gpt-4o|p1|t1", layout), "ab" * 32, layout)
    assert len(keys) == T + 1 and len(set(keys)) == T + 1
    assert all(k.startswith("cache:image:mih:") for k in keys)
    assert layout_tag("gpt-4o|p1|t1", layout) != layout_tag("gpt-4o|p2|t1", layout)
    assert layout_tag("gpt-4o|p1|t1", layout) != layout_tag("gpt-4o|p1|t1", layout_for(12))


# --- the behaviour suite every index passes (tests/near_index_behaviour.py), on the in-memory double ------------


class TestLocalNearIndex(NearIndexBehaviour):
    @pytest.fixture
    def subject(self) -> Subject:
        store, clock = Store(), Clock()

        async def put(e: CachedClassification) -> None:
            store.entries[e.phash] = e

        async def drop(phash: str) -> None:
            store.entries.pop(phash, None)

        return Subject(make=lambda version: make_index(store, clock, model_version=version), store=put, drop=drop)


# --- claims and expiry on the double's clock (the Redis index is checked on the stack) ----------------------------


async def test_a_released_or_expired_claim_stops_holding_near_duplicates() -> None:
    store, clock = Store(), Clock()
    index = make_index(store, clock, claim_ttl=10)
    owner = "3" * 64
    near = flip(owner, [1])
    await index.lookup(owner, claim=True)
    await index.release(owner)
    assert (await index.lookup(near, claim=False)).kind is NearKind.MISS
    await index.lookup(owner, claim=True)
    clock.now += 11
    assert (await index.lookup(near, claim=False)).kind is NearKind.MISS


# --- expiry -----------------------------------------------------------------------------------------------------


async def test_expired_members_are_dropped_and_the_index_does_not_grow() -> None:
    rng = random.Random(4)
    store, clock = Store(), Clock()
    index = make_index(store, clock, ttl=100)
    first = [random_hash(rng) for _ in range(200)]
    for h in first:
        await add(index, store, h)
    assert index.member_count() == 200 * (T + 1)
    clock.now += 101
    for h in first:  # every set gets touched by a lookup of its own chunk
        assert (await index.lookup(h, claim=False)).kind is NearKind.MISS
    assert index.member_count() == 0 and not index.sets
    # Steady state: a new generation replaces the expired one instead of adding to it.
    second = [random_hash(rng) for _ in range(200)]
    for h in second:
        await add(index, store, h)
    clock.now += 101
    for h in second:
        await add(index, store, flip(h, [0]))  # inserts trim the sets they touch...
    # ...and the sets no insert touched (the last chunk, where bit 0 lives) expire as a whole.
    assert index.member_count() == 200 * (T + 1)


# --- invalidated table copies ------------------------------------------------------------------------------------


def test_a_revoked_table_entry_is_not_served() -> None:
    import time

    revocations = Revocations()
    results = ResultTable({}, ttl_seconds=100, model_version="m|p1|t1", revocations=revocations)
    h = "5" * 64
    results.remember(entry(h))
    assert results.fresh(h) is not None
    revocations.revoke(h, time.time())
    assert results.fresh(h) is None
    assert h not in results.table
    # A result stored after the invalidation is served again.
    results.remember(entry(h))
    results.table[h]["stored_at"] = time.time() + 1
    assert results.fresh(h) is not None
    revocations.forget_before(time.time() + 10)
    assert not revocations

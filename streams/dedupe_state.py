"""The dedupe step's state as the agents use it: recent answers, invalidations, and model calls under way.

The two Faust tables (streams/tables.py) are partition-local and keyed by pHash; the classes here take them as
plain mappings, so tests hand in dicts. Reads and writes are synchronous on purpose: between two awaits nothing
else runs on the loop, so a read-modify-write of one pHash's entry is atomic for the agents that share this
worker's partitions. Faust tables have no per-key TTL: every value carries ``stored_at`` / ``requested_at`` and
readers treat old entries as absent.

**One registry of calls under way** (:class:`CallRegistry`). A model call for a pHash is under way when its
entry in the in-flight table is younger than INFLIGHT_TIMEOUT_SECONDS; that entry is the record (owner, waiters,
attempts). Two more things follow the same call and are reached through the registry only: its claim in the
shared near-duplicate index (near-duplicates on other partitions wait on it), and, while this process is making
it, an event that a second request for the same pHash (a redelivery, a re-issued lost call, both in classify's
concurrency) waits on before it looks at the cache again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping, Sequence
from typing import Any

from redis.exceptions import RedisError

from models.records import CachedClassification, ImageHashed
from streams.near_index import NearIndex

log = logging.getLogger(__name__)

Clock = Callable[[], float]
# How many recent table answers the re-warm's recent pass can look back on (streams/rewarm.py).
RECENT_MAX = 50_000
# Entries an expiry sweep reads between two chances for the agents to run.
EXPIRY_BATCH = 2_000


def _dict_backed(table: MutableMapping[str, Any]) -> bool:
    """Whether ``table`` is a dict, or a Faust table whose store keeps one (``memory://``), not RocksDB."""
    store = getattr(table, "data", table)
    return isinstance(store, dict) or isinstance(getattr(store, "data", None), dict)


class Revocations:
    """pHash -> when an operator invalidated its result (read from Redis by the invalidation poll).

    Only mirrors Redis (rebuilt from it on start), so a table copy stored before the invalidation is never served.
    """

    def __init__(self) -> None:
        self._at: dict[str, float] = {}

    def revoke(self, phash: str, at: float) -> None:
        self._at[phash] = max(at, self._at.get(phash, 0.0))

    def covers(self, phash: str, stored_at: float) -> bool:
        at = self._at.get(phash)
        return at is not None and stored_at <= at

    def forget_before(self, cutoff: float) -> None:
        """Drop records older than any table entry can be (the cache TTL): the map stays bounded."""
        for phash in [p for p, at in self._at.items() if at < cutoff]:
            del self._at[phash]

    def __len__(self) -> int:
        return len(self._at)


class ResultTable:
    """Recent classifications of this worker's partitions (``results-by-phash``): repeats skip even Redis."""

    def __init__(self, table: MutableMapping[str, Any], *, ttl_seconds: float, model_version: str,
                 revocations: Revocations, clock: Clock = time.time) -> None:
        self.table = table
        self.ttl_seconds = ttl_seconds
        self.model_version = model_version
        self.revocations = revocations
        self.clock = clock
        # What this process stored lately, oldest first: the re-warm's recent pass reads it.
        self._recent: collections.deque[tuple[float, str]] = collections.deque(maxlen=RECENT_MAX)

    def fresh(self, phash: str) -> CachedClassification | None:
        """The answer for ``phash`` if it is fresh, not invalidated and of this model version. An expired or
        invalidated entry is deleted (call it inside a stream: Faust then writes the changelog)."""
        value = self.table.get(phash)
        if not value:
            return None
        if self.is_stale(phash, value["stored_at"]):
            del self.table[phash]
            return None
        entry = CachedClassification.model_validate(value["entry"])
        return entry if entry.model_version == self.model_version else None

    def is_stale(self, phash: str, stored_at: float) -> bool:
        return self.clock() - stored_at > self.ttl_seconds or self.revocations.covers(phash, stored_at)

    def remember(self, entry: CachedClassification) -> None:
        stored_at = self.clock()
        self.table[entry.phash] = {"entry": entry.model_dump(mode="json"), "stored_at": stored_at}
        self._recent.append((stored_at, entry.phash))

    def stored_at(self, phash: str) -> float | None:
        value = self.table.get(phash)
        return value["stored_at"] if value else None

    def expired(self) -> list[str]:
        """The entries past their TTL (the expiry timer asks for them to be deleted on their partitions)."""
        now = self.clock()
        return [phash for phash, value in list(self.table.items())
                if value and now - value.get("stored_at", 0) > self.ttl_seconds]

    async def expired_batches(self, batch_size: int = EXPIRY_BATCH) -> AsyncIterator[list[str]]:
        """The entries past their TTL, one batch of the table at a time, letting the agents run in between.

        A sweep reads every entry (1M on RocksDB: tens of seconds of decoding, docs/SCALING.md "Tables"), so it must
        not hold the loop. A table on RocksDB is read lazily: its iterator does not mind writes in between, and a
        rebalance that closes a partition's database ends the sweep early (the next one sees the rest). A table
        held in a dict (the memory store, the tests) would change size under a lazy iteration, so its keys are
        copied first (cheap: no value is decoded)."""
        now = self.clock()
        items: Iterator[tuple[str, Any]]
        if _dict_backed(self.table):
            items = ((phash, self.table.get(phash)) for phash in list(self.table.keys()))
        else:
            items = iter(self.table.items())
        while True:
            try:
                batch = list(itertools.islice(items, batch_size))
            except RuntimeError:  # the partitions changed under the sweep (a rebalance)
                return
            if not batch:
                return
            yield [phash for phash, value in batch if value and now - value.get("stored_at", 0) > self.ttl_seconds]
            await asyncio.sleep(0)

    def recent(self, since: float) -> list[tuple[CachedClassification, float]]:
        """(entry, stored_at) of the answers stored by this process since ``since`` that are still in the table."""
        found: dict[str, tuple[CachedClassification, float]] = {}
        for stored_at, phash in reversed(self._recent):
            if stored_at < since:
                break
            value = self.table.get(phash)
            if value and phash not in found:
                found[phash] = (CachedClassification.model_validate(value["entry"]), value["stored_at"])
        return list(found.values())

    def all(self) -> list[tuple[CachedClassification, float]]:
        """(entry, stored_at) of every answer in this worker's table partitions, not invalidated."""
        return [(CachedClassification.model_validate(value["entry"]), value["stored_at"])
                for phash, value in list(self.table.items())
                if value and not self.revocations.covers(phash, value["stored_at"])]

    def each(self) -> Iterator[tuple[CachedClassification, float]]:
        """:meth:`all`, one entry at a time, for a consumer that awaits in between (the re-warm's full pass): a
        million entries are never decoded at once. Read like :meth:`expired_batches`; a rebalance that closes a
        partition's database under the iteration ends it early (logged)."""
        items: Iterator[tuple[str, Any]]
        if _dict_backed(self.table):
            items = ((phash, self.table.get(phash)) for phash in list(self.table.keys()))
        else:
            items = iter(self.table.items())
        while True:
            try:
                phash, value = next(items)
            except StopIteration:
                return
            except RuntimeError:
                log.warning("the table's partitions changed during a full read; it ends here")
                return
            if value and not self.revocations.covers(phash, value["stored_at"]):
                yield CachedClassification.model_validate(value["entry"]), value["stored_at"]


class Inflight:
    """A model call under way for one pHash: who owns it, when it was asked, and who waits on it."""

    def __init__(self, value: dict[str, Any], now: float) -> None:
        self.owner = ImageHashed.model_validate(value["owner"])
        self.requested_at: float = value["requested_at"]
        self.attempts: int = value.get("attempts", 1)
        self.waiters = [ImageHashed.model_validate(w) for w in value.get("waiters", [])]
        self.age = now - self.requested_at

    @property
    def jobs(self) -> list[ImageHashed]:
        return [self.owner, *self.waiters]


def _stored(job: ImageHashed) -> dict[str, Any]:
    return job.model_dump(mode="json", exclude={"thumbnail_b64"})


class CallRegistry:
    """Model calls under way (see the module's notes): the in-flight table, their near-duplicate claims, and the
    calls this process is making."""

    def __init__(self, table: MutableMapping[str, Any], near: NearIndex, *, timeout_seconds: float,
                 renew_claims: bool, clock: Clock = time.time) -> None:
        self.table = table
        self.near = near
        self.timeout_seconds = timeout_seconds
        self.renew_claims = renew_claims
        self.clock = clock
        self._making: dict[str, asyncio.Event] = {}

    # --- the record: this partition's in-flight table ---------------------------------------------------------

    def entry(self, phash: str) -> Inflight | None:
        """The call's entry, however old (an old one is presumed lost: see :meth:`presumed_lost`)."""
        value = self.table.get(phash)
        return Inflight(value, self.clock()) if value else None

    def is_live(self, inflight: Inflight | None) -> bool:
        return inflight is not None and inflight.age < self.timeout_seconds

    def start(self, owner: ImageHashed, waiters: Sequence[ImageHashed] = (), attempts: int = 1) -> None:
        self.table[owner.phash] = {"owner": owner.model_dump(mode="json"), "requested_at": self.clock(),
                                   "attempts": attempts, "waiters": [_stored(w) for w in waiters]}

    def add_waiter(self, phash: str, job: ImageHashed) -> None:
        value = dict(self.table[phash])
        value["waiters"] = [*value.get("waiters", []), _stored(job)]
        self.table[phash] = value  # reassign: Faust writes the changelog on set, not on nested mutation

    def take(self, phash: str) -> Inflight | None:
        """Remove the call's entry and return it: whoever takes it answers (or fails) its jobs."""
        value = self.table.pop(phash, None)
        return Inflight(value, self.clock()) if value else None

    def holds(self, job: ImageHashed) -> bool:
        """Whether ``job`` owns or waits on a call in this worker's table: that call's answer (or, if it is lost,
        its recovery by the timer) then gives the job its result."""
        for phash in {job.phash, job.wait_on} - {None}:
            value = self.table.get(phash)  # type: ignore[arg-type]
            if value and any(e.get("job_id") == job.job_id for e in [value["owner"], *value.get("waiters", [])]):
                return True
        return False

    def presumed_lost(self) -> list[str]:
        """The pHashes whose call has gone unanswered for INFLIGHT_TIMEOUT_SECONDS."""
        return [phash for phash in list(self.table.keys()) if not self.is_live(self.entry(phash))]

    # --- the shared claim (near-duplicates on other partitions wait on it) ------------------------------------

    async def renew_claim(self, phash: str) -> None:
        """Claim ``phash`` again for a re-issued call, so near-duplicates keep waiting on it (when they wait)."""
        if not self.renew_claims:
            return
        try:
            await self.near.claim(phash)
        except RedisError as exc:
            log.warning("phash=%s: could not renew the near-duplicate claim (%s)", phash, exc)

    async def release_claim(self, phash: str) -> None:
        try:
            await self.near.release(phash)
        except RedisError as exc:  # the claim then lapses after INFLIGHT_TIMEOUT_SECONDS
            log.warning("phash=%s: could not release the near-duplicate claim (%s)", phash, exc)

    # --- the calls this process is making -------------------------------------------------------------------

    async def wait_for_call_here(self, phash: str) -> bool:
        """Wait until this process's call for ``phash`` has ended, if one is being made; True if there was one."""
        event = self._making.get(phash)
        if event is None:
            return False
        await event.wait()
        return True

    def is_making(self, phash: str) -> bool:
        return phash in self._making

    @contextlib.contextmanager
    def making(self, phash: str) -> Iterator[None]:
        """Mark this process's call for ``phash`` as being made, for the block's duration."""
        done = self._making[phash] = asyncio.Event()
        try:
            yield
        finally:
            del self._making[phash]
            done.set()

"""What the dedupe step does with one job, decided from what it has read. Pure: no I/O, no Faust, no Redis.

The agent (agents/dedupe.py) reads, this module decides, the agent carries the decision out. Reading is staged:
the table and the in-flight entry of the pHash looked at are read again before every decision (they are local
and synchronous, and the awaits of the other reads let other events change them), while the shared cache, the
near-duplicate index and the reframed tier are read only when :func:`decide` asks for them (:class:`Lookup`).

The tiers, in order, for a job on its own pHash:
  the table -> Redis (the shared cache) -> a call under way here (wait on it, or, when the job owns it and its
  event came again, ask again; a call presumed lost: pay, keeping its waiters) -> the near-duplicate index (a
  near result: answer; a near call under way: wait on it) -> the reframed tier -> pay for a model call.
A job sent to wait on a near-duplicate's call (``wait_on``) looks at that pHash: its result (table, Redis) or its
call under way; when there is neither, the job goes back to its own pHash.

The fetch step answers the one tier it can reach without the pHash's partition, a Redis hit on the job's own
pHash, before the hashed hop (:func:`decide_before_hop`); everything else goes on to the dedupe step.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from enum import StrEnum

from models.records import CachedClassification, CacheSource, ImageHashed
from streams.imaging import hamming_distance
from streams.near_index import NearKind, NearMatch
from streams.reframed_index import ReframedMatch


class Read(StrEnum):
    SHARED = "shared"  # the Redis entry of the pHash looked at
    NEAR = "near"  # the near-duplicate index (claims the job's pHash when nothing is near, if claims are on)
    REFRAMED = "reframed"  # the reframed tier (features, candidates, the geometric and pixel checks)


class _Unread:
    def __repr__(self) -> str:
        return "UNREAD"


UNREAD = _Unread()


@dataclass(frozen=True)
class Call:
    """A model call in this partition's in-flight table, as the decision needs it."""

    owner: ImageHashed
    waiters: tuple[ImageHashed, ...] = ()
    live: bool = True  # younger than INFLIGHT_TIMEOUT_SECONDS (else presumed lost)


@dataclass(frozen=True)
class Seen:
    """What the dedupe step has read for ``job``."""

    job: ImageHashed
    near_on: bool = False  # NEAR_DUPLICATE_MAX_DISTANCE > 0
    reframed_on: bool = False  # REFRAMED_MATCH
    table: CachedClassification | None = None  # the fresh table answer for the pHash looked at
    call: Call | None = None  # the in-flight entry for the pHash looked at
    shared: CachedClassification | None | _Unread = UNREAD
    near: NearMatch | None = None  # None: not read
    reframed: ReframedMatch | None = None  # None: not read

    @property
    def looked_at(self) -> str:
        """The pHash whose table entry, call and shared entry are read: the waited-on call's, or the job's own."""
        return self.job.wait_on or self.job.phash

    @property
    def claimed(self) -> bool:
        """The near lookup claimed the job's pHash: released unless the job pays."""
        return self.near is not None and self.near.kind is NearKind.CLAIMED

    def read_again(self, table: CachedClassification | None, call: Call | None) -> Seen:
        return replace(self, table=table, call=call)


@dataclass(frozen=True)
class Lookup:
    """Read this, then decide again."""

    what: Read


@dataclass(frozen=True)
class Answer:
    """Answer the job from a tier."""

    entry: CachedClassification
    source: CacheSource
    distance: int = 0
    check: str | None = None
    remember: bool = False  # copy the entry into this partition's table (a Redis hit on the job's own pHash)
    release_claim: bool = False


@dataclass(frozen=True)
class WaitHere:
    """Join the call under way for ``phash`` on this partition as a waiter."""

    phash: str
    owner_job_id: str
    release_claim: bool = False


@dataclass(frozen=True)
class WaitOn:
    """Send the job to the partition of a near-duplicate's call (keyed by its pHash), to wait on it there."""

    phash: str
    distance: int


@dataclass(frozen=True)
class ReturnHome:
    """The waited-on call is gone without a result: the job goes back to its own pHash (``near_hops`` + 1)."""


@dataclass(frozen=True)
class AskAgain:
    """The call's owner came again (redelivered): send its model request again (classify never pays twice)."""

    owner: ImageHashed


@dataclass(frozen=True)
class Pay:
    """The job pays for a model call; ``inherit``: the jobs of a call presumed lost, which keep waiting on it."""

    inherit: tuple[ImageHashed, ...] = ()
    features: str | None = None  # base64 of the reframed tier's packed features, for classify to index


Decision = Lookup | Answer | WaitHere | WaitOn | ReturnHome | AskAgain | Pay


def decide(seen: Seen) -> Decision:
    return _joining(seen) if seen.job.wait_on is not None else _own(seen)


def decide_before_hop(seen: Seen) -> Answer | None:
    """The fetch step, before it sends the job to its pHash's partition: a Redis hit on the job's own pHash is
    answered there and then, as the dedupe step would answer it, except that the table (the pHash's partition,
    owned by another worker maybe) is not written; None: the job goes on to the dedupe step."""
    hit = _shared_hit(seen)
    return replace(hit, remember=False) if hit is not None and seen.job.wait_on is None else None


def _shared_hit(seen: Seen) -> Answer | None:
    if isinstance(seen.shared, CachedClassification):
        return Answer(seen.shared, CacheSource.REDIS, remember=True)
    return None


def _own(seen: Seen) -> Decision:
    if (hit := _shared_hit(seen)) is not None:
        return hit
    if seen.table is not None:
        return Answer(seen.table, CacheSource.TABLE, release_claim=seen.claimed)
    if seen.shared is UNREAD:
        return Lookup(Read.SHARED)
    if seen.call is not None and seen.call.live:
        if seen.call.owner.job_id == seen.job.job_id:
            return AskAgain(seen.call.owner)
        return WaitHere(seen.job.phash, seen.call.owner.job_id, release_claim=seen.claimed)
    if seen.call is not None:
        return Pay(inherit=(seen.call.owner, *seen.call.waiters))
    return _beyond_exact(seen)


def _beyond_exact(seen: Seen) -> Decision:
    """No answer and no call for the exact pHash: the near-duplicate and reframed tiers, else pay."""
    near = seen.near
    if seen.near_on and near is None:
        return Lookup(Read.NEAR)
    if near is not None and near.kind is NearKind.NEAR and near.entry is not None:
        return Answer(near.entry, CacheSource.NEAR, distance=near.distance or 0)
    if near is not None and near.kind is NearKind.PENDING and near.phash is not None:
        return WaitOn(near.phash, near.distance or 0)
    found = seen.reframed
    if seen.reframed_on and found is None:
        return Lookup(Read.REFRAMED)
    if found is not None and found.entry is not None and found.verdict is not None and found.verdict.accepted:
        return Answer(found.entry, CacheSource.REFRAMED, distance=hamming_distance(seen.job.phash, found.entry.phash),
                      check=found.verdict.describe(), release_claim=seen.claimed)
    stored = found.stored if found is not None else None
    return Pay(features=base64.b64encode(stored).decode("ascii") if stored else None)


def _joining(seen: Seen) -> Decision:
    """The job waits on a near-duplicate's call (``wait_on``): its result, its call, or back home."""
    distance = hamming_distance(seen.job.phash, seen.looked_at)
    hit = seen.shared if isinstance(seen.shared, CachedClassification) else seen.table
    if hit is not None:
        return Answer(hit, CacheSource.NEAR, distance=distance)
    if seen.call is not None and seen.call.live:
        return WaitHere(seen.looked_at, seen.call.owner.job_id)
    if seen.shared is UNREAD:
        return Lookup(Read.SHARED)
    return ReturnHome()

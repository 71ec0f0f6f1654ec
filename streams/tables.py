"""Partition-local state of the dedupe step, keyed by pHash (co-partitioned with the pHash-keyed topics).

- ``results_by_phash``: recent classifications, so repeats skip even the Redis round trip.
- ``inflight_by_phash``: hashes whose model call is under way, with the jobs waiting on it.

Faust tables have no per-key TTL: every value carries ``stored_at`` and readers treat old entries as absent.
A timer in ``agents/dedupe.py`` finds expired or stuck entries and sends a maintenance event keyed by the same
pHash; the change is then made inside a stream, so Faust writes the changelog to the event's partition, the
same one the pHash-keyed topics use (equal partition counts, same default partitioner on the same raw keys).
"""

from __future__ import annotations

import faust

from streams.app import app

# Raw UTF-8 keys, like the topics: the partitioner then maps a pHash to the same partition everywhere.
_SCHEMA: faust.Schema = faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")

results_by_phash = app.Table(
    "results-by-phash",
    schema=_SCHEMA,
    help="pHash -> {entry: CachedClassification, stored_at: epoch seconds}",
)

inflight_by_phash = app.Table(
    "inflight-by-phash",
    schema=_SCHEMA,
    help="pHash -> {owner: job_id, requested_at: epoch seconds, waiters: [ImageHashed JSON]}",
)


# --- typed access ---------------------------------------------------------------------------------------------
# Reads and writes below are synchronous on purpose: between two awaits nothing else runs on the loop, so a
# read-modify-write of one pHash's entry is atomic for the agents that share this worker's partitions.

import collections  # noqa: E402
import time  # noqa: E402

from models.records import CachedClassification, ImageHashed  # noqa: E402


def fresh_result(phash: str, *, ttl_seconds: float, model_version: str) -> CachedClassification | None:
    value = results_by_phash.get(phash)
    if not value:
        return None
    if time.time() - value["stored_at"] > ttl_seconds or is_revoked(phash, value["stored_at"]):
        del results_by_phash[phash]
        return None
    entry = CachedClassification.model_validate(value["entry"])
    return entry if entry.model_version == model_version else None


def remember_result(entry: CachedClassification) -> None:
    stored_at = time.time()
    results_by_phash[entry.phash] = {"entry": entry.model_dump(mode="json"), "stored_at": stored_at}
    recent_results.append((stored_at, entry.phash))


# What this process stored lately, oldest first: the re-warm's recent pass (streams/rewarm.py) reads it.
recent_results: collections.deque[tuple[float, str]] = collections.deque(maxlen=50_000)


def recent_entries(since: float) -> list[tuple[CachedClassification, float]]:
    """(entry, stored_at) of the table answers stored by this process since ``since`` that are still in it."""
    found: dict[str, tuple[CachedClassification, float]] = {}
    for stored_at, phash in reversed(recent_results):
        if stored_at < since:
            break
        value = results_by_phash.get(phash)
        if value and phash not in found:
            found[phash] = (CachedClassification.model_validate(value["entry"]), value["stored_at"])
    return list(found.values())


def all_entries() -> list[tuple[CachedClassification, float]]:
    """(entry, stored_at) of every answer in this worker's table partitions, not revoked."""
    out = []
    for phash, value in list(results_by_phash.items()):
        if value and not is_revoked(phash, value["stored_at"]):
            out.append((CachedClassification.model_validate(value["entry"]), value["stored_at"]))
    return out


def forget_result(phash: str) -> None:
    results_by_phash.pop(phash, None)


# --- invalidated results ----------------------------------------------------------------------------------------
# An operator can invalidate a cached result (streams/invalidation.py): Redis forgets it at once, and records when.
# Every worker reads those records every few seconds (agents/dedupe.py) into this process-local map, which only
# mirrors Redis (rebuilt from it on start), so a table copy stored before the invalidation is never served again.
_revoked: dict[str, float] = {}  # pHash -> invalidated at (epoch seconds)


def revoke(phash: str, at: float) -> None:
    _revoked[phash] = max(at, _revoked.get(phash, 0.0))


def is_revoked(phash: str, stored_at: float) -> bool:
    at = _revoked.get(phash)
    return at is not None and stored_at <= at


def forget_revocations_before(cutoff: float) -> None:
    """Drop records older than any table entry can be (the cache TTL): the map stays bounded."""
    for phash in [p for p, at in _revoked.items() if at < cutoff]:
        del _revoked[phash]


class Inflight:
    """A model call under way for one pHash: who owns it, when it was asked, and who waits on it."""

    def __init__(self, value: dict) -> None:  # type: ignore[type-arg]
        self.owner = ImageHashed.model_validate(value["owner"])
        self.requested_at: float = value["requested_at"]
        self.attempts: int = value.get("attempts", 1)
        self.waiters = [ImageHashed.model_validate(w) for w in value.get("waiters", [])]

    def age(self) -> float:
        return time.time() - self.requested_at


def get_inflight(phash: str) -> Inflight | None:
    value = inflight_by_phash.get(phash)
    return Inflight(value) if value else None


def start_inflight(owner: ImageHashed, waiters: list[ImageHashed], attempts: int = 1) -> None:
    inflight_by_phash[owner.phash] = {
        "owner": owner.model_dump(mode="json"),
        "requested_at": time.time(),
        "attempts": attempts,
        "waiters": [w.model_dump(mode="json", exclude={"thumbnail_b64"}) for w in waiters],
    }


def add_waiter(phash: str, job: ImageHashed) -> None:
    value = dict(inflight_by_phash[phash])
    value["waiters"] = [*value.get("waiters", []), job.model_dump(mode="json", exclude={"thumbnail_b64"})]
    inflight_by_phash[phash] = value  # reassign: Faust writes the changelog on set, not on nested mutation


def finish_inflight(phash: str) -> Inflight | None:
    value = inflight_by_phash.pop(phash, None)
    return Inflight(value) if value else None


def is_handed_on(job: ImageHashed) -> bool:
    """Whether ``job`` owns or waits on a call in this worker's table: that call's answer (or, if it is lost, its
    recovery by the timer) then gives the job its result."""
    for phash in {job.phash, job.wait_on} - {None}:
        value = inflight_by_phash.get(phash)
        if value and any(entry.get("job_id") == job.job_id for entry in [value["owner"], *value.get("waiters", [])]):
            return True
    return False

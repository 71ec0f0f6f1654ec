"""Classify's fan-out of one answer, as a table: which jobs, and what each is told. No Faust, no patching."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models.classification import WasteCategory, WasteClassification
from models.records import CachedClassification, FetchInfo, FetchSource, ImageHashed
from streams.fan_out import answers, jobs_of_call

PHASH = "0f" * 32
NEAR = f"{int(PHASH, 16) ^ 0b1011:064x}"  # 3 bits away
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def job(job_id: str, phash: str = PHASH) -> ImageHashed:
    return ImageHashed(job_id=job_id, bucket="b", key=f"k/{job_id}", phash=phash, image_url="u",
                       fetch=FetchInfo(source=FetchSource.CDN, bytes=1), received_at=NOW - timedelta(seconds=2))


A, B, C, N = job("a"), job("b"), job("c"), job("n", NEAR)
ENTRY = CachedClassification(phash=PHASH, model_version="m", job_id="a", created_at=NOW,
                             classification=WasteClassification(category=WasteCategory.GLASS, item_name="jar",
                                                                disposal_instructions="rinse", recyclable=True,
                                                                confidence=0.9))


@pytest.mark.parametrize(("requester", "owner", "waiters", "expected"), [
    (A, None, [], ["a"]),  # no table entry (already taken, or never there): the requester only
    (A, A, [B, C], ["a", "b", "c"]),  # the owner's own request
    (B, A, [C], ["b", "c", "a"]),  # a request re-issued for a later job: the table's owner is answered too
    (A, A, [B, B, A], ["a", "b"]),  # each job once
    (A, A, [N], ["a", "n"]),  # a near-duplicate that joined the call
], ids=["requester only", "owner and waiters", "re-issued by another job", "duplicates", "near waiter"])
def test_jobs_of_a_call(requester: ImageHashed, owner: ImageHashed | None, waiters: list[ImageHashed],
                        expected: list[str]) -> None:
    assert [j.job_id for j in jobs_of_call(requester, owner, waiters)] == expected


@pytest.mark.parametrize(("paid", "who", "source", "hit", "distance", "reused", "matched", "attempts"), [
    (True, A, "model", False, 0, None, None, 2),  # the requester of a paid call
    (True, B, "inflight", True, 0, "a", None, None),  # a waiter on it
    (True, N, "inflight", True, 3, "a", PHASH, None),  # a near-duplicate waiter: its own pHash, its distance
    (False, A, "inflight", True, 0, "a", None, None),  # answered from the cache (a redelivery): nobody paid here
], ids=["payer", "waiter", "near waiter", "not paid here"])
def test_what_each_job_is_told(paid: bool, who: ImageHashed, source: str, hit: bool, distance: int,
                               reused: str | None, matched: str | None, attempts: int | None) -> None:
    (told,) = answers([who], phash=PHASH, requester_job_id="a", entry=ENTRY, paid=paid, now=NOW, model_ms=812.345,
                      attempts=2)
    cache = told.cache
    assert (cache.source.value, cache.hit, cache.distance, cache.reused_job_id, cache.matched_phash) == (
        source, hit, distance, reused, matched)
    assert cache.phash == who.phash and cache.model_version == "m"
    assert told.timings_ms["wait"] == 2000.0 and told.timings_ms["model"] == 812.35
    assert told.timings_ms.get("model_attempts") == attempts

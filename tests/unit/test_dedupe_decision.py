"""The dedupe decision as a table: what was read -> what to do. No Faust, no Redis, no patching."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from models.classification import WasteCategory, WasteClassification
from models.records import CachedClassification, CacheSource, FetchInfo, FetchSource, ImageHashed
from streams import reframed
from streams.dedupe_decision import (
    UNREAD,
    Answer,
    AskAgain,
    Call,
    Decision,
    Lookup,
    Pay,
    Read,
    ReturnHome,
    Seen,
    WaitHere,
    WaitOn,
    decide,
)
from streams.near_index import MISS, NearKind, NearMatch
from streams.reframed_index import ReframedMatch

OWN = "0f" * 32
NEAR = f"{int(OWN, 16) ^ 0b111:064x}"  # 3 bits away
OTHER = "a5" * 32
CREATED = datetime(2026, 1, 1, tzinfo=UTC)


def job(job_id: str = "j", phash: str = OWN, wait_on: str | None = None) -> ImageHashed:
    return ImageHashed(job_id=job_id, bucket="b", key=f"k/{job_id}", phash=phash, image_url="u", wait_on=wait_on,
                       fetch=FetchInfo(source=FetchSource.CDN, bytes=1), received_at=datetime.now(UTC))


def entry(phash: str, job_id: str = "payer") -> CachedClassification:
    return CachedClassification(phash=phash, model_version="m", job_id=job_id, created_at=CREATED,
                                classification=WasteClassification(category=WasteCategory.GLASS, item_name="jar",
                                                                   disposal_instructions="rinse", recyclable=True,
                                                                   confidence=0.9))


ACCEPTED = reframed.Verdict(True, inliers=40, matches=60, reason="accepted")
REJECTED = reframed.Verdict(False, inliers=3, matches=40, reason="too few inliers")
ME, OWNER, WAITER = job("j"), job("owner"), job("waiter")
LIVE, LOST = Call(OWNER, (WAITER,), live=True), Call(OWNER, (WAITER,), live=False)
MINE_LIVE = Call(ME, (WAITER,), live=True)
CLAIMED = NearMatch(NearKind.CLAIMED)
BASE = Seen(ME, near_on=True, reframed_on=True)
JOINING = Seen(job("j", NEAR, wait_on=OWN), near_on=True, reframed_on=True)

CASES: list[tuple[str, Seen, Decision]] = [
    # --- a job on its own pHash: the exact tiers
    ("table hit", replace(BASE, table=entry(OWN)), Answer(entry(OWN), CacheSource.TABLE)),
    ("nothing local: read Redis", BASE, Lookup(Read.SHARED)),
    ("Redis hit is copied into the table", replace(BASE, shared=entry(OWN)),
     Answer(entry(OWN), CacheSource.REDIS, remember=True)),
    ("Redis hit wins over a table entry that appeared meanwhile", replace(BASE, shared=entry(OWN), table=entry(OWN)),
     Answer(entry(OWN), CacheSource.REDIS, remember=True)),
    ("Redis missed, the table has it now", replace(BASE, shared=None, table=entry(OWN)),
     Answer(entry(OWN), CacheSource.TABLE)),
    ("a call under way here: wait on it", replace(BASE, shared=None, call=LIVE), WaitHere(OWN, "owner")),
    ("the owner's event came again: ask again", replace(BASE, shared=None, call=MINE_LIVE), AskAgain(ME)),
    ("a call presumed lost: pay, keeping its jobs", replace(BASE, shared=None, call=LOST),
     Pay(inherit=(OWNER, WAITER))),
    ("a lost call is re-issued before any near lookup", replace(BASE, shared=None, call=LOST, near=None),
     Pay(inherit=(OWNER, WAITER))),
    # --- beyond the exact pHash
    ("no call: ask the near index", replace(BASE, shared=None), Lookup(Read.NEAR)),
    ("a near result", replace(BASE, shared=None, near=NearMatch(NearKind.NEAR, NEAR, 3, entry(NEAR))),
     Answer(entry(NEAR), CacheSource.NEAR, distance=3)),
    ("a near call under way: wait on it there", replace(BASE, shared=None, near=NearMatch(NearKind.PENDING, NEAR, 3)),
     WaitOn(NEAR, 3)),
    ("nothing near (claimed): the reframed tier", replace(BASE, shared=None, near=CLAIMED), Lookup(Read.REFRAMED)),
    ("reframed copy accepted: the claim is released",
     replace(BASE, shared=None, near=CLAIMED, reframed=ReframedMatch(entry(OTHER), ACCEPTED, b"f")),
     Answer(entry(OTHER), CacheSource.REFRAMED, distance=bin(int(OWN, 16) ^ int(OTHER, 16)).count("1"),
            check=ACCEPTED.describe(), release_claim=True)),
    ("reframed rejected: pay, with the features", replace(BASE, shared=None, near=CLAIMED,
                                                          reframed=ReframedMatch(None, REJECTED, b"\x01\x02")),
     Pay(features="AQI=")),
    ("reframed failed: pay without features", replace(BASE, shared=None, near=MISS, reframed=ReframedMatch()),
     Pay()),
    ("after the lookups the table has it: the claim is released",
     replace(BASE, shared=None, near=CLAIMED, reframed=ReframedMatch(), table=entry(OWN)),
     Answer(entry(OWN), CacheSource.TABLE, release_claim=True)),
    ("after the lookups a call is under way: wait, the claim is released",
     replace(BASE, shared=None, near=CLAIMED, call=LIVE), WaitHere(OWN, "owner", release_claim=True)),
    ("both tiers off: pay at once", replace(BASE, near_on=False, reframed_on=False, shared=None), Pay()),
    ("near off: straight to the reframed tier", replace(BASE, near_on=False, shared=None), Lookup(Read.REFRAMED)),
    ("reframed off: pay after the near miss", replace(BASE, reframed_on=False, shared=None, near=CLAIMED), Pay()),
    # --- a job waiting on a near-duplicate's call (wait_on = OWN, its own pHash NEAR)
    ("joining: the call's result in the table", replace(JOINING, table=entry(OWN)),
     Answer(entry(OWN), CacheSource.NEAR, distance=3)),
    ("joining: the call is under way: wait here", replace(JOINING, call=LIVE), WaitHere(OWN, "owner")),
    ("joining: nothing here: read Redis", JOINING, Lookup(Read.SHARED)),
    ("joining: answered elsewhere", replace(JOINING, shared=entry(OWN)), Answer(entry(OWN), CacheSource.NEAR, 3)),
    ("joining: the call is gone", replace(JOINING, shared=None), ReturnHome()),
    ("joining: a lost call is not waited on", replace(JOINING, shared=None, call=LOST), ReturnHome()),
    ("joining: the call appeared while Redis was read", replace(JOINING, shared=None, call=LIVE),
     WaitHere(OWN, "owner")),
]


@pytest.mark.parametrize(("seen", "expected"), [(s, d) for _, s, d in CASES], ids=[name for name, _, _ in CASES])
def test_decision(seen: Seen, expected: Decision) -> None:
    assert decide(seen) == expected


def test_the_pHash_looked_at_is_the_waited_on_calls() -> None:
    assert BASE.looked_at == OWN and JOINING.looked_at == OWN and JOINING.job.phash == NEAR
    assert BASE.shared is UNREAD and not BASE.claimed and replace(BASE, near=CLAIMED).claimed

"""Which jobs one model call answers, and how each is told (its cache info and timings). Pure: no I/O.

The classify agent (agents/classify.py) takes the call's entry off the in-flight table, asks :func:`jobs_of_call`
whom to answer and :func:`answers` what to tell each, and publishes the results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from models.records import CachedClassification, CacheInfo, CacheSource, ImageHashed
from streams.imaging import hamming_distance


def jobs_of_call(requester: ImageHashed, owner: ImageHashed | None,
                 waiters: Sequence[ImageHashed] = ()) -> list[ImageHashed]:
    """The requesting job and everyone who waited on the call, each once. The call's owner in the table is
    answered too when it is not the requester (a call re-issued for a job that arrived after it was lost)."""
    jobs = [requester, *waiters]
    if owner is not None and owner.job_id != requester.job_id:
        jobs.append(owner)
    unique: dict[str, ImageHashed] = {}
    for job in jobs:
        unique.setdefault(job.job_id, job)
    return list(unique.values())


@dataclass(frozen=True)
class JobAnswer:
    job: ImageHashed
    cache: CacheInfo
    timings_ms: dict[str, float]


def answers(jobs: Sequence[ImageHashed], *, phash: str, requester_job_id: str, entry: CachedClassification,
            paid: bool, now: datetime, model_ms: float | None = None,
            attempts: int | None = None) -> list[JobAnswer]:
    """What each job is told. The requester of a call that was paid for gets ``source=model``; everyone else
    waited on it (``source=inflight``), near-duplicates too: with their own pHash and their distance from it."""
    out = []
    for job in jobs:
        paid_here = paid and job.job_id == requester_job_id
        cache = CacheInfo(hit=not paid_here, source=CacheSource.MODEL if paid_here else CacheSource.INFLIGHT,
                          phash=job.phash, model_version=entry.model_version,
                          distance=hamming_distance(job.phash, phash),
                          reused_job_id=None if paid_here else entry.job_id,
                          matched_phash=phash if job.phash != phash else None)
        timings: dict[str, float] = {"wait": round((now - job.received_at).total_seconds() * 1000, 2)}
        if model_ms is not None:
            timings["model"] = round(model_ms, 2)
        if paid_here and attempts is not None:
            timings["model_attempts"] = attempts
        out.append(JobAnswer(job, cache, timings))
    return out

"""A worker killed in the middle of a burst loses no job: its replacement finishes every one.

Runs in a pytest session of its own (``-m worker_restart``, see scripts/test.sh): its worker must be the only
one on the broker (every group's dedupe also reads the hashed events other groups' workers write, which would add
results under this group's version). Its workers call a simulator of their own, so the calls it counts are theirs.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import time

import pytest

from models.records import AnalysisResult, JobStatus
from tests import samples
from tests.integration.private_stack import isolated_group
from tools.kit import PipelineClient, Simulator, start_worker, wait_until_pipeline_answers, worker_counter
from tools.kit.results import of_group

pytestmark = [pytest.mark.stack, pytest.mark.worker_restart]

PHOTOS = 24
COPIES = 2
MODEL_LATENCY_MS = 1500


def _own(results: list[AnalysisResult], version: str) -> list[AnalysisResult]:
    return [r for r in results if of_group(r, version)]


async def test_a_worker_killed_mid_burst_loses_no_job() -> None:
    sim = await asyncio.to_thread(Simulator.start, SIM_LATENCY_MS=str(MODEL_LATENCY_MS),
                                  SIM_LATENCY_JITTER_MS="100")
    simulator = sim.request
    settings = isolated_group("crash", sim, kafka_session_timeout_seconds=8)
    client = PipelineClient(settings)
    first = start_worker(settings, name="crash-first")
    second = None
    try:
        await wait_until_pipeline_answers(client, first)
        blobs = [samples.photo_bytes(300 + i) for i in range(PHOTOS)] * COPIES
        keys = await client.upload_many(blobs)
        calls_before = (await simulator("GET", "/_sim/stats"))["calls"]
        async with client.results() as watcher:
            jobs = list(await asyncio.gather(*(watcher.publish(k) for k in keys)))
            # Kill it once model calls are under way and some jobs are answered, others not yet.
            deadline = time.monotonic() + 60
            while len(watcher.received.keys() & set(jobs)) < len(jobs) // 4:
                assert time.monotonic() < deadline, "the first worker answered too few jobs"
                await watcher.drain(0.2)
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=10)
            # What the dead worker delivered: everything on the results topic now (nobody else answers yet).
            await watcher.read_to_end()
            answered_jobs = {job for job in jobs if _own(watcher.received.get(job, []), settings.model_version)}
            answered_before_kill = len(answered_jobs)
            photos_answered = {i % PHOTOS for i, job in enumerate(jobs) if job in answered_jobs}
            assert answered_before_kill < len(jobs), "the burst ended before the kill: nothing was tested"

            second = start_worker(settings, name="crash-second", new_group=False)  # same group, where it left off
            await watcher.wait_for(jobs, timeout=150)
            await watcher.drain(2.0)  # a redelivered event may answer a job twice (at-least-once)
            calls = (await simulator("GET", "/_sim/stats"))["calls"] - calls_before
            answered = {job: len(_own(watcher.received[job], settings.model_version)) for job in jobs}

            # Every event of the burst delivered again, as a rebalance would: the markers hold back every repeat.
            port = settings.worker_web_port
            suppressed_before = await worker_counter(port, "waste_results_suppressed_total")
            for job, key in zip(jobs, keys, strict=True):
                await watcher.publish(key, job_id=job)
            deadline = time.monotonic() + 120
            while await worker_counter(port, "waste_results_suppressed_total") < suppressed_before + len(jobs):
                assert time.monotonic() < deadline, "the replayed burst was not suppressed"
                await watcher.drain(0.5)
            await watcher.drain(1.0)
            replayed = {job: len(_own(watcher.received[job], settings.model_version)) for job in jobs}
    finally:
        for worker in (first, second):
            if worker is not None:
                worker.stop()
        sim.stop()

    assert replayed == answered, "a replayed event published a second result despite its marker"

    results = {job: _own(watcher.received[job], settings.model_version) for job in jobs}
    assert all(results.values()), "a job was answered only by another worker"
    statuses = collections.Counter(r.status for rs in results.values() for r in rs)
    assert set(statuses) == {JobStatus.DONE}, statuses
    # Copies of one photo agree, also when one was answered before the kill and the other after it.
    by_photo: dict[str, set[str]] = collections.defaultdict(set)
    for job in jobs:
        for r in results[job]:
            by_photo[r.cache.phash].add(r.classification.model_dump_json())  # type: ignore[union-attr]
    assert len(by_photo) == PHOTOS and all(len(answers) == 1 for answers in by_photo.values())
    # A photo answered before the kill is never paid again (its answer is in Redis); one that was not may be
    # paid twice: its call may have been cut off by the kill.
    assert PHOTOS <= calls <= 2 * PHOTOS - len(photos_answered), (calls, len(photos_answered))
    # Replayed events do not publish again once their result's marker is written (streams/outcomes.py); a
    # result delivered in the moment of the kill, before its marker, may come twice: identical, same key.
    duplicates = sum(len(rs) - 1 for rs in results.values())
    for rs in results.values():
        assert {(r.status, r.classification) for r in rs} == {(rs[0].status, rs[0].classification)}
    # Only a result the broker acknowledged in the moment of the kill, before its marker was written, can come
    # twice, so every job answered twice was answered by the killed worker; none answered after the kill is (the
    # replay above proves the markers for all). Clients see one result either way: the API keeps the first
    # (api/store.py, tests/api/test_ws.py). Measured here: 0-3 on a quiet machine, 11 of 48 at load 10.
    twice = {job for job, rs in results.items() if len(rs) > 1}
    assert twice <= answered_jobs, sorted(twice - answered_jobs)[:3]
    print(f"answered before the kill {answered_before_kill}/{len(jobs)}, model calls {calls}, "
          f"jobs answered twice {duplicates}")

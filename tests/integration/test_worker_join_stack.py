"""A second worker joins the group in the middle of a burst (scaling up): the group rebalances under jobs that are
being fetched, hashed, waited on and paid for, and every one of them still gets exactly one result.

Runs in the ``worker_restart`` session: no other group's worker may read the same events. The model is a private
simulator (1 s a call), so calls are under way when the partitions move.
"""

from __future__ import annotations

import time

import pytest

from models.records import JobStatus
from tests import samples
from tests.integration.private_stack import isolated_group
from tools.kafka_admin import group_lag
from tools.kit import (
    PipelineClient,
    Simulator,
    free_port,
    start_worker,
    wait_until_partitions_held,
    wait_until_pipeline_answers,
)
from tools.kit.results import of_group

pytestmark = [pytest.mark.stack, pytest.mark.worker_restart]

PHOTOS = 16
COPIES = 3


async def test_a_worker_joining_mid_burst_loses_no_job() -> None:
    sim = Simulator.start(SIM_LATENCY_MS="1000", SIM_LATENCY_JITTER_MS="100")
    settings = isolated_group("join", sim)
    client = PipelineClient(settings)
    first = start_worker(settings, name="join-first")
    second = None
    try:
        await wait_until_pipeline_answers(client, first)
        keys = await client.upload_many([samples.photo_bytes(330 + i) for i in range(PHOTOS)] * COPIES)
        calls_before = (await sim.request("GET", "/_sim/stats"))["ok"]
        async with client.results() as watcher:
            jobs = [await watcher.publish(key) for key in keys]

            def answered() -> set[str]:
                return {j for j in jobs if any(of_group(r, settings.model_version)
                                               for r in watcher.received.get(j, []))}

            deadline = time.monotonic() + 60
            while len(answered()) < len(jobs) // 4:  # model calls under way, some copies waiting on them
                assert time.monotonic() < deadline, "the first worker answered too few jobs"
                await watcher.drain(0.1)
            assert len(answered()) < len(jobs), "the burst ended before the join: nothing was tested"
            second = start_worker(settings.model_copy(update={"worker_web_port": free_port()}),
                                  name="join-second", new_group=False)
            await wait_until_partitions_held(settings, [first, second], timeout=120)
            deadline = time.monotonic() + 90
            while answered() != set(jobs) and time.monotonic() < deadline:
                await watcher.drain(0.5)
            await watcher.drain(2.0)
            missing = set(jobs) - answered()
            lag = await group_lag(settings) if missing else {}
        calls = (await sim.request("GET", "/_sim/stats"))["ok"] - calls_before
    finally:
        for worker in (first, second):
            if worker is not None:
                worker.stop()
        sim.stop()

    assert not missing, f"{len(missing)} of {len(jobs)} jobs never answered; group lag {lag}"
    results = {j: [r for r in watcher.received[j] if of_group(r, settings.model_version)] for j in jobs}
    assert all(r.status is JobStatus.DONE for rs in results.values() for r in rs)
    print(f"join: {len(jobs)} jobs, model calls {calls} for {PHOTOS} photos, "
          f"answered twice {sum(len(rs) > 1 for rs in results.values())}")
    assert PHOTOS <= calls <= 2 * PHOTOS, calls  # a call cut off by the move may be paid again, once

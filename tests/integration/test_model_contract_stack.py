"""The worker against the stack's strict simulator: its real request passes, refusals and cut answers are
handled as README's "The vision model" says."""

from __future__ import annotations

import pytest

from models.errors import ErrorCode
from models.records import JobStatus
from tests import samples
from tests.integration.private_stack import own_results
from tools.kit import Simulator

simulator = Simulator().request  # the stack's shared simulator

pytestmark = pytest.mark.pipeline


async def _stats() -> dict:  # type: ignore[type-arg]
    return await simulator("GET", "/_sim/stats")


async def test_the_stack_runs_the_strict_simulator_and_the_workers_request_passes(pipeline) -> None:  # type: ignore[no-untyped-def]
    assert (await simulator("GET", "/_sim/config"))["mode"] == "strict"
    key = await pipeline.client.upload(samples.photo_bytes(357))
    before = await _stats()
    async with pipeline.client.results() as watcher:
        job_id = await watcher.publish(key)
        result = (await own_results(watcher, [job_id], pipeline.settings))[job_id]
    after = await _stats()
    assert result.status is JobStatus.DONE and result.cache.source.value == "model"
    assert after["rejected"] == before["rejected"]  # nothing the worker sent was refused
    assert after["image_tokens"] - before["image_tokens"] == 85  # one image at detail "low" on gpt-4o


async def test_a_refusal_fails_the_job_once_and_is_never_cached(pipeline) -> None:  # type: ignore[no-untyped-def]
    photo = samples.photo_bytes(358)
    await simulator("POST", "/_sim/config", {"script": ["refusal"]})
    before = (await _stats())["calls"]
    async with pipeline.client.results() as watcher:
        job_id = await watcher.publish(await pipeline.client.upload(photo))
        refused = (await own_results(watcher, [job_id], pipeline.settings))[job_id]
        assert (await _stats())["calls"] - before == 1  # not retried: it would refuse again, and cost again
        assert refused.status is JobStatus.FAILED and refused.error.code is ErrorCode.MODEL_REFUSED
        again = await watcher.publish(await pipeline.client.upload(photo))
        answered = (await own_results(watcher, [again], pipeline.settings))[again]
    assert answered.status is JobStatus.DONE and answered.cache.source.value == "model"


async def test_a_truncated_answer_is_retried_and_the_job_is_done(pipeline) -> None:  # type: ignore[no-untyped-def]
    await simulator("POST", "/_sim/config", {"script": ["truncated"]})
    before = (await _stats())["calls"]
    async with pipeline.client.results() as watcher:
        job_id = await watcher.publish(await pipeline.client.upload(samples.photo_bytes(359)))
        result = (await own_results(watcher, [job_id], pipeline.settings))[job_id]
    assert result.status is JobStatus.DONE and result.timings_ms["model_attempts"] == 2
    assert (await _stats())["calls"] - before == 2

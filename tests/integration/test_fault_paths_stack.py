"""Failure paths on the real stack that need a worker with settings of its own and a model endpoint nobody else
scripts: model timeouts, invalid output, Retry-After, the concurrency cap, ``VISION_IMAGE_MODE=cdn_url``; a CDN
that fails (5xx, 403, timeout, truncated body) and an S3 that fails too; a model call that never returns.

Two extra workers (each in a consumer group of its own, each with a private simulator), started once per module:
``model_worker`` (short model timeout, two attempts, concurrency 2, the CDN URL sent to the model) and
``origin_worker`` (a broken CDN and S3 in front of the real ones, a long model timeout, INFLIGHT_TIMEOUT_SECONDS=1).
Other workers on the broker answer these events as well; results are told apart by model version
(``own_result``). A private simulator's script can still be taken by another test's event that the extra worker
also handles: the tests that script a fault check, from their own job's result, that their job got it, and
set it up again with a fresh photo when it did not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from models.errors import ErrorCode
from models.records import AnalysisResult, JobStatus
from models.settings import VisionImageMode
from simulator.answers import classify as simulated_answer
from streams.clients import s3_client
from tests.integration.private_stack import S3_BLIP_FAILURES, broken_origin, fault_key, own_result
from tests.integration.test_outcomes_stack import unique_jpeg
from tools.kit import Pipeline, Simulator, free_port, running_pipeline

pytestmark = pytest.mark.pipeline

MODEL_TIMEOUT_S = 3.0
CONCURRENCY = 2
CDN_TIMEOUT_S = 2.0
# How long the origin worker waits out an outage of both sources. The s3blip test needs its first fetch (the CDN's
# 500, two failed S3 reads with botocore's backoff of up to 1 s between them) and the retry's first delay to fit in
# it: with 4 s that left ~2 s of slack, which a two-core CI machine under load can use up (the job then failed
# FETCH_FAILED instead of being waited out). The s3fail test (an outage that never ends) takes this long to fail.
FETCH_RETRY_S = 20.0


@dataclasses.dataclass
class ExtraWorker(Pipeline):
    real_s3: str | None = None  # the stack's S3 server (the origin worker's S3_ENDPOINT_URL is the broken origin)


@pytest.fixture(scope="module")
def model_worker(pipeline) -> Iterator[ExtraWorker]:  # type: ignore[no-untyped-def]
    sim = Simulator.start()
    session = uuid.uuid4().hex[:8]
    settings = pipeline.settings.model_copy(update={
        "app_id": f"waste-model-faults-{session}", "prompt_version": f"model-faults-{session}",
        "worker_web_port": free_port(), "openai_base_url": f"{sim.url}/v1",
        "vision_timeout_seconds": MODEL_TIMEOUT_S, "vision_max_attempts": 2, "vision_backoff_base_seconds": 0.05,
        "vision_concurrency": CONCURRENCY, "vision_image_mode": VisionImageMode.CDN_URL,
    })
    with running_pipeline(settings, "worker-model-faults", sim) as extra:
        yield ExtraWorker(**vars(extra), real_s3=pipeline.settings.s3_endpoint_url)


@pytest.fixture(scope="module")
def origin_worker(pipeline) -> Iterator[tuple[ExtraWorker, object]]:  # type: ignore[no-untyped-def]
    sim = Simulator.start()
    session = uuid.uuid4().hex[:8]
    with broken_origin(pipeline.settings, slow_seconds=CDN_TIMEOUT_S * 3) as origin:
        settings = pipeline.settings.model_copy(update={
            "app_id": f"waste-origin-faults-{session}", "prompt_version": f"origin-faults-{session}",
            "worker_web_port": free_port(), "openai_base_url": f"{sim.url}/v1",
            "cdn_base_url": origin.cdn_base_url, "s3_endpoint_url": origin.s3_url,
            "fetch_timeout_seconds": CDN_TIMEOUT_S,
            # An outage of the CDN and S3 is waited out this long (s3blip-* keys recover in time, s3fail-* never).
            "fetch_retry_seconds": FETCH_RETRY_S,
            # A call that hangs is never timed out by the client in these tests: only the lost-call timer acts.
            "vision_timeout_seconds": 300.0, "inflight_timeout_seconds": 1.0,
        })
        with running_pipeline(settings, "worker-origin-faults", sim) as extra:
            yield ExtraWorker(**vars(extra), real_s3=pipeline.settings.s3_endpoint_url), origin


async def upload(extra: ExtraWorker, data: bytes, key: str | None = None) -> str:
    key = key or f"tests/{uuid.uuid4()}.jpg"
    async with s3_client(extra.settings, endpoint_url=extra.real_s3) as s3:
        await s3.put_object(Bucket=extra.settings.s3_bucket_name, Key=key, Body=data, ContentType="image/jpeg")
    return key


async def scripted(extra: ExtraWorker, script: list[str], got_it: Callable[[AnalysisResult], bool],
                   expect: ErrorCode | None, photo_index: int, tries: int = 3, timeout: float = 90,
                   **config: object) -> AnalysisResult:
    """Script the private simulator, send a fresh photo, and return its result once our job got the script."""
    result = None
    for attempt in range(tries):
        await extra.simulator.request("POST", "/_sim/config", {"script": script, **config})
        try:
            key = await upload(extra, unique_jpeg(photo_index + attempt))
            async with extra.client.results() as watcher:
                job_id = await watcher.publish(key)
                result = await own_result(watcher, job_id, extra.settings, expect=expect, timeout=timeout)
        finally:
            await extra.simulator.request("POST", "/_sim/config", {"script": []})
        if got_it(result):
            return result
    raise AssertionError(f"another event took the scripted faults {tries} times; last result: {result}")


# --- the model endpoint -----------------------------------------------------------------------------------------


async def test_a_model_that_never_answers_in_time_fails_with_model_timeout(model_worker: ExtraWorker) -> None:
    result = await scripted(model_worker, ["hang", "hang"], lambda r: r.status is JobStatus.FAILED,
                            ErrorCode.MODEL_TIMEOUT, 301, hang_s=60)
    assert result.error is not None and result.error.code is ErrorCode.MODEL_TIMEOUT
    assert result.classification is None
    assert model_worker.worker.alive()


async def test_model_output_that_stays_invalid_fails_with_model_output_invalid(model_worker: ExtraWorker) -> None:
    result = await scripted(model_worker, ["malformed", "malformed"], lambda r: r.status is JobStatus.FAILED,
                            ErrorCode.MODEL_OUTPUT_INVALID, 305)
    assert result.error is not None and result.error.code is ErrorCode.MODEL_OUTPUT_INVALID
    assert result.classification is None  # no invalid answer ever reaches a client


async def test_a_retry_after_429_waits_at_least_what_the_endpoint_asked(model_worker: ExtraWorker) -> None:
    retry_after = 2.0
    result = await scripted(model_worker, ["429"], lambda r: r.timings_ms.get("model_attempts") == 2, None, 309,
                            retry_after_s=retry_after)
    assert result.status is JobStatus.DONE and result.cache.source.value == "model"
    # The worker's own clock from the first attempt to the answer: the 429, the wait, the second call. Our
    # backoff without Retry-After would be at most VISION_BACKOFF_BASE_SECONDS (0.05 s).
    assert result.timings_ms["model"] >= retry_after * 1000, result.timings_ms


async def test_cdn_url_mode_shows_the_model_the_uploaded_bytes_by_url(model_worker: ExtraWorker) -> None:
    photo = unique_jpeg(313)
    key = await upload(model_worker, photo)
    async with model_worker.client.results() as watcher:
        job_id = await watcher.publish(key)
        result = await own_result(watcher, job_id, model_worker.settings, timeout=90)
    assert result.status is JobStatus.DONE, result.error
    # The simulator answers from the SHA-256 of the image it was shown: the original bytes, which it could only
    # have downloaded from the URL (the inline mode sends a 512 px thumbnail, other bytes, another answer).
    assert result.classification == simulated_answer(hashlib.sha256(photo).hexdigest())
    assert result.image_url and result.image_url.endswith(key)


async def test_no_more_model_calls_run_at_once_than_vision_concurrency(model_worker: ExtraWorker) -> None:
    await model_worker.simulator.request("POST", "/_sim/reset")
    await model_worker.simulator.request("POST", "/_sim/config", {"latency_ms": 400, "jitter_ms": 0})
    try:
        keys = [await upload(model_worker, unique_jpeg(320 + i)) for i in range(4 * CONCURRENCY)]
        async with model_worker.client.results() as watcher:
            jobs = [await watcher.publish(k) for k in keys]
            results = [await own_result(watcher, j, model_worker.settings, timeout=120) for j in jobs]
        stats = await model_worker.simulator.request("GET", "/_sim/stats")
    finally:
        await model_worker.simulator.request("POST", "/_sim/config", {"latency_ms": 50})
    assert all(r.status is JobStatus.DONE for r in results)
    assert stats["calls"] >= len(keys)
    assert 1 <= stats["max_in_flight"] <= CONCURRENCY, stats


# --- a broken CDN, a broken S3, a call that never returns --------------------------------------------------------


@pytest.mark.parametrize(("fault", "cdn_error"), [
    ("cdn500", "HTTP 500"), ("cdn403", "HTTP 403"), ("cdnslow", "timeout"), ("cdntrunc", "truncated body"),
])
async def test_the_cdn_failing_falls_back_to_s3(origin_worker, fault: str, cdn_error: str) -> None:  # type: ignore[no-untyped-def]
    extra, origin = origin_worker
    key = await upload(extra, unique_jpeg(331), fault_key(fault))
    async with extra.client.results() as watcher:
        job_id = await watcher.publish(key)
        await own_result(watcher, job_id, extra.settings, timeout=90)

        # The intermediate topics are shared by every worker group on the broker: this group's dedupe also
        # answers hashed events other groups' workers made (fetched from the real edge). The result of this
        # worker's own fetch is the one that met the broken CDN.
        def own_fetch() -> list[AnalysisResult]:
            return [r for r in watcher.received[job_id] if r.fetch is not None and r.fetch.cdn_error is not None]

        deadline = time.monotonic() + 60
        while not own_fetch():
            assert time.monotonic() < deadline, f"no result of this worker's fetch: {watcher.received[job_id]}"
            await watcher.drain(0.5)
    result = own_fetch()[0]
    assert result.status is JobStatus.DONE, result.error
    assert result.cache is not None and result.cache.model_version == extra.settings.model_version
    assert result.fetch is not None and result.fetch.source.value == "s3"
    assert result.fetch.cdn_error == cdn_error
    assert ("cdn", f"waste-images/{key}") in origin.requests  # it did ask the CDN first


async def test_a_short_outage_of_the_cdn_and_s3_is_waited_out(origin_worker) -> None:  # type: ignore[no-untyped-def]
    """FETCH_RETRY_SECONDS: both sources fail the first reads of the object, the fetch tries again, the job is done."""
    extra, origin = origin_worker
    key = await upload(extra, unique_jpeg(338), fault_key("s3blip"))
    async with extra.client.results() as watcher:
        job_id = await watcher.publish(key)
        result = await own_result(watcher, job_id, extra.settings, timeout=90)
    assert result.status is JobStatus.DONE, result.error
    assert result.fetch is not None and result.fetch.source.value == "s3"
    s3_reads = [path for role, path in origin.requests if role == "s3" and path.endswith(key)]
    assert len(s3_reads) > S3_BLIP_FAILURES  # it failed, and was tried again until S3 answered


async def test_cdn_and_s3_both_failing_is_fetch_failed(origin_worker) -> None:  # type: ignore[no-untyped-def]
    """An outage longer than FETCH_RETRY_SECONDS fails the job, after the retries."""
    extra, origin = origin_worker
    key = await upload(extra, unique_jpeg(337), fault_key("s3fail"))
    async with extra.client.results() as watcher:
        job_id = await watcher.publish(key)
        result = await own_result(watcher, job_id, extra.settings, expect=ErrorCode.FETCH_FAILED, timeout=90)
    assert result.status is JobStatus.FAILED and result.error.code is ErrorCode.FETCH_FAILED
    # Clients are told what failed, never where: no host, port, bucket or key.
    assert "127.0.0.1" not in result.error.message and key not in result.error.message
    assert len([path for role, path in origin.requests if role == "s3" and path.endswith(key)]) >= 2


async def test_a_model_call_that_never_returns_is_re_requested_then_given_up(origin_worker) -> None:  # type: ignore[no-untyped-def]
    """INFLIGHT_TIMEOUT_SECONDS: the dedupe timer (every 30 s) re-requests a call older than that, twice; the
    third time it gives the job up with MODEL_TIMEOUT. The re-requests wait on the call still running in the
    worker, so the photo is paid for once."""
    extra, _ = origin_worker
    before = await extra.simulator.request("GET", "/_sim/stats")

    def hung(r: AnalysisResult) -> bool:
        return r.status is JobStatus.FAILED

    # The give-up comes on the third tick of a 30 s timer after the call (~90 s, more when the machine is busy); the
    # wait ends before the hung call would answer (hang_s), so a late answer cannot pass for a give-up.
    result = await scripted(extra, ["hang"], hung, ErrorCode.MODEL_TIMEOUT, 341, tries=2, timeout=240,
                            hang_s=280)
    after = await extra.simulator.request("GET", "/_sim/stats")
    assert result.error is not None and result.error.code is ErrorCode.MODEL_TIMEOUT
    assert "3 requests" in result.error.message  # the timer's give-up, not a client timeout
    assert after["faults"]["hang"] - before["faults"]["hang"] >= 1
    assert extra.worker.alive()

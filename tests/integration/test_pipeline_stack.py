"""The analysis pipeline end to end on the real stack: Kafka, Redis, S3 server, CDN edge, simulator, Faust worker."""

from __future__ import annotations

import asyncio
import collections
import json
import time
import uuid

import pytest

from models.classification import WasteClassification
from models.errors import ErrorCode
from models.records import AnalysisResult, JobStatus
from streams import topics
from tests import samples
from tests.integration.private_stack import own_results
from tools.kafka_admin import position_at_end
from tools.kit import Simulator, worker_counter
from tools.kit.results import of_group

simulator = Simulator().request  # the stack's shared simulator

pytestmark = pytest.mark.pipeline


async def _calls() -> int:
    return int((await simulator("GET", "/_sim/stats"))["calls"])


def _contract(result: AnalysisResult) -> dict:  # type: ignore[type-arg]
    """The wire form a non-Python consumer sees."""
    return json.loads(result.to_bytes())


async def test_a_photo_becomes_a_done_result_with_the_wire_contract(pipeline) -> None:  # type: ignore[no-untyped-def]
    key = await pipeline.client.upload(samples.photo_bytes(11))
    async with pipeline.client.results() as watcher:
        job_id = await watcher.publish(key)
        result = (await own_results(watcher, [job_id], pipeline.settings))[job_id]
    wire = _contract(result)
    assert wire["status"] == "done" and wire["error"] is None
    WasteClassification.model_validate(wire["classification"])
    assert wire["cache"]["source"] in ("model", "redis", "table") and len(wire["cache"]["phash"]) == 64
    assert wire["fetch"]["source"] == "cdn" and wire["fetch"]["cdn_cache"] == "miss"
    assert wire["fetch"]["bytes"] == len(samples.photo_bytes(11))
    assert {"fetch", "hash", "total"} <= wire["timings_ms"].keys()
    assert wire["completed_at"]
    # The stack's model endpoint is the simulator, and the result says so.
    assert wire["answered_by"] == {"model": pipeline.settings.vision_model, "system_fingerprint": "simulator",
                                   "simulated": True}


async def test_duplicates_cost_one_model_call_per_distinct_photo(pipeline) -> None:  # type: ignore[no-untyped-def]
    """30 photos sent 3 times each, plus 20 copies of one photo at once: one model call per distinct photo."""
    photos = [samples.photo_bytes(i) for i in range(150, 300, 5)]  # 30 photos no other test of the session sends
    burst_photo = photos[0]
    blobs = photos * 3 + [burst_photo] * 20
    keys = await pipeline.client.upload_many(blobs)
    before = await _calls()
    async with pipeline.client.results() as watcher:
        job_ids = await asyncio.gather(*(watcher.publish(k) for k in keys))
        results = await own_results(watcher, job_ids, pipeline.settings, timeout=120)
        await watcher.drain(1.0)
    after = await _calls()

    statuses = collections.Counter(r.status for r in results.values())
    assert statuses == {JobStatus.DONE: len(blobs)}
    by_hash = collections.defaultdict(list)
    for r in results.values():
        by_hash[r.cache.phash].append(r)
    assert len(by_hash) == len(photos)
    paid = [r for r in results.values() if r.cache.source.value == "model"]
    assert after - before == len(photos), "the simulator counted a model call that dedupe should have saved"
    assert len(paid) == len(photos)
    # Every copy of one photo got the same answer as the job that paid for it.
    for group in by_hash.values():
        assert len({r.classification.model_dump_json() for r in group}) == 1
    version = pipeline.settings.model_version
    assert all(len([r for r in watcher.received[j] if of_group(r, version)]) == 1 for j in results)


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: b"", ErrorCode.IMAGE_UNDECODABLE),
        (lambda: samples.truncated_jpeg(samples.photo_bytes(2)), ErrorCode.IMAGE_UNDECODABLE),
        (samples.not_an_image, ErrorCode.IMAGE_UNDECODABLE),
        (samples.decompression_bomb_png, ErrorCode.IMAGE_TOO_LARGE),
        (samples.absurd_dimensions_jpeg, ErrorCode.IMAGE_TOO_LARGE),
    ],
    ids=["empty", "truncated", "not-an-image", "decompression-bomb", "absurd-dimensions"],
)
async def test_bad_images_fail_with_a_stable_code(pipeline, make, code) -> None:  # type: ignore[no-untyped-def]
    key = await pipeline.client.upload(make())
    async with pipeline.client.results() as watcher:
        job_id = await watcher.publish(key)
        result = (await own_results(watcher, [job_id], pipeline.settings))[job_id]
    assert result.status is JobStatus.FAILED and result.classification is None
    assert result.error is not None and result.error.code is code
    assert pipeline.worker.alive()


@pytest.mark.parametrize(
    "make",
    [samples.cmyk_jpeg, samples.png_16bit, samples.png_alpha],
    ids=["cmyk-jpeg", "png-16bit", "png-alpha"],
)
async def test_unusual_images_are_classified(pipeline, make) -> None:  # type: ignore[no-untyped-def]
    key = await pipeline.client.upload(make(samples.photo_bytes(40)))
    async with pipeline.client.results() as watcher:
        job_id = await watcher.publish(key)
        result = (await own_results(watcher, [job_id], pipeline.settings))[job_id]
    assert result.status is JobStatus.DONE, result.error


async def test_a_gif_is_refused_as_a_format_not_accepted(pipeline) -> None:  # type: ignore[no-untyped-def]
    # GIF is not among the upload types (a phone never sends one; animations cost a decode per frame).
    key = await pipeline.client.upload(samples.animated_gif(samples.photo_bytes(40)), content_type="image/gif")
    async with pipeline.client.results() as watcher:
        job_id = await watcher.publish(key)
        result = (await own_results(watcher, [job_id], pipeline.settings))[job_id]
    assert result.status is JobStatus.FAILED and result.error is not None
    assert result.error.code is ErrorCode.UNSUPPORTED_FORMAT


async def test_exif_rotated_photo_is_a_cache_hit_of_the_upright_one(pipeline) -> None:  # type: ignore[no-untyped-def]
    upright = samples.photo_bytes(77)
    keys = [await pipeline.client.upload(upright), await pipeline.client.upload(samples.exif_rotated(upright))]
    from tests.integration.private_stack import own_result

    async with pipeline.client.results() as watcher:
        first = await watcher.publish(keys[0])
        # This session's worker's answers (other workers on the broker answer too, under other model versions).
        own = {first: await own_result(watcher, first, pipeline.settings)}
        second = await watcher.publish(keys[1])
        own[second] = await own_result(watcher, second, pipeline.settings)
    assert own[second].status is JobStatus.DONE
    # The rotated copy is answered from the upright photo's result: a hit (exact or near pHash), no call of its
    # own, the same classification, reusing the call that answered the upright one.
    assert own[second].cache.hit and own[second].cache.source.value in ("table", "redis", "near", "inflight")
    assert own[second].cache.distance <= pipeline.settings.near_duplicate_max_distance
    assert own[second].classification == own[first].classification
    assert own[second].cache.reused_job_id == (own[first].cache.reused_job_id or first)


async def test_missing_object_and_malformed_events(pipeline) -> None:  # type: ignore[no-untyped-def]
    async with pipeline.client.results() as watcher:
        missing = await watcher.publish("tests/does-not-exist.jpg")
        await watcher.publish_raw(b"no-key-field", json.dumps({"job_id": "no-key-field", "bucket": "b"}).encode())
        results = await own_results(watcher, [missing, "no-key-field"], pipeline.settings)
    assert results[missing].error.code is ErrorCode.IMAGE_NOT_FOUND
    assert results["no-key-field"].error.code is ErrorCode.INVALID_EVENT
    assert pipeline.worker.alive()


async def test_failures_reach_the_dead_letter_topic(pipeline) -> None:  # type: ignore[no-untyped-def]
    from aiokafka import AIOKafkaConsumer

    from streams import kafka_security

    # Dead letters are for operators: neither the api principal nor the test client's may read them.
    consumer = AIOKafkaConsumer(topics.DEAD_LETTER, **kafka_security.client_kwargs(pipeline.settings, "admin"),
                                group_id=None, auto_offset_reset="latest")
    await consumer.start()
    try:
        await position_at_end(consumer)
        marker = uuid.uuid4().hex
        async with pipeline.client.results() as watcher:
            # Not JSON: it proves no job, so it is dead-lettered only (never a result under its Kafka key).
            await watcher.publish_raw(b"dlq-probe", b"\xff\xfe garbage " + marker.encode())
            letter = None
            async with asyncio.timeout(30):
                while letter is None:
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        for r in records:
                            if marker in json.loads(r.value)["original"]:
                                letter = json.loads(r.value)
            # A proven job under the same Kafka key, after it on the same partition, is answered normally.
            await watcher.publish_raw(b"dlq-probe", json.dumps({"job_id": "dlq-probe"}).encode())
            await watcher.wait_for(["dlq-probe"])
    finally:
        await consumer.stop()
    assert letter["code"] == "INVALID_EVENT" and letter["job_id"] is None
    assert [r.error.code for r in watcher.received["dlq-probe"]] == [ErrorCode.INVALID_EVENT]


async def test_model_429_then_success_is_done(pipeline) -> None:  # type: ignore[no-untyped-def]
    key = await pipeline.client.upload(samples.photo_bytes(151))
    await simulator("POST", "/_sim/config", {"script": ["429"], "retry_after_s": 0.2})
    before = await _calls()
    async with pipeline.client.results() as watcher:
        job_id = await watcher.publish(key)
        result = (await own_results(watcher, [job_id], pipeline.settings))[job_id]
    assert result.status is JobStatus.DONE and result.cache.source.value == "model"
    assert await _calls() - before == 2


async def test_model_that_keeps_failing_gives_a_failed_result(pipeline) -> None:  # type: ignore[no-untyped-def]
    key = await pipeline.client.upload(samples.photo_bytes(161))
    attempts = pipeline.settings.vision_max_attempts
    await simulator("POST", "/_sim/config", {"script": ["500"] * attempts})
    try:
        async with pipeline.client.results() as watcher:
            job_id = await watcher.publish(key)
            result = (await own_results(watcher, [job_id], pipeline.settings))[job_id]
    finally:
        await simulator("POST", "/_sim/config", {"script": []})
    assert result.status is JobStatus.FAILED and result.error.code is ErrorCode.MODEL_UNAVAILABLE
    assert pipeline.worker.alive()


async def test_malformed_model_output_never_reaches_a_client(pipeline) -> None:  # type: ignore[no-untyped-def]
    from tests.integration.private_stack import own_result

    result = None
    # The stack's simulator is shared: another worker's call may take the scripted fault. Then set it up again
    # with another photo (this job's attempt count says whether it got the malformed answer).
    for index in (171, 173, 175):
        key = await pipeline.client.upload(samples.photo_bytes(index))
        await simulator("POST", "/_sim/config", {"script": ["malformed"]})
        try:
            async with pipeline.client.results() as watcher:
                result = await own_result(watcher, await watcher.publish(key), pipeline.settings)
        finally:
            await simulator("POST", "/_sim/config", {"script": []})  # never leak the fault to the next test
        assert result.status is JobStatus.DONE, result.error
        assert result.cache.source.value == "model"  # this job paid for the call: no cache hit can pass the test
        if result.timings_ms.get("model_attempts") == 2:
            break
    assert result is not None and result.timings_ms.get("model_attempts") == 2, "the malformed answer was never ours"
    # One malformed answer was retried once; the client sees a schema-valid classification.
    WasteClassification.model_validate(result.classification.model_dump())


async def test_with_the_cdn_down_results_still_arrive_via_s3(pipeline) -> None:  # type: ignore[no-untyped-def]
    """A second worker (its own consumer group) whose CDN address answers nothing: it must fall back to S3."""
    import time

    from tools.kit import free_port, start_worker

    settings = pipeline.settings.model_copy(update={
        "app_id": f"{pipeline.settings.app_id}-nocdn",
        "cdn_base_url": f"http://127.0.0.1:{free_port()}/waste-images",
        "worker_web_port": free_port(),
        "fetch_timeout_seconds": 2.0,
    })
    worker = start_worker(settings, name="worker-nocdn")
    try:
        key = await pipeline.client.upload(samples.photo_bytes(181))
        via_s3 = None
        published: list[str] = []
        async with pipeline.client.results() as watcher:
            deadline = time.monotonic() + 180
            # Both workers answer every event; keep publishing until the CDN-less one has joined and answered. Every
            # job published so far is looked at: the worker answers the events it finds when it joins, and one
            # slower than the session's worker by more than the drain answers after the next event is published
            # (looking at the last job alone, such a worker was never seen to answer).
            while via_s3 is None and time.monotonic() < deadline:
                assert worker.alive(), worker.log_tail()
                job_id = await watcher.publish(key)
                published.append(job_id)
                await watcher.wait_for([job_id], timeout=60)
                await watcher.drain(2.0)
                via_s3 = next((r for j in published for r in watcher.received[j]
                               if r.fetch and r.fetch.source.value == "s3"), None)
    finally:
        worker.stop()
    assert via_s3 is not None, "the worker without a CDN never answered"
    assert via_s3.status is JobStatus.DONE and via_s3.fetch.cdn_error


async def test_worker_exposes_prometheus_metrics(pipeline) -> None:  # type: ignore[no-untyped-def]
    import aiohttp

    key = await pipeline.client.upload(samples.photo_bytes(191))
    async with pipeline.client.results() as watcher:
        await watcher.wait_for([await watcher.publish(key)])
    url = f"http://127.0.0.1:{pipeline.settings.worker_web_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        body = await resp.text()
    assert resp.status == 200
    for name in ("waste_results_total", "waste_cache_lookups_total", "waste_model_calls_total",
                 "waste_fetch_total", "waste_failures_total"):
        assert name in body
    assert 'waste_results_total{source="model",status="done"}' in body


async def test_worker_exports_lag_and_committed_offset_for_every_partition_it_holds(pipeline) -> None:  # type: ignore[no-untyped-def]
    """What the ConsumerLagGrowing and PartitionStalled alerts read (monitoring/alerts.yml), from the real worker:
    the session's only worker of its group holds every partition of the uploads topic."""
    import re

    import aiohttp

    from tools.kafka_admin import partition_counts

    count = (await partition_counts(pipeline.settings, [topics.UPLOADS_COMPLETED]))[topics.UPLOADS_COMPLETED]
    key = await pipeline.client.upload(samples.photo_bytes(192))
    async with pipeline.client.results() as watcher:
        await watcher.wait_for([await watcher.publish(key)])
    url = f"http://127.0.0.1:{pipeline.settings.worker_web_port}/metrics"

    def reported(body: str, metric: str) -> dict[int, float]:
        pattern = rf'{metric}{{partition="(\d+)",topic="{re.escape(topics.UPLOADS_COMPLETED)}"}} (\S+)'
        return {int(p): float(v) for p, v in re.findall(pattern, body)}

    deadline = time.monotonic() + 60  # the worker exports every LAG_INTERVAL_SECONDS (15 s)
    lags: dict[int, float] = {}
    committed: dict[int, float] = {}
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(url) as resp:
                body = await resp.text()
            lags, committed = reported(body, "waste_consumer_lag"), reported(body, "waste_consumer_committed_offset")
            if len(lags) == count and len(committed) == count:
                break
            await asyncio.sleep(1.0)
    assert sorted(lags) == sorted(committed) == list(range(count)), (lags, committed)
    assert all(lag >= 0 for lag in lags.values()) and all(offset > 0 for offset in committed.values())


async def test_worker_readiness_lists_the_partitions_it_holds(pipeline) -> None:  # type: ignore[no-untyped-def]
    import aiohttp

    from streams import topics
    from tools.kafka_admin import partition_counts

    counts = await partition_counts(pipeline.settings, topics.WORKER_SOURCES)
    url = f"http://127.0.0.1:{pipeline.settings.worker_web_port}/readyz"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        body = await resp.json()
    assert resp.status == 200 and body["ready"] is True
    # The session's only worker of its group holds every partition of every topic it reads.
    for topic, count in counts.items():
        assert body["partitions_held"][topic] == list(range(count))
        assert body["partition_counts"][topic] == count
    changelogs = [t for t in body["partitions_held"] if t.endswith("-changelog")]
    assert len(changelogs) == 2 and all(body["partitions_held"][t] for t in changelogs)


async def test_a_byte_identical_reupload_skips_the_decode_and_the_model(pipeline) -> None:  # type: ignore[no-untyped-def]
    import io
    import uuid

    from PIL import Image

    assert pipeline.settings.content_digest_cache
    # Bytes never uploaded before (a unique JPEG comment), so the first upload must be decoded.
    out = io.BytesIO()
    Image.open(io.BytesIO(samples.photo_bytes(211))).save(out, format="JPEG", quality=90,
                                                         comment=uuid.uuid4().hex.encode())
    photo = out.getvalue()
    first_key, copy_key = await pipeline.client.upload(photo), await pipeline.client.upload(photo)
    async with pipeline.client.results() as watcher:
        first = (await own_results(watcher, [job := await watcher.publish(first_key)], pipeline.settings))[job]
        copy = (await own_results(watcher, [job := await watcher.publish(copy_key)], pipeline.settings))[job]
    assert first.status is JobStatus.DONE and first.cache.source.value == "model" and "decode" in first.timings_ms
    assert copy.status is JobStatus.DONE and copy.cache.hit and copy.cache.phash == first.cache.phash
    assert "decode" not in copy.timings_ms  # its pHash came from the digest of its bytes
    assert copy.classification == first.classification
    assert await worker_counter(pipeline.settings.worker_web_port, "waste_hash_total", path="digest") >= 1


async def test_a_hit_is_answered_without_the_hashed_hop_and_a_miss_takes_it_once(pipeline) -> None:  # type: ignore[no-untyped-def]
    """ANSWER_HITS_AT_FETCH: the fetch step answers a Redis hit itself; only the miss went through images.hashed."""
    from aiokafka import AIOKafkaConsumer

    from streams import kafka_security
    from tests.integration.private_stack import own_result

    assert pipeline.settings.answer_hits_at_fetch
    photo = samples.photo_bytes(221)
    first_key, again_key = await pipeline.client.upload(photo), await pipeline.client.upload(photo)
    hashed = AIOKafkaConsumer(topics.IMAGES_HASHED, **kafka_security.client_kwargs(pipeline.settings, "admin"),
                              group_id=None, auto_offset_reset="latest")
    await hashed.start()
    try:
        await position_at_end(hashed)
        async with pipeline.client.results() as watcher:
            # This session's worker's answers (every group on the broker answers every upload).
            first = await own_result(watcher, await watcher.publish(first_key), pipeline.settings)
            again = await own_result(watcher, await watcher.publish(again_key), pipeline.settings)
        # Both results are out, so every hashed event of these jobs is on the topic: read it up to its end now.
        ends = await hashed.end_offsets(list(hashed.assignment()))
        hops: collections.Counter[str] = collections.Counter()
        async with asyncio.timeout(30):
            while [tp for tp, end in ends.items() if await hashed.position(tp) < end]:
                for records in (await hashed.getmany(timeout_ms=200)).values():
                    hops.update(event["job_id"] for event in map(json.loads, (r.value for r in records))
                                if event.get("origin") == pipeline.settings.app_id)
    finally:
        await hashed.stop()
    assert first.status is JobStatus.DONE and first.cache.source.value == "model"
    assert again.status is JobStatus.DONE and again.cache.source.value == "redis" and again.cache.hit
    assert again.cache.reused_job_id == first.job_id and again.classification == first.classification
    assert (hops[first.job_id], hops[again.job_id]) == (1, 0)

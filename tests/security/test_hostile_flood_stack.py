"""A flood of hostile files and events on the real stack, mixed with honest photos.

Hostile files (tests/security/hostile.py: decompression bombs of every shape, thousands of frames, hundreds of
progressive scans, truncations, huge or deep metadata, polyglots, wrong types, zero bytes, oversized objects) are
uploaded to the real S3 server under the API's keys and named in upload-complete events, several copies each,
shuffled with honest photos and with hostile events (other buckets, keys that try to leave the bucket's path,
another job's key, bodies that do not prove the job their Kafka key names). Then:

* every job gets exactly one terminal result from the worker: hostile ones ``failed`` with their stable code and
  a message that names no internal host, port, bucket or path, honest ones ``done``;
* a hostile event under an honest job's Kafka key does not touch that job;
* the worker's peak RSS (VmHWM) stays under WORKER_MEMORY_CEILING_MB;
* the worker paid for exactly the honest photos it classified (its model-call counter against the results that
  say ``cache.source == "model"``), so no hostile file reached the model.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from models.errors import ErrorCode
from models.records import JobStatus, UploadCompleted, utcnow
from streams import kafka_security, topics
from streams.clients import s3_client
from tests import samples
from tests.security import hostile
from tools.kafka_admin import position_at_end
from tools.kit import Simulator, worker_counter

pytestmark = pytest.mark.pipeline

COPIES = 3  # of each hostile file, under keys of their own (a failure is not remembered: each is checked again)
HONEST_PHOTOS = [samples.photo_bytes(250 + i) for i in range(10)]
LEAKS = ("127.0.0.1", "localhost", ":7070", ":6081", ":9092", "s3://", "waste-images", "uploads/", "http")
REPORT = Path(__file__).resolve().parents[2] / ".stack" / "logs" / "security-flood.json"


@dataclass
class Job:
    job_id: str
    kind: str  # "honest", "large", a hostile case's name, or an event case's name
    expected: ErrorCode | None  # None: done


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def large_png() -> bytes:
    """The largest PNG the guards accept (MAX_FULL_DECODE_PIXELS, RGBA): decoded whole, then reduced."""
    from PIL import Image

    image = Image.radial_gradient("L").resize((4096, 4096)).convert("RGBA")
    return hostile.encode(image, "PNG", compress_level=1)


def large_jpeg() -> bytes:
    """A 48-megapixel baseline JPEG: under MAX_IMAGE_PIXELS, decoded at 1/8 scale."""
    from PIL import Image

    image = Image.linear_gradient("L").rotate(30).resize((8000, 6000)).convert("RGB")
    return hostile.encode(image, "JPEG", quality=70)


async def test_a_hostile_flood_is_refused_within_the_memory_ceiling_and_costs_no_model_call(pipeline) -> None:  # type: ignore[no-untyped-def]
    settings = pipeline.settings
    port, pid = settings.worker_web_port, pipeline.worker.process.pid
    rng = random.Random(10)
    uploads: list[tuple[str, bytes, str | None]] = []  # key, bytes, content type
    events: list[tuple[bytes | None, bytes]] = []
    jobs: dict[str, Job] = {}
    unproven: list[bytes] = []  # markers of events that prove no job: dead-lettered only

    def job_for(kind: str, expected: ErrorCode | None, data: bytes | None, content_type: str | None,
                suffix: str = "") -> str:
        job_id = uuid.uuid4().hex
        key = f"uploads/{job_id}{suffix}"
        if data is not None:
            uploads.append((key, data, content_type))
        jobs[job_id] = Job(job_id, kind, expected)
        events.append((job_id.encode(), UploadCompleted(job_id=job_id, bucket=settings.s3_bucket_name, key=key,
                                                        content_type=content_type, uploaded_at=utcnow()).to_bytes()))
        return job_id

    honest = [job_for("honest", None, data, "image/jpeg") for data in HONEST_PHOTOS]
    job_for("large-png", None, large_png(), "image/png", ".png")
    job_for("large-jpeg", None, large_jpeg(), "image/jpeg", ".jpg")
    for case in hostile.CASES:
        data = case.make()
        for _ in range(COPIES):
            job_for(case.name, case.code, data, case.content_type, case.suffix)

    # Events that must be refused before anything is fetched. Proven (key = body.job_id): answered INVALID_EVENT.
    def raw_event(job_id: str, **fields: Any) -> bytes:
        return json.dumps({"job_id": job_id, "bucket": settings.s3_bucket_name, **fields}).encode()

    honest_key = f"uploads/{honest[0]}"
    bad_keys = {
        "dotdot": "uploads/../{job}", "encoded-dotdot": "uploads/%2e%2e/{job}", "encoded-slash": "uploads%2F..%2F{job}",
        "absolute-url": "http://169.254.169.254/latest/meta-data", "protocol-relative": "//evil.example/{job}",
        "leading-slash": "/uploads/{job}", "backslash": "uploads\\..\\{job}", "control-chars": "uploads/{job}\r\nX-A: 1",
        "nul": "uploads/{job}\u0000.jpg", "overlong": "uploads/{job}" + "a" * 1000, "query": "uploads/{job}?x-id=Get",
        "another-jobs-key": honest_key, "outside-scheme": "private/{job}.jpg", "svg-extension": "uploads/{job}.svg",
    }
    for name, template in [*bad_keys.items(), ("other-bucket", None), ("no-key", None)]:
        job_id = uuid.uuid4().hex
        if name == "other-bucket":
            value = raw_event(job_id, key=f"uploads/{job_id}", bucket="private-bucket")
        elif name == "no-key":
            value = raw_event(job_id)
        else:
            value = raw_event(job_id, key=template.format(job=job_id))
        jobs[job_id] = Job(job_id, name, ErrorCode.INVALID_EVENT)
        events.append((job_id.encode(), value))
    # Unproven: bad bodies under honest jobs' Kafka keys. They must not touch those jobs.
    for i, value in enumerate([b"{not json", b"\xff\xfe", b"[]", b'{"bucket": "waste-images"}',
                               raw_event("someone-else", key=honest_key)]):
        marker = f"unproven-{uuid.uuid4().hex}".encode()
        unproven.append(marker)
        victim = honest[i % len(honest)]
        payload = value[:-1] + b', "m": "' + marker + b'"}' if value.endswith(b"}") else value + b" " + marker
        events.append((victim.encode(), payload))
    rng.shuffle(events)

    async with s3_client(settings) as s3:
        sem = asyncio.Semaphore(8)

        async def put(key: str, data: bytes, content_type: str | None) -> None:
            async with sem:
                extra = {"ContentType": content_type} if content_type else {}
                await s3.put_object(Bucket=settings.s3_bucket_name, Key=key, Body=data, **extra)

        await asyncio.gather(*(put(*u) for u in uploads))

    model_calls_before = await worker_counter(port, "waste_model_calls_total")
    results_before = await worker_counter(port, "waste_results_total")
    failed_before = await worker_counter(port, "waste_results_total", status="failed")
    sim_before = await Simulator().calls()
    dead_letters = AIOKafkaConsumer(topics.DEAD_LETTER, **kafka_security.client_kwargs(settings, "admin"),
                                    group_id=None, auto_offset_reset="latest")
    await dead_letters.start()
    started = time.monotonic()
    try:
        await position_at_end(dead_letters)
        async with pipeline.client.results() as watcher:
            for key, value in events:
                await watcher.publish_raw(key, value)
            results = await watcher.wait_for(jobs, timeout=300)
            letters: list[dict[str, Any]] = []
            async with asyncio.timeout(60):
                while not all(any(m.decode() in letter["original"] for letter in letters) for m in unproven):
                    for records in (await dead_letters.getmany(timeout_ms=500)).values():
                        letters.extend(json.loads(r.value) for r in records)
            # This worker's failed results for these jobs have all been counted once the counter reaches their number.
            async with asyncio.timeout(30):
                while await worker_counter(port, "waste_results_total", status="failed") - failed_before < \
                        sum(1 for j in jobs.values() if j.expected is not None):
                    await watcher.drain(0.5)
            await watcher.drain(1.0)
            received = {j: watcher.received.get(j, []) for j in jobs}
    finally:
        await dead_letters.stop()
    elapsed = time.monotonic() - started

    peak_mb = vm_hwm_mb(pid)
    model_calls = await worker_counter(port, "waste_model_calls_total") - model_calls_before
    results_published = await worker_counter(port, "waste_results_total") - results_before
    failed_published = await worker_counter(port, "waste_results_total", status="failed") - failed_before
    sim_calls = await Simulator().calls() - sim_before
    own = [r for j in jobs for r in received[j] if r.cache is None or r.cache.model_version == settings.model_version]
    paid = [r for r in own if r.cache is not None and r.cache.source.value == "model"]
    report = {
        "jobs": len(jobs), "hostile_files": len(hostile.CASES), "copies": COPIES, "elapsed_s": round(elapsed, 1),
        "worker_peak_rss_mb": round(peak_mb, 1), "ceiling_mb": settings.worker_memory_ceiling_mb,
        "worker_model_calls": model_calls, "paid_results": len(paid), "simulator_calls_meanwhile": sim_calls,
        "results_published": results_published, "failed_published": failed_published,
        "codes": {j.kind: results[j.job_id].error.code.value if results[j.job_id].error else "done"
                  for j in jobs.values()},
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=1))

    assert pipeline.worker.alive(), pipeline.worker.log_tail()
    wrong = {j.kind: (results[j.job_id].status.value, results[j.job_id].error) for j in jobs.values()
             if (results[j.job_id].error.code if results[j.job_id].error else None) != j.expected}
    assert not wrong, wrong
    for job in jobs.values():
        result = results[job.job_id]
        if job.expected is None:
            assert result.status is JobStatus.DONE and result.classification is not None
        else:
            assert result.status is JobStatus.FAILED and result.classification is None
            assert not any(leak in result.error.message for leak in LEAKS), (job.kind, result.error.message)
            assert result.fetch is None or result.fetch.cdn_error is None or "127.0.0.1" not in result.fetch.cdn_error
        # Other test sessions' workers may answer too; every answer agrees, and this worker answered once.
        assert {(r.status, r.error.code if r.error else None) for r in received[job.job_id]} == \
               {(result.status, result.error.code if result.error else None)}, job.kind
    # Refused jobs end in the fetch step, so this worker's failed results count them exactly. (Done results can
    # repeat while another test session's worker group runs: it writes the same jobs into the shared internal
    # topics, which this group reads too; identical repeats, and no second model call, as asserted below.)
    assert failed_published == sum(1 for j in jobs.values() if j.expected is not None), report
    # The unproven events were dead-lettered without a job, and the honest jobs under their keys were done.
    for marker in unproven:
        letter = next(item for item in letters if marker.decode() in item["original"])
        assert letter["code"] == "INVALID_EVENT" and letter["job_id"] is None
    for victim in honest:
        assert all(r.status is JobStatus.DONE for r in received[victim])
    # No hostile file reached the model: every call this worker paid for answered an honest job as its payer.
    hostile_paid = [r.job_id for r in paid if jobs[r.job_id].expected is not None]
    assert not hostile_paid
    assert model_calls == len(paid) <= len(HONEST_PHOTOS) + 2, report
    assert sim_calls >= model_calls  # the simulator saw (at least) those calls; other sessions may add theirs
    assert peak_mb < settings.worker_memory_ceiling_mb, report

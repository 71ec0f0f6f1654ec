"""Drive the real pipeline from a test: start a Faust worker process, upload photos, publish events, await results.

Used by the end-to-end tests; everything here talks to the real local stack started by ``scripts/stack.sh up``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from models.records import AnalysisResult, UploadCompleted, utcnow
from models.settings import Settings
from streams import kafka_security, topics
from streams.clients import s3_client
from tools.kafka_admin import partition_counts, position_at_end, start_group_at_end_blocking
from tools.processes import free_port, settings_env, stop_process  # noqa: F401 (free_port is re-exported for the tests)

ROOT = Path(__file__).resolve().parents[1]
STACK_DIR = Path(os.environ.get("STACK_DIR", ROOT / ".stack"))
SIMULATOR_URL = f"http://127.0.0.1:{os.environ.get('SIMULATOR_PORT', '8090')}"
# Test workers read the API's keys (uploads/{job_id}) and the keys PipelineClient.upload makes (tests/{uuid}.jpg,
# not bound to a job id); the worker refuses everything else as in production.
DEFAULT_KEY_PATTERN = Settings.model_fields["upload_key_pattern"].default
TEST_KEY_PATTERN = rf"(?:{DEFAULT_KEY_PATTERN})|tests/[a-z0-9-]{{1,64}}\.(?:jpg|png|webp)"


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        stop_process(self.process, timeout)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_digest(self, warnings: int = 80, tail: int = 25) -> str:
        """What a failed test report shows of the worker: its warnings and errors, then its last lines."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        alerts = [line[:300] for line in lines if "[WARNING]" in line or "[ERROR]" in line or "Traceback" in line]
        return "\n".join([f"--- {len(alerts)} warning/error lines (last {warnings}) ---", *alerts[-warnings:],
                          f"--- last {tail} lines ---", *(line[:300] for line in lines[-tail:])])


# Every worker a test started, so a failed test's report can show what they logged.
STARTED: list[Worker] = []


def start_worker(settings: Settings, name: str = "worker", *, new_group: bool = True) -> Worker:
    """A worker in a consumer group of its own that starts at the end of every topic it reads.

    The group's offsets are committed at the end first and the worker reads from the earliest uncommitted
    offset, so it neither replays earlier sessions' events nor skips any of its own (tools/kafka_admin.py).
    ``new_group=False`` restarts a group where it left off, as after a crash.
    """
    settings = settings.model_copy(update={"kafka_auto_offset_reset": "earliest", "app_env": "development"})
    if settings.upload_key_pattern == DEFAULT_KEY_PATTERN:
        settings = settings.model_copy(update={"upload_key_pattern": TEST_KEY_PATTERN})
    if new_group:
        start_group_at_end_blocking(settings)
    log_dir = STACK_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{settings.app_id}.log"
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    (STACK_DIR / "faust" / settings.app_id).mkdir(parents=True, exist_ok=True)
    faust_bin = Path(sys.executable).with_name("faust")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            # Faust's data folder goes under .stack/, not the working directory.
            [str(faust_bin), "--datadir", str(STACK_DIR / "faust" / settings.app_id), "-A", "streams.app",
             "worker", "-l", "info"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    worker = Worker(process, log_path)
    STARTED.append(worker)
    return worker


class PipelineClient:
    """Uploads photos and publishes upload-complete events; collects results from the results topic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def upload(self, data: bytes, *, suffix: str = ".jpg", content_type: str = "image/jpeg") -> str:
        key = f"tests/{uuid.uuid4()}{suffix}"
        async with s3_client(self.settings) as s3:
            await s3.put_object(Bucket=self.settings.s3_bucket_name, Key=key, Body=data, ContentType=content_type)
        return key

    async def upload_many(self, blobs: Iterable[bytes]) -> list[str]:
        keys: list[str] = []
        async with s3_client(self.settings) as s3:
            sem = asyncio.Semaphore(16)

            async def put(data: bytes) -> str:
                key = f"tests/{uuid.uuid4()}.jpg"
                async with sem:
                    await s3.put_object(Bucket=self.settings.s3_bucket_name, Key=key, Body=data,
                                        ContentType="image/jpeg")
                return key

            keys = list(await asyncio.gather(*(put(b) for b in blobs)))
        return keys

    @contextlib.asynccontextmanager
    async def results(self) -> AsyncIterator[ResultWatcher]:
        # As the API's principal (writes upload events, reads results): the suite proves its ACLs suffice.
        kafka = kafka_security.client_kwargs(self.settings, "api")
        consumer = AIOKafkaConsumer(topics.ANALYSIS_RESULTS, **kafka, group_id=None, auto_offset_reset="latest")
        producer = AIOKafkaProducer(**kafka)
        await consumer.start()
        await producer.start()
        try:
            await position_at_end(consumer)
            yield ResultWatcher(self.settings, consumer, producer)
        finally:
            await producer.stop()
            await consumer.stop()


class ResultWatcher:
    def __init__(self, settings: Settings, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        self._settings = settings
        self._consumer = consumer
        self._producer = producer
        self.received: dict[str, list[AnalysisResult]] = {}

    async def publish(self, key: str, *, job_id: str | None = None) -> str:
        job_id = job_id or str(uuid.uuid4())
        event = UploadCompleted(job_id=job_id, bucket=self._settings.s3_bucket_name, key=key, uploaded_at=utcnow())
        await self._producer.send_and_wait(topics.UPLOADS_COMPLETED, key=job_id.encode(), value=event.to_bytes())
        return job_id

    async def publish_raw(self, key: bytes | None, value: bytes) -> None:
        await self._producer.send_and_wait(topics.UPLOADS_COMPLETED, key=key, value=value)

    async def wait_for(self, job_ids: Iterable[str], timeout: float = 60.0) -> dict[str, AnalysisResult]:
        wanted = set(job_ids)
        deadline = time.monotonic() + timeout
        while not wanted <= self.received.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = wanted - self.received.keys()
                raise TimeoutError(f"{len(missing)} of {len(wanted)} results missing, e.g. {sorted(missing)[:3]}")
            batch = await self._consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000))
            for records in batch.values():
                for record in records:
                    job_id = (record.key or b"").decode()
                    self.received.setdefault(job_id, []).append(AnalysisResult.model_validate_json(record.value))
        return {j: self.received[j][0] for j in wanted}

    async def drain(self, seconds: float) -> None:
        """Keep reading for ``seconds`` (to catch duplicate results after the expected ones arrived)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    job_id = (record.key or b"").decode()
                    self.received.setdefault(job_id, []).append(AnalysisResult.model_validate_json(record.value))



async def wait_until_pipeline_answers(client: PipelineClient, worker: Worker, timeout: float = 120.0) -> None:
    """Readiness by behaviour: publish invalid probe events until the worker answers one with a failed result."""
    deadline = time.monotonic() + timeout
    async with client.results() as watcher:
        while time.monotonic() < deadline:
            if not worker.alive():
                raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
            probe = f"probe-{uuid.uuid4()}"
            # Invalid (no bucket, no key) but naming its own job: such an event is answered with a failed result.
            await watcher.publish_raw(probe.encode(), json.dumps({"job_id": probe, "probe": True}).encode())
            try:
                await watcher.wait_for([probe], timeout=3.0)
            except TimeoutError:
                continue
            await wait_until_worker_holds_every_partition(client.settings, worker, deadline - time.monotonic())
            return
    raise TimeoutError(f"the worker did not answer within {timeout}s:\n{worker.log_tail()}")


async def wait_until_worker_holds_every_partition(settings: Settings, worker: Worker, timeout: float) -> None:
    """A lone worker must hold every partition of every topic it reads, at the topics' real partition counts.

    The probe only proves the input topic is read; a topic missing from the worker's metadata when it joined
    would be read by nobody until a later rebalance.
    """
    expected = await partition_counts(settings, topics.WORKER_SOURCES)
    url = f"http://127.0.0.1:{settings.worker_web_port}/readyz"
    deadline = time.monotonic() + max(timeout, 5.0)
    body: object = None
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url) as response:
                    body = await response.json()
            except (aiohttp.ClientError, ValueError) as exc:  # not listening yet, or not JSON: ask again
                body = repr(exc)
                await asyncio.sleep(0.2)
                continue
            if response.status == 200 and isinstance(body, dict):
                held, counts = body["partitions_held"], body["partition_counts"]
                expected_all = {**{t: counts.get(t) or 0 for t in held}, **expected}
                if all(n > 0 and held.get(t) == list(range(n)) for t, n in expected_all.items()):
                    return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"the worker does not hold every partition (expected {expected}): {body}\n"
                       f"{worker.log_digest()}")


async def simulator(method: str, path: str, payload: dict | None = None) -> dict:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as http, http.request(method, f"{SIMULATOR_URL}{path}", json=payload) as r:
        r.raise_for_status()
        return await r.json()  # type: ignore[no-any-return]

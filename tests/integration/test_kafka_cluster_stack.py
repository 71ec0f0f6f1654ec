"""A real three-broker Kafka cluster: kill -9 the broker that leads most partitions mid-stream, then bring it back.

A private cluster (``scripts/stack.sh kafka-up`` with ``STACK_KAFKA_BROKERS=3`` on free ports, its own STACK_DIR:
tools/kafka_cluster.py) with topics of replication factor 3 and ``min.insync.replicas=2``; a real Faust worker (its
changelogs replicated 3 times too) against it, with the shared stack's Redis, S3 server and edge and a private
simulator. Upload-complete events go out at a steady pace with the project's producer (acks=all, idempotent); a few
events in, the broker that leads most partitions is killed with SIGKILL, and started again while the stream goes on.

What must hold: every event the producer got an acknowledgement for is answered, exactly once, and done; no more
model calls than photos (plus calls in flight at the kill); afterwards every partition is back to three in-sync
replicas. Runs in the isolated session (scripts/test.sh): its worker group and its broker are its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from models.records import AnalysisResult, JobStatus, UploadCompleted, utcnow
from models.settings import Settings
from streams import kafka_security, topics
from streams.clients import s3_client
from tests import samples
from tests.integration.stack_helpers import StackEnv, require_service
from tools import kafka_cluster
from tools.kafka_admin import partition_counts, position_at_end
from tools.kit import Proc, Simulator, free_port, start_worker

pytestmark = [pytest.mark.stack, pytest.mark.isolated]

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = 6
PACE_S = 0.25  # one upload-complete event every PACE_S
DOWN_S = 15.0  # the killed broker stays down this long while the stream goes on (longer than its 9 s session)
AFTER_S = 8.0  # the stream goes on this long after the broker is back
KEY_PATTERN = r"tests/kafka3-[a-z0-9-]{1,64}\.jpg"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka_cluster.PrivateCluster]:
    env = StackEnv.from_env()
    for name, port in (("Redis", env.redis_port), ("S3 server", env.s3_port), ("CDN edge", env.cdn_port)):
        require_service(name, port)
    stack_dir = tmp_path_factory.mktemp("kafka3")
    started: kafka_cluster.PrivateCluster | None = None
    try:
        started = kafka_cluster.PrivateCluster.start(stack_dir)
        yield started
    finally:
        if started is not None:
            started.stop()
        else:  # a start that failed half-way may have left brokers running
            subprocess.run(["bash", "scripts/stack.sh", "kafka-down"], cwd=ROOT, capture_output=True, timeout=180,
                           env={**os.environ, "STACK_DIR": str(stack_dir), "STACK_KAFKA_BROKERS": "3"})


class Stream:
    """Publishes upload-complete events with the project's producer and collects this group's results."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        kafka = kafka_security.client_kwargs(settings, "api")
        self.producer = AIOKafkaProducer(**kafka_security.producer_kwargs(settings, "api"))
        self.consumer = AIOKafkaConsumer(topics.ANALYSIS_RESULTS, **kafka, group_id=None, auto_offset_reset="latest")
        self.published: dict[str, float] = {}
        self.acked: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.answers: dict[str, list[tuple[float, AnalysisResult]]] = {}
        self._sends: set[asyncio.Task[None]] = set()

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[Stream]:
        stream = cls(settings)
        await stream.producer.start()
        await stream.consumer.start()
        reader: asyncio.Task[None] | None = None
        try:
            await position_at_end(stream.consumer)
            reader = asyncio.create_task(stream._read())
            yield stream
        finally:
            if reader is not None:
                reader.cancel()
            await asyncio.gather(*stream._sends, return_exceptions=True)
            await stream.consumer.stop()
            await stream.producer.stop()

    async def _read(self) -> None:
        while True:
            for records in (await self.consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    job = (record.key or b"").decode()
                    self.answers.setdefault(job, []).append(
                        (time.monotonic(), AnalysisResult.model_validate_json(record.value)))

    def publish(self, key: str | None) -> str:
        """Send one event without waiting for its acknowledgement (the pace goes on while a partition has no leader)."""
        job = str(uuid.uuid4())
        if key is None:  # an invalid event naming its job: answered with a failed result (readiness probe)
            value = json.dumps({"job_id": job, "probe": True}).encode()
        else:
            value = UploadCompleted(job_id=job, bucket=self.settings.s3_bucket_name, key=key,
                                    uploaded_at=utcnow()).to_bytes()
        self.published[job] = time.monotonic()

        async def send() -> None:
            try:
                await self.producer.send_and_wait(topics.UPLOADS_COMPLETED, key=job.encode(), value=value)
                self.acked[job] = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - not acknowledged: the test does not count on this event
                self.failed[job] = repr(exc)

        task = asyncio.create_task(send())
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)
        return job

    async def settle(self, jobs: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (self._sends or not jobs <= self.answers.keys()) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)


async def wait_until_ready(stream: Stream, worker: subprocess.Popen[bytes], log: Path, timeout: float = 150.0) -> None:
    """The worker answers a probe event, and holds every partition of every topic it reads."""
    deadline = time.monotonic() + timeout
    while True:
        assert worker.poll() is None, f"worker exited:\n{log.read_text(errors='replace')[-3000:]}"
        assert time.monotonic() < deadline, f"worker not ready:\n{log.read_text(errors='replace')[-3000:]}"
        probe = stream.publish(None)
        await stream.settle({probe}, 3.0)
        if probe in stream.answers:
            break
    expected = await partition_counts(stream.settings, topics.WORKER_SOURCES)
    url = f"http://127.0.0.1:{stream.settings.worker_web_port}/readyz"
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as r:
                    held = (await r.json())["partitions_held"] if r.status == 200 else {}
            except (aiohttp.ClientError, ValueError, KeyError):
                held = {}
            if all(held.get(t) == list(range(n)) for t, n in expected.items()):
                return
            assert time.monotonic() < deadline, f"worker holds {held}, expected {expected}"
            await asyncio.sleep(0.2)


async def test_killing_the_busiest_broker_loses_no_acknowledged_event(
        cluster: kafka_cluster.PrivateCluster, tmp_path: Path) -> None:
    session = uuid.uuid4().hex[:8]
    sim = Simulator.start("simulator-kafka3", SIM_LATENCY_MS="600", SIM_LATENCY_JITTER_MS="100")
    settings = cluster.settings(
        app_id=f"waste-test-kafka3-{session}", prompt_version=f"kafka3-{session}", worker_web_port=free_port(),
        openai_base_url=f"{sim.url}/v1", vision_backoff_base_seconds=0.05, upload_key_pattern=KEY_PATTERN,
        kafka_auto_offset_reset="earliest")
    assert settings.min_insync_replicas == 2
    log = tmp_path / "worker.log"
    worker: Proc | None = None
    killed: int | None = None
    try:
        keys = []
        async with s3_client(settings) as s3:
            for i in range(PHOTOS):
                key = f"tests/kafka3-{uuid.uuid4()}.jpg"
                await s3.put_object(Bucket=settings.s3_bucket_name, Key=key, Body=samples.photo_bytes(300 + i),
                                    ContentType="image/jpeg")
                keys.append(key)
        # The cluster is new: no group to position at the end of the topics.
        worker = start_worker(settings, "kafka3", new_group=False, for_tests=False, datadir=tmp_path / "faust",
                              log_path=log)
        async with Stream.open(settings) as stream:
            await wait_until_ready(stream, worker.process, log)
            calls_before = (await sim.stats())["ok"]
            jobs: set[str] = set()
            i = 0

            async def pace(seconds: float) -> None:
                nonlocal i
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    jobs.add(stream.publish(keys[i % len(keys)]))
                    i += 1
                    await asyncio.sleep(PACE_S)

            await pace(4.0)  # every photo once, then repeats: the cache and the in-flight table are in use
            killed, counts = await kafka_cluster.busiest_leader(settings)
            in_flight_at_kill = (await sim.stats())["in_flight"]
            cluster.kill(killed)
            kill_at = time.monotonic()
            await pace(DOWN_S)
            back = asyncio.create_task(asyncio.to_thread(cluster.bring_back))
            while not back.done():
                await pace(1.0)
            await back
            await pace(AFTER_S)
            await stream.settle(jobs, 90.0)
            await asyncio.sleep(2.0)  # a duplicate would arrive right after its first
            calls = (await sim.stats())["ok"] - calls_before
            in_sync_s = await kafka_cluster.wait_in_sync(settings)
            replication = await kafka_cluster.replicas(settings, settings.app_id)
        acked = {j for j in jobs if j in stream.acked}
        missing = acked - stream.answers.keys()
        twice = {j: len(stream.answers[j]) for j in acked & stream.answers.keys() if len(stream.answers[j]) > 1}
        not_done = {j: r.status for j in acked & stream.answers.keys() for _, r in stream.answers[j][:1]
                    if r.status is not JobStatus.DONE}
        waits = [stream.answers[j][0][0] - max(stream.published[j], kill_at) for j in acked & stream.answers.keys()
                 if stream.answers[j][0][0] > kill_at]
        print(f"kafka3: killed broker {killed} (leader of {counts[killed]} of {sum(counts.values())} partitions), "
              f"jobs {len(jobs)} (acknowledged {len(acked)}, send errors {len(stream.failed)}), worst wait after "
              f"the kill {max(waits, default=0):.1f}s, model calls {calls} for {PHOTOS} photos "
              f"({in_flight_at_kill} in flight at the kill), replicas in sync {in_sync_s:.1f}s after the return")
    finally:
        if worker is not None:
            worker.stop(30)
        sim.stop()

    assert counts[killed] == max(counts.values())
    assert acked, "no event acknowledged"
    assert not missing, f"{len(missing)} acknowledged events never answered, e.g. {sorted(missing)[:3]}\n" \
                        f"{log.read_text(errors='replace')[-3000:]}"
    assert not twice, f"answered more than once: {twice}"
    assert not not_done, f"not done: {not_done}"
    assert PHOTOS <= calls <= PHOTOS + in_flight_at_kill, (calls, in_flight_at_kill)
    # The worker's changelogs were created with the cluster's replication too.
    assert replication and all(n == 3 for n, _ in replication.values()), replication

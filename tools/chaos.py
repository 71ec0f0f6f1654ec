"""The fault suite (``make chaos``): one fault at a time during a steady stream of uploads with repeats.

    python -m tools.chaos                      # every fault; writes chaos/latest.json and the table in CHAOS.md
    python -m tools.chaos --only redis_restart worker_kill --photos 6
    python -m tools.chaos --only redis_master_failover   # one fault: its row replaces that row of the last report
    python -m tools.chaos --stack single       # the faults of no particular stack on one broker and one Redis

Everything runs on private stacks that this command starts and stops (``scripts/stack.sh`` with its own
``STACK_DIR`` and ports, so the shared stack on the default ports is never touched), with the S3 server, the CDN edge,
the simulator and two workers in one consumer group. By default (``--stack cluster``) the faults run on three Kafka
brokers (``STACK_KAFKA_BROKERS=3``: replication factor 3, ``min.insync.replicas=2``, the workers' changelogs too) and
a Redis Cluster of three masters and three replicas (``STACK_REDIS_CLUSTER=1``, AOF); the faults of the only broker
and of the single Redis (``NEEDS``) then run after them on the same stack directory restarted with one broker and one
Redis (AOF). Each stack starts with a baseline phase. Each
phase sends new photos (each as it is three times, re-encoded at quality 70 and resized to 80%: none byte-identical
but the repeats), then one more re-encode of each photo of the previous phase (a near-duplicate of an answer cached
before the fault: it should cost nothing), one upload-complete event every ``--pace`` seconds; it injects its fault
a few seconds in, ends it, and waits for every job's result. Per phase it records:

- ``unanswered``: jobs without a terminal result after ``--settle`` seconds (goal 0);
- ``duplicates``: results beyond the first per job on the results topic (goal 0; the API keeps the first);
- ``paid_calls`` against ``photos`` (the new ones; ``earlier_photos`` should be free): answers the model gave
  (the simulator's ``ok``), and every request;
- ``fault_duration_s``: from the fault's start until its end or the stream's last event, whichever is later;
- ``healthy_after_s``: from the fault's start until the last job that waited longer than ``HEALTHY_LATENCY_S``
  had its answer (0 when no job waited that long; -1 when some job never got one); ``worst_wait_s``: the
  slowest job, counted from the fault's start for jobs published before it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from models.records import AnalysisResult, JobStatus, utcnow
from models.settings import Settings
from tools import kafka_cluster, redis_cluster
from tools import photos as photo_tools
from tools.kafka_admin import start_group_at_end_blocking
from tools.kit import Proc, ResultWatcher, Simulator, free_port, put_objects, start_worker, wait_until_partitions_held

ROOT = Path(__file__).resolve().parents[1]
HEALTHY_LATENCY_S = 5.0
FAULT_AT_S = 6.0
PORTS = {"KAFKA_PORT": 19092, "KAFKA_CONTROLLER_PORT": 19093, "REDIS_PORT": 16379, "S3_PORT": 17070,
         "CDN_PORT": 16081, "SIMULATOR_PORT": 18090, "STORAGE_EVENTS_PORT": 17071, "EDGE_EXPORTER_PORT": 19131,
         "REDIS_CLUSTER_PORT": 17100}
# The three-broker stack's nodes: client ports KAFKA_PORT, +2, +4 (19092, 19094, 19096), controller ports
# KAFKA_CONTROLLER_PORT, +2, +4. The Redis Cluster's six nodes: REDIS_CLUSTER_PORT..+5 (17100-17105, their cluster
# bus +10000: clear of the shared stack's 7000-7005 and 17000-17005). --port-offset (CHAOS_PORT_OFFSET) moves every
# port, when these are taken.
CLUSTER_STEPS = (0, 2, 4)
REDIS_CLUSTER_NODES = 6
REDIS_MASTER_DOWN_S = 16.0  # as long as redis_outage keeps the single Redis down
KEY_PATTERN = r"chaos/[a-z0-9-]{1,64}\.jpg"


# --- the private stack ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackKind:
    """What a group of phases runs on."""

    name: str
    brokers: int
    redis_cluster: bool

    @property
    def label(self) -> str:
        return (f"{self.brokers} broker{'s' if self.brokers > 1 else ''}, "
                f"{'Redis Cluster' if self.redis_cluster else 'one Redis'}")


CLUSTER = StackKind("cluster", brokers=3, redis_cluster=True)
SINGLE = StackKind("single", brokers=1, redis_cluster=False)
KINDS = {k.name: k for k in (CLUSTER, SINGLE)}


class Stack:
    def __init__(self, stack_dir: Path, brokers: int = 1, port_offset: int = 0, redis_cluster: bool = False) -> None:
        self.dir = stack_dir
        self.brokers = brokers
        self.redis_cluster = redis_cluster
        self.ports = {name: port + port_offset for name, port in PORTS.items()}
        self.kafka_ports = [self.ports["KAFKA_PORT"] + step for step in CLUSTER_STEPS[:brokers]]
        cluster = {"KAFKA_PORTS": ",".join(map(str, self.kafka_ports)),
                   "KAFKA_CONTROLLER_PORTS": ",".join(str(self.ports["KAFKA_CONTROLLER_PORT"] + step)
                                                      for step in CLUSTER_STEPS[:brokers])}
        self.env = {**os.environ, **{k: str(v) for k, v in self.ports.items()}, "STACK_DIR": str(stack_dir),
                    "STACK_STORAGE_EVENTS": "0", "APP_ENV": "development", "STACK_KAFKA_BROKERS": str(brokers),
                    "STACK_REDIS_CLUSTER": "1" if redis_cluster else "0", **(cluster if brokers > 1 else {})}

    @property
    def kind(self) -> StackKind:
        return StackKind("cluster" if self.redis_cluster else "single", self.brokers, self.redis_cluster)

    @property
    def redis_cluster_ports(self) -> list[int]:
        first = self.ports["REDIS_CLUSTER_PORT"]
        return list(range(first, first + REDIS_CLUSTER_NODES))

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.kafka_ports)

    def prepare(self) -> None:
        """Reuse the shared stack's downloads (Kafka's jars, the S3 server's binary) instead of fetching them."""
        shared = ROOT / ".stack"
        for part in ("kafka/lib", "bin"):
            if not (self.dir / part).exists() and (shared / part).exists():
                (self.dir / part).parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(shared / part, self.dir / part, symlinks=True)
        if not (self.dir / "kafka/lib").exists():
            self.run("install")

    def run(self, command: str) -> None:
        done = subprocess.run(["bash", "scripts/stack.sh", command], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"stack.sh {command} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")

    def pid(self, name: str) -> int:
        return int((self.dir / "run" / f"{name}.pid").read_text().strip())

    def signal(self, name: str, sig: int) -> None:
        os.kill(self.pid(name), sig)

    def wait_gone(self, name: str, timeout: float = 30.0) -> None:
        pid, deadline = self.pid(name), time.monotonic() + timeout
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            # A killed child of no one of ours: gone once its /proc entry is (it is reaped by init).
            time.sleep(0.1)


def settings_for(stack: Stack, run: str) -> Settings:
    p = stack.ports
    return Settings(  # type: ignore[call-arg]
        _env_file=None, app_env="development", app_id=f"waste-chaos-{run}", prompt_version=f"chaos-{run}",
        kafka_bootstrap_servers=stack.bootstrap, topic_replication_factor=min(stack.brokers, 3),
        redis_url=(f"redis+cluster://127.0.0.1:{p['REDIS_CLUSTER_PORT']}/0" if stack.redis_cluster
                   else f"redis://127.0.0.1:{p['REDIS_PORT']}/0"),
        s3_endpoint_url=f"http://127.0.0.1:{p['S3_PORT']}",
        cdn_base_url=f"http://127.0.0.1:{p['CDN_PORT']}/waste-images",
        openai_base_url=f"http://127.0.0.1:{p['SIMULATOR_PORT']}/v1", stack_dir=str(stack.dir),
        upload_key_pattern=KEY_PATTERN, kafka_auto_offset_reset="earliest", worker_web_port=free_port(),
        vision_backoff_base_seconds=0.2,
    )


@dataclass
class Worker:
    name: str
    settings: Settings
    stack: Stack
    proc: Proc | None = None

    def start(self) -> None:
        """Join the group where it is (the suite positions it at the end once); the log goes on after a restart."""
        run = f"{self.name}-{self.settings.app_id}"
        self.proc = start_worker(self.settings, self.name, new_group=False, for_tests=False,
                                 datadir=self.stack.dir / "faust" / run,
                                 log_path=self.stack.dir / "logs" / f"{run}.log")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def kill(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.process.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.process.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.process.send_signal(signal.SIGCONT)
            self.proc.stop(30)


# --- the stream ------------------------------------------------------------------------------------------------


def encode(jpeg: bytes, quality: int, scale: float) -> bytes:
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    image = image.resize((int(image.width * scale), int(image.height * scale)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def variants(jpeg: bytes) -> list[bytes]:
    return [jpeg, jpeg, jpeg, encode(jpeg, 70, 1.0), encode(jpeg, 90, 0.8)]


def late_copy(jpeg: bytes) -> bytes:
    """Another re-encode of a photo of the previous phase: a new pHash near the cached one, so only the near-duplicate
    index in Redis (or its re-warm from the tables) saves the call."""
    return encode(jpeg, 60, 0.7)


@dataclass
class Phase:
    name: str
    fault: str
    photos: int = 0
    earlier_photos: int = 0  # re-encodes of the previous phase's photos, sent after the fault: should cost nothing
    uploads: int = 0
    unanswered: int = 0
    duplicates: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    paid_calls: int = 0
    model_requests: int = 0
    extra_paid_calls: int = 0
    healthy_after_s: float = 0.0
    worst_wait_s: float = 0.0
    fault_duration_s: float = 0.0
    brokers: int = 1
    stack: str = ""  # StackKind.label of the stack it ran on
    finished_at: str = ""
    notes: str = ""


class Stream(ResultWatcher):
    """This suite's jobs: when each was published, and every result of each with when it arrived."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.published: dict[str, float] = {}
        self.answers: dict[str, list[tuple[float, AnalysisResult]]] = {}

    def handle(self, job_id: str, value: bytes, recv: float) -> None:
        if job_id in self.published:
            self.answers.setdefault(job_id, []).append((time.monotonic(), AnalysisResult.model_validate_json(value)))

    async def publish_until_taken(self, key: str) -> None:
        job = str(uuid.uuid4())
        value = self.event(job, key)
        self.published[job] = time.monotonic()
        # The broker may be the fault: keep trying (a client would), the job counts from its first attempt.
        while True:
            try:
                await self.publish_raw(job.encode(), value)
                return
            except Exception:  # noqa: BLE001 - any broker error: retry until the phase's deadline
                await asyncio.sleep(0.5)


# --- the faults ------------------------------------------------------------------------------------------------

Fault = Callable[["Suite"], Awaitable[str]]


class Suite:
    def __init__(self, stack: Stack, settings: Settings, pace: float, photos: int, settle: float) -> None:
        self.stack = stack
        self.settings = settings
        self.pace = pace
        self.photos = photos
        self.settle = settle
        self.workers = [Worker("chaos-a", settings, stack),
                        Worker("chaos-b", settings.model_copy(update={"worker_web_port": free_port()}), stack)]
        self.stream = Stream(settings)
        self.sim = Simulator.of(settings.openai_base_url)
        self.next_photo = 0
        self.previous_photos: list[bytes] = []
        self.all_photos = photo_tools.sample_photos()
        self.baseline_extra: int | None = None

    async def sim_stats(self) -> dict[str, Any]:
        return await self.sim.stats()

    async def run_phase(self, name: str, fault: Fault | None) -> Phase:
        photos = [photo_tools.distinct_photo(self.all_photos, self.next_photo + i) for i in range(self.photos)]
        self.next_photo += self.photos
        blobs = [b for p in photos for b in variants(p)]
        random.Random(name).shuffle(blobs)
        # Near-duplicates of the photos paid for in the previous phase, at the end (after the fault began).
        earlier = [late_copy(p) for p in self.previous_photos]
        self.previous_photos = photos
        keys = [f"chaos/{uuid.uuid4()}.jpg" for _ in blobs + earlier]
        await put_objects(self.settings, [(k, b, "image/jpeg") for k, b in zip(keys, blobs + earlier, strict=True)])
        before = await self.sim_stats()
        jobs_before = set(self.stream.published)
        started = time.monotonic()
        fault_task: asyncio.Task[str] | None = None
        fault_at = started + FAULT_AT_S
        for i, key in enumerate(keys):
            if fault is not None and fault_task is None and time.monotonic() >= fault_at:
                fault_at = time.monotonic()
                fault_task = asyncio.ensure_future(fault(self))
            await self.stream.publish_until_taken(key)
            await asyncio.sleep(max(0.0, started + (i + 1) * self.pace - time.monotonic()))
        if fault is not None and fault_task is None:
            fault_at = time.monotonic()
            fault_task = asyncio.ensure_future(fault(self))
        try:
            notes = await fault_task if fault_task is not None else ""
        except Exception as exc:  # noqa: BLE001 - a fault that went wrong: the stream's figures still count
            notes = f"the fault went wrong: {exc!r}"
            print(f"[chaos] {name}: {notes}", flush=True)
        fault_end = time.monotonic()
        jobs = set(self.stream.published) - jobs_before
        deadline = time.monotonic() + self.settle
        while not jobs <= self.stream.answers.keys() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.sleep(3.0)  # a duplicate arrives right after its first, if at all
        after = await self.sim_stats()
        phase = Phase(name=name, fault=name if fault else "none", photos=len(photos), earlier_photos=len(earlier),
                      uploads=len(jobs), notes=notes, brokers=self.stack.brokers, stack=self.stack.kind.label,
                      finished_at=utcnow().isoformat(timespec="seconds"))
        phase.fault_duration_s = round(fault_end - fault_at, 1) if fault else 0.0
        phase.unanswered = len(jobs - self.stream.answers.keys())
        phase.duplicates = sum(len(self.stream.answers[j]) - 1 for j in jobs & self.stream.answers.keys())
        for j in jobs & self.stream.answers.keys():
            result = self.stream.answers[j][0][1]
            if result.status is JobStatus.FAILED and result.error is not None:
                phase.failed[result.error.code.value] = phase.failed.get(result.error.code.value, 0) + 1
        phase.paid_calls = after["ok"] - before["ok"]
        phase.model_requests = after["calls"] - before["calls"]
        phase.extra_paid_calls = phase.paid_calls - phase.photos
        origin = fault_at if fault else started
        waits = {j: self.stream.answers[j][0][0] - max(self.stream.published[j], origin)
                 for j in jobs & self.stream.answers.keys()}
        phase.worst_wait_s = round(max(waits.values(), default=0.0), 1)
        # Healthy again once the last job that waited longer than HEALTHY_LATENCY_S has its answer.
        slow = [self.stream.answers[j][0][0] - origin for j in waits
                if self.stream.answers[j][0][0] - self.stream.published[j] > HEALTHY_LATENCY_S]
        phase.healthy_after_s = round(max(slow, default=0.0), 1) if phase.unanswered == 0 else -1.0
        return phase

    async def restore(self) -> None:
        """Everything back up between phases: services, both workers, a well-behaved model."""
        await asyncio.to_thread(self.stack.run, "up")
        await self.sim.configure(rates={"429": 0, "500": 0, "hang": 0}, latency_ms=800, jitter_ms=100)
        for w in self.workers:
            if not w.alive():
                w.start()
        await wait_until_partitions_held(self.settings, [w.proc for w in self.workers if w.proc is not None])


async def worker_kill(suite: Suite) -> str:
    victim = suite.workers[1]
    victim.kill(signal.SIGKILL)
    await asyncio.sleep(7.0)
    victim.start()
    return "kill -9 of one of two workers, restarted 7 s later"


async def worker_pause(suite: Suite) -> str:
    victim = suite.workers[1]
    pause = suite.settings.kafka_session_timeout_seconds + 5
    victim.kill(signal.SIGSTOP)
    await asyncio.sleep(pause)
    victim.kill(signal.SIGCONT)
    return f"SIGSTOP of one of two workers for {pause:.0f} s (session timeout + 5 s), then SIGCONT"


async def redis_restart(suite: Suite) -> str:
    suite.stack.signal("redis", signal.SIGKILL)
    await asyncio.to_thread(suite.stack.wait_gone, "redis")
    await asyncio.to_thread(suite.stack.run, "up")  # redis-server again, from its append-only file
    return "kill -9 of Redis, started again at once (AOF, appendfsync everysec)"


async def redis_outage(suite: Suite) -> str:
    await _stop_for(suite, "redis", 16, signal.SIGKILL)
    return "kill -9 of Redis, back 16 s later (AOF)"


async def redis_wipe(suite: Suite) -> str:
    suite.stack.signal("redis", signal.SIGKILL)
    await asyncio.to_thread(suite.stack.wait_gone, "redis")
    shutil.rmtree(suite.stack.dir / "redis", ignore_errors=True)  # as a Redis without persistence comes back
    await asyncio.to_thread(suite.stack.run, "up")
    return "kill -9 of Redis, its data deleted, started again at once (empty: the re-warm's full pass)"


async def redis_master_failover(suite: Suite) -> str:
    """kill -9 the Redis Cluster master holding most keys, wait for its replica's promotion, bring it back
    ``REDIS_MASTER_DOWN_S`` after the kill (it rejoins as the new master's replica)."""
    ports = suite.stack.redis_cluster_ports
    keys = await redis_cluster.keys_per_master(ports)
    port = redis_cluster.busiest_master(keys)
    nodes = await redis_cluster.cluster_nodes(ports)
    victim = next(n for n in nodes if n.port == port)
    await asyncio.to_thread(redis_cluster.kill_node, suite.stack.dir, port)
    killed = time.monotonic()
    replicas = {n.id for n in nodes if n.master_id == victim.id}
    replica, promoted_after = await redis_cluster.wait_promoted(ports, victim, replicas)
    await asyncio.sleep(max(0.0, killed + REDIS_MASTER_DOWN_S - time.monotonic()))
    await asyncio.to_thread(suite.stack.run, "redis-cluster-up")  # starts the missing node only
    rejoined_after = await redis_cluster.wait_replica_of(port, replica)
    return (f"kill -9 of Redis master {port}, holding {keys[port]} of {sum(keys.values())} keys; its replica "
            f"{replica.port} promoted {promoted_after:.1f} s later; back {REDIS_MASTER_DOWN_S:.0f} s after the kill, "
            f"a replica of {replica.port} in sync {rejoined_after:.1f} s after its start")


async def redis_master_restart(suite: Suite) -> str:
    """kill -9 the Redis Cluster master holding most keys and start it again at once, from its AOF (within
    cluster-node-timeout no replica takes over)."""
    ports = suite.stack.redis_cluster_ports
    keys = await redis_cluster.keys_per_master(ports)
    port = redis_cluster.busiest_master(keys)
    await asyncio.to_thread(redis_cluster.kill_node, suite.stack.dir, port)
    killed = time.monotonic()
    await asyncio.to_thread(suite.stack.run, "redis-cluster-up")  # starts the missing node only
    back = time.monotonic() - killed
    node = next(n for n in await redis_cluster.cluster_nodes(ports) if n.port == port)
    role = "still the master" if node.master else "a replica now (its replica took over)"
    return (f"kill -9 of Redis master {port}, holding {keys[port]} of {sum(keys.values())} keys, started again at "
            f"once (AOF, appendfsync everysec): cluster ok again {back:.1f} s after the kill, {role}")


async def redis_cluster_wipe(suite: Suite) -> str:
    """Every node of the Redis Cluster killed, its data deleted, started again: the cluster comes back empty, as one
    without persistence would (the re-warm's full pass, on the cluster)."""
    ports = suite.stack.redis_cluster_ports
    keys = sum((await redis_cluster.keys_per_master(ports)).values())
    for port in ports:
        await asyncio.to_thread(redis_cluster.kill_node, suite.stack.dir, port)
        redis_cluster.wipe_data(suite.stack.dir, port)
    killed = time.monotonic()
    await asyncio.to_thread(suite.stack.run, "redis-cluster-up")
    return (f"kill -9 of all 6 nodes of the Redis Cluster ({keys} keys), their data deleted, started again at once: "
            f"cluster ok, empty, {time.monotonic() - killed:.1f} s after the kill")


async def redis_cluster_outage(suite: Suite) -> str:
    """Every node of the Redis Cluster killed, started again ``REDIS_MASTER_DOWN_S`` later from its AOF: the
    cluster's counterpart of redis_outage (nothing answers for 16 s; the data comes back)."""
    ports = suite.stack.redis_cluster_ports
    keys = sum((await redis_cluster.keys_per_master(ports)).values())
    for port in ports:
        await asyncio.to_thread(redis_cluster.kill_node, suite.stack.dir, port)
    killed = time.monotonic()
    await asyncio.sleep(REDIS_MASTER_DOWN_S)
    await asyncio.to_thread(suite.stack.run, "redis-cluster-up")
    back = time.monotonic() - killed
    keys_after = sum((await redis_cluster.keys_per_master(ports)).values())
    return (f"kill -9 of all 6 nodes of the Redis Cluster ({keys} keys), started again {REDIS_MASTER_DOWN_S:.0f} s "
            f"later from their AOF: cluster ok {back:.1f} s after the kill, {keys_after} keys")


async def _stop_for(suite: Suite, name: str, seconds: float, sig: int = signal.SIGTERM) -> None:
    """Stop a service of the private stack with ``sig``, start it again ``seconds`` later."""
    suite.stack.signal(name, sig)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(suite.stack.run, "up")


async def edge_stop(suite: Suite) -> str:
    await _stop_for(suite, "edge", 30)
    return "CDN edge (varnish) stopped for 30 s"


async def s3_stop(suite: Suite) -> str:
    await _stop_for(suite, "s3", 30)
    return "S3 server stopped for 30 s (objects uploaded before the phase)"


async def broker_kill(suite: Suite) -> str:
    await _stop_for(suite, "kafka", 30, signal.SIGKILL)
    return "kill -9 of the (only) Kafka broker, back 30 s later"


async def broker_leader_kill(suite: Suite) -> str:
    """kill -9 the broker that leads most partitions of the three-broker cluster, start it again 30 s later."""
    node, counts = await kafka_cluster.busiest_leader(suite.settings)
    await asyncio.to_thread(kafka_cluster.kill_node, suite.stack.dir, node)
    await asyncio.sleep(30)
    await asyncio.to_thread(suite.stack.run, "up")  # starts the missing node only
    in_sync = await kafka_cluster.wait_in_sync(suite.settings)
    return (f"kill -9 of broker {node} of 3, the leader of {counts[node]} of {sum(counts.values())} partitions, "
            f"back 30 s later; every replica in sync again {in_sync:.1f} s after it was up")


async def model_storm(suite: Suite) -> str:
    # The next two calls fail (a scripted queue: most photos of a phase are paid for in its first seconds, and a
    # rate alone may miss the few calls left; one run's storm hit none), then 30% 429 and 10% 500 for 20 s. Three
    # scripted failures in a row mostly land on one call, leaving its last of VISION_MAX_ATTEMPTS (4) a 60% chance.
    await suite.sim.configure(script=["429", "500"], rates={"429": 0.3, "500": 0.1}, retry_after_s=1)
    await asyncio.sleep(20)
    await suite.sim.configure(rates={"429": 0, "500": 0}, script=[])
    return "model storm for 20 s: the next 2 calls 429 and 500, then 30% 429 (Retry-After 1 s) and 10% 500"


async def model_hang(suite: Suite) -> str:
    hang = suite.settings.vision_timeout_seconds + 10
    # The next three calls hang (a scripted queue: a rate could miss the few calls a phase makes), then 20% more.
    await suite.sim.configure(script=["hang", "hang", "hang"], rates={"hang": 0.2}, hang_s=hang)
    await asyncio.sleep(20)
    await suite.sim.configure(rates={"hang": 0}, script=[])
    return (f"the next 3 model calls, then 20% for 20 s, hang {hang:.0f} s (longer than the call timeout and the "
            "session timeout)")


FAULTS: dict[str, Fault | None] = {
    "baseline": None, "worker_kill": worker_kill, "worker_pause": worker_pause,
    "redis_master_failover": redis_master_failover, "redis_master_restart": redis_master_restart,
    "redis_cluster_wipe": redis_cluster_wipe, "redis_cluster_outage": redis_cluster_outage,
    "edge_stop": edge_stop, "s3_stop": s3_stop,
    "model_storm": model_storm, "model_hang": model_hang, "broker_leader_kill": broker_leader_kill,
    "redis_restart": redis_restart, "redis_outage": redis_outage, "redis_wipe": redis_wipe, "broker_kill": broker_kill,
}
# Faults of one component that only one kind of stack has: a cluster's broker or master, the only broker or the
# single Redis. The others run on the stack --stack names; baseline runs first on every stack a run uses.
NEEDS = {"broker_leader_kill": CLUSTER, "redis_master_failover": CLUSTER, "redis_master_restart": CLUSTER,
         "redis_cluster_wipe": CLUSTER, "redis_cluster_outage": CLUSTER,
         "broker_kill": SINGLE, "redis_restart": SINGLE, "redis_outage": SINGLE, "redis_wipe": SINGLE}


def plan(selected: list[str], default: StackKind) -> list[tuple[StackKind, list[str]]]:
    """The groups of phases to run, each on its own stack: ``default``'s first, phases in ``FAULTS`` order."""
    groups: dict[StackKind, list[str]] = {}
    for name in FAULTS:
        if name in selected and name != "baseline":
            groups.setdefault(NEEDS.get(name, default), []).append(name)
    if "baseline" in selected:
        for names in groups.values():
            names.insert(0, "baseline")
        groups.setdefault(default, ["baseline"])
    return sorted(groups.items(), key=lambda group: group[0] != default)


# --- report ----------------------------------------------------------------------------------------------------


def stack_of(p: dict[str, Any]) -> str:
    """The stack a row ran on (rows from before the Redis Cluster runs: their broker count, one Redis)."""
    brokers = p.get("brokers", 1)
    return str(p.get("stack") or f"{brokers} broker{'s' if brokers > 1 else ''}, one Redis")


def table(phases: list[dict[str, Any]]) -> str:
    head = ("| fault | stack | jobs | unanswered | duplicates | paid calls / photos | model requests | failed | "
            "healthy after | worst wait |\n|---|---|---|---|---|---|---|---|---|---|\n")
    def earlier(p: dict[str, Any]) -> str:
        return f" (+{p['earlier_photos']} earlier, free)" if p.get("earlier_photos") else ""

    def failed(p: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in p["failed"].items()) or "0"

    rows = [f"| {p['name']} | {stack_of(p)} | {p['uploads']} | {p['unanswered']} | {p['duplicates']} | "
            f"{p['paid_calls']} / {p['photos']}{earlier(p)} | {p['model_requests']} | {failed(p)} | "
            f"{p['healthy_after_s']} s | {p['worst_wait_s']} s |" for p in phases]
    return head + "\n".join(rows) + "\n"


def write_report(report: dict[str, Any]) -> None:
    out = ROOT / "chaos"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    doc = ROOT / "CHAOS.md"
    text = doc.read_text() if doc.exists() else ""
    start, end = "<!-- chaos:table -->", "<!-- /chaos:table -->"
    reruns: dict[str, list[str]] = {}
    for name, at in report.get("rerun", {}).items():
        reruns.setdefault(at, []).append(name)
    rerun = "".join(f"; re-run {at}: {', '.join(names)}" for at, names in reruns.items())
    block = f"{start}\nRun {report['finished_at']} ({report['machine']}){rerun}:\n\n{table(report['phases'])}{end}"
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text + "\n" + block + "\n"
    doc.write_text(text)


async def run_group(args: argparse.Namespace, kind: StackKind, names: list[str],
                    last: bool) -> tuple[Settings, list[dict[str, Any]]]:
    """``names`` on the private stack of ``kind`` (started here, stopped after unless ``last`` and
    ``--keep-stack``)."""
    stack = Stack(Path(args.stack_dir), kind.brokers, args.port_offset, kind.redis_cluster)
    stack.prepare()
    await asyncio.to_thread(stack.run, "up")
    run = uuid.uuid4().hex[:8]
    settings = settings_for(stack, run)
    start_group_at_end_blocking(settings)
    suite = Suite(stack, settings, args.pace, args.photos, args.settle)
    phases: list[dict[str, Any]] = []
    try:
        await suite.restore()
        async with suite.stream:
            for name in names:
                print(f"[chaos] {name} ({kind.label}) ...", flush=True)
                phase = await suite.run_phase(name, FAULTS[name])
                print(f"[chaos] {name}: {json.dumps(asdict(phase))}", flush=True)
                phases.append(asdict(phase))
                await suite.restore()
    finally:
        for w in suite.workers:
            w.stop()
        if not (args.keep_stack and last):
            await asyncio.to_thread(stack.run, "down")
    return settings, phases


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    groups = plan(args.only or list(FAULTS), KINDS[args.stack])
    phases: list[dict[str, Any]] = []
    settings: Settings | None = None
    for i, (kind, names) in enumerate(groups):
        settings, done = await run_group(args, kind, names, last=i == len(groups) - 1)
        phases += done
    assert settings is not None
    report = {
        "finished_at": utcnow().isoformat(timespec="seconds"), "machine": f"{os.cpu_count()} cores",
        "setup": {"workers": 2, "stack": KINDS[args.stack].label,
                  "stacks": {kind.label: names for kind, names in groups},
                  "redis": "AOF everysec; a cluster of 3 masters + 3 replicas, cluster-node-timeout 3 s",
                  "kafka": "3 brokers: replication factor 3, min.insync.replicas 2", "pace_s": args.pace,
                  "uploads_per_photo": 5, "session_timeout_s": settings.kafka_session_timeout_seconds,
                  "healthy_latency_s": HEALTHY_LATENCY_S, "fault_at_s": FAULT_AT_S},
        "phases": phases,
    }
    report["goals"] = goals(phases)
    return report


def goals(phases: list[dict[str, Any]]) -> dict[str, bool]:
    """Each Redis fault against the baseline of the stack it ran on."""
    bases = {stack_of(p): p for p in phases if p["name"] == "baseline"}

    def extra(p: dict[str, Any]) -> int:
        return int(p["paid_calls"] - p["photos"])

    return {
        "unanswered": all(p["unanswered"] == 0 for p in phases),
        "duplicates": all(p["duplicates"] == 0 for p in phases),
        "worker_kill_within_20s": all(p["healthy_after_s"] <= 20 for p in phases
                                      if p["name"] in ("worker_kill",)),
        "redis_restart_at_most_5_more_calls": all(
            extra(p) <= (extra(bases[stack_of(p)]) if stack_of(p) in bases else 0) + 5
            for p in phases if p["name"].startswith("redis_")),
    }


def merge_into_last(report: dict[str, Any], path: Path) -> dict[str, Any]:
    """A run of some phases (``--only``): its rows replace the rows of the same phases on the same stacks in the last
    report, the other rows stay (each row keeps its own ``finished_at``)."""
    try:
        last = json.loads(path.read_text())
    except (OSError, ValueError):
        return report
    fresh = {row_key(p): p for p in report["phases"]}
    rerun = {**last.get("rerun", {}), **{f"{name} ({stack})": report["finished_at"] for name, stack in fresh}}
    phases = [fresh.pop(row_key(p), p) for p in last.get("phases", [])] + list(fresh.values())
    # finished_at stays the last whole run's; "rerun" says which rows are newer, and when they ran.
    return {**last, "rerun": rerun, "setup": {**last.get("setup", {}), **report["setup"]}, "phases": phases,
            "goals": goals(phases)}


def row_key(p: dict[str, Any]) -> tuple[str, str]:
    """A row of the report: a fault on a stack (baseline runs on each)."""
    return p["name"], stack_of(p)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=list(FAULTS), help="these phases only (baseline first)")
    parser.add_argument("--stack", choices=list(KINDS), default=os.environ.get("CHAOS_STACK", CLUSTER.name),
                        help="where the faults of no particular stack run: cluster (3 Kafka brokers + a Redis "
                             "Cluster of 3 masters and 3 replicas, the default) or single (1 broker + one Redis); "
                             "the faults of the only broker / the single Redis run on a single stack, those of a "
                             "cluster's broker / master on the cluster, whichever this says")
    parser.add_argument("--photos", type=int, default=8, help="distinct photos per phase (5 uploads each)")
    parser.add_argument("--pace", type=float, default=1.0, help="seconds between upload-complete events")
    parser.add_argument("--settle", type=float, default=150.0, help="seconds to wait for the last results")
    parser.add_argument("--stack-dir", default=os.environ.get("CHAOS_STACK_DIR", f"/tmp/waste-chaos-{os.getuid()}"))
    parser.add_argument("--port-offset", type=int, default=int(os.environ.get("CHAOS_PORT_OFFSET", "0")),
                        help="add this to every port of the private stack (19092, 16379, ...) when they are taken")
    parser.add_argument("--keep-stack", action="store_true", help="leave the private stack running")
    parser.add_argument("--no-write", action="store_true", help="print the report, do not write chaos/ and CHAOS.md")
    args = parser.parse_args(argv)
    report = asyncio.run(main_async(args))
    print(table(report["phases"]))
    print(json.dumps(report["goals"]))
    if args.only:
        report = merge_into_last(report, ROOT / "chaos" / "latest.json")
    if not args.no_write:
        write_report(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

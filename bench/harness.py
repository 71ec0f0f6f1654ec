"""Drive the real stack from the benchmarks: worker and API processes, object pool, publisher, result stream.

Self-contained on purpose (the benchmarks never import from ``tests/``). Everything talks to 127.0.0.1 only,
and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from models.records import UploadCompleted, utcnow
from models.settings import Settings
from streams import kafka_security, topics
from streams.clients import s3_client
from tools.kafka_admin import position_at_end, start_group_at_end_blocking
from tools.processes import free_port, settings_env, stop_process

ROOT = Path(__file__).resolve().parents[1]
STACK_DIR = Path(os.environ.get("STACK_DIR", ROOT / ".stack"))
if not STACK_DIR.is_absolute():
    STACK_DIR = ROOT / STACK_DIR
BENCH_CACHE = Path(__file__).resolve().parent / ".cache"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- processes ------------------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    cleanup: list[Path] = field(default_factory=list)
    web_port: int | None = None  # a worker's /metrics

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        stop_process(self.process, timeout)
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _spawn(name: str, argv: list[str], settings: Settings, tag: str) -> subprocess.Popen[bytes]:
    log_dir = STACK_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    log_path = log_dir / f"bench-{name}-{tag}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return process


def start_worker(settings: Settings, index: int = 0) -> Proc:
    """``faust -A streams.app worker``, its table data in bench/.cache (removed on stop).

    Workers ``index`` 1, 2, ... join the same group as worker 0 (one process per core, as Faust deployments
    scale); each has its own data folder and web port. Only worker 0 positions a new group at the end.
    """
    settings = settings.model_copy(update={"kafka_auto_offset_reset": "earliest"})
    if index == 0:
        start_group_at_end_blocking(settings)  # a new group: skip earlier runs' events, never its own
    else:
        settings = settings.model_copy(update={"worker_web_port": free_port()})
    name = "worker" if index == 0 else f"worker-{index + 1}"
    tag = f"{settings.app_id}-{index}" if index else settings.app_id
    datadir = BENCH_CACHE / "faust" / tag
    datadir.parent.mkdir(parents=True, exist_ok=True)
    faust_bin = Path(sys.executable).with_name("faust")
    argv = [str(faust_bin), "--datadir", str(datadir), "-A", "streams.app", "worker", "-l", "info"]
    process = _spawn("worker", argv, settings, tag)
    return Proc(name, process, STACK_DIR / "logs" / f"bench-worker-{tag}.log", [datadir], settings.worker_web_port)


def start_api(settings: Settings) -> Proc:
    process = _spawn("api", [sys.executable, "-m", "api"], settings, settings.app_id)
    return Proc("api", process, STACK_DIR / "logs" / f"bench-api-{settings.app_id}.log")


async def wait_http_ok(url: str, proc: Proc, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if not proc.alive():
                return False
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return True
            await asyncio.sleep(0.25)
    return False


# --- simulator ------------------------------------------------------------------------------------------------


class Simulator:
    """The vision-model simulator the bench's worker talks to.

    The bench starts a private instance (``python -m simulator`` on a free port) instead of using the stack's
    shared one: its latency changes cannot slow down anyone else's tests, and its call count (what a real
    model would bill) counts this run's calls only.
    """

    def __init__(self, url: str, proc: Proc | None = None) -> None:
        self.url = url.rstrip("/")
        self.proc = proc

    @classmethod
    async def start(cls, tag: str, latency_ms: int, jitter_ms: int = 0) -> Simulator:
        port = free_port()
        env = {**os.environ, "SIM_LATENCY_MS": str(latency_ms), "SIM_LATENCY_JITTER_MS": str(jitter_ms),
               "SIM_SEED": "1", "SIM_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
        log_dir = STACK_DIR / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"bench-simulator-{tag}.log"
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(port)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        proc = Proc("simulator", process, log_path)
        sim = cls(f"http://127.0.0.1:{port}", proc)
        if not await wait_http_ok(f"{sim.url}/healthz", proc, timeout=30):
            proc.stop()
            raise RuntimeError(f"the bench's simulator did not start:\n{proc.log_tail()}")
        return sim

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    async def request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.request(
            method, f"{self.url}{path}", json=payload, timeout=aiohttp.ClientTimeout(total=10)
        ) as r:
            r.raise_for_status()
            return await r.json()  # type: ignore[no-any-return]

    async def calls(self) -> int:
        return int((await self.request("GET", "/_sim/stats"))["calls"])

    async def set_latency(self, latency_ms: int, jitter_ms: int = 0) -> None:
        await self.request("POST", "/_sim/config", {"latency_ms": latency_ms, "jitter_ms": jitter_ms})

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(10)


# --- objects --------------------------------------------------------------------------------------------------


async def upload_objects(settings: Settings, items: Iterable[tuple[str, bytes]], concurrency: int = 8) -> None:
    async with s3_client(settings) as s3:
        sem = asyncio.Semaphore(concurrency)

        async def put(key: str, data: bytes) -> None:
            async with sem:
                await s3.put_object(Bucket=settings.s3_bucket_name, Key=key, Body=data, ContentType="image/jpeg")

        await asyncio.gather(*(put(k, d) for k, d in items))


async def delete_prefix(settings: Settings, prefix: str, older_than_s: float | None = None) -> int:
    """Delete the objects under ``prefix`` (only those older than ``older_than_s``, when given)."""
    deleted = 0
    async with s3_client(settings) as s3:
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=settings.s3_bucket_name, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])
                    if older_than_s is None or time.time() - o["LastModified"].timestamp() > older_than_s]
            for i in range(0, len(keys), 500):
                await s3.delete_objects(Bucket=settings.s3_bucket_name, Delete={"Objects": keys[i:i + 500]})
                deleted += len(keys[i:i + 500])
    return deleted


class EdgePurger:
    """PURGE keys from the CDN edge, so the next read of a re-used pool key is a miss like a fresh upload's."""

    def __init__(self, settings: Settings, concurrency: int = 4) -> None:
        self._base = settings.cdn_base_url
        self._sem = asyncio.Semaphore(concurrency)
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> EdgePurger:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        assert self._http is not None
        await self._http.close()

    async def purge(self, key: str) -> None:
        assert self._http is not None
        async with self._sem:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with self._http.request("PURGE", f"{self._base}/{key}") as resp:
                    await resp.read()

    def purge_soon(self, key: str) -> None:
        task = asyncio.create_task(self.purge(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def purge_all(self, keys: Iterable[str]) -> None:
        await asyncio.gather(*(self.purge(k) for k in keys))


# --- Kafka: publisher and result stream -----------------------------------------------------------------------


@dataclass
class Arrival:
    recv: float  # perf_counter when the bench's consumer got it
    status: str
    source: str | None
    phash: str | None
    cdn_cache: str | None
    completed_at: float | None  # epoch seconds (the worker's clock, the same machine)
    timings: dict[str, float]
    model_version: str | None = None


def parse_result(value: bytes, recv: float) -> Arrival:
    doc = json.loads(value)
    cache = doc.get("cache") or {}
    fetch = doc.get("fetch") or {}
    completed = doc.get("completed_at")
    completed_s = None
    if completed:
        from datetime import datetime

        completed_s = datetime.fromisoformat(completed.replace("Z", "+00:00")).timestamp()
    return Arrival(recv, doc.get("status", "?"), cache.get("source"), cache.get("phash"), fetch.get("cdn_cache"),
                   completed_s, doc.get("timings_ms") or {}, cache.get("model_version"))


class Pipe:
    """A producer for upload-complete events and a consumer of the results topic, started before any publish.

    Every worker on the broker reads ``waste.uploads.completed`` (each app id is its own consumer group), so
    on a shared machine another person's test worker may answer the bench's events too. Only results made
    under the bench worker's model version (its own prompt version) count; the others are tallied in
    ``foreign`` per job id, so a run can say how much it was disturbed.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.arrivals: dict[str, Arrival] = {}
        self.foreign: collections.Counter[str] = collections.Counter()
        self.duplicates = 0
        self.on_arrival: Callable[[str, Arrival], None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[str, asyncio.Future[Arrival]] = {}

    async def __aenter__(self) -> Pipe:
        kafka = kafka_security.client_kwargs(self.settings, "api")  # writes uploads, reads results, like the API
        self._consumer = AIOKafkaConsumer(topics.ANALYSIS_RESULTS, **kafka, group_id=None,
                                          auto_offset_reset="latest", fetch_max_wait_ms=100)
        self._producer = AIOKafkaProducer(**kafka, linger_ms=0, acks=1)
        await self._consumer.start()
        await self._producer.start()
        await position_at_end(self._consumer)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._producer is not None:
            await self._producer.stop()
        if self._consumer is not None:
            await self._consumer.stop()

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=1000)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    job_id = (record.key or b"").decode()
                    if job_id in self.arrivals:
                        self.duplicates += 1
                        continue
                    try:
                        arrival = parse_result(record.value, now)
                    except (ValueError, TypeError):
                        continue
                    if arrival.model_version != self.settings.model_version:
                        self.foreign[job_id] += 1
                        continue
                    self.arrivals[job_id] = arrival
                    waiter = self._waiters.pop(job_id, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(arrival)
                    if self.on_arrival is not None:
                        self.on_arrival(job_id, arrival)

    def event(self, job_id: str, key: str) -> bytes:
        return UploadCompleted(job_id=job_id, bucket=self.settings.s3_bucket_name, key=key,
                               content_type="image/jpeg", uploaded_at=utcnow()).to_bytes()

    async def send(self, job_id: str, value: bytes) -> float:
        """Queue one event; returns the perf_counter taken right before the send."""
        assert self._producer is not None
        t = time.perf_counter()
        await self._producer.send(topics.UPLOADS_COMPLETED, key=job_id.encode(), value=value)
        return t

    async def send_raw(self, key: bytes, value: bytes) -> None:
        assert self._producer is not None
        await self._producer.send_and_wait(topics.UPLOADS_COMPLETED, key=key, value=value)

    async def flush(self) -> None:
        assert self._producer is not None
        await self._producer.flush()

    async def wait_for(self, job_ids: Iterable[str], timeout: float) -> int:
        """Wait until every job has a result or the deadline passes; returns how many are still missing."""
        loop = asyncio.get_running_loop()
        futures = []
        for job_id in job_ids:
            if job_id in self.arrivals:
                continue
            fut = self._waiters.get(job_id) or loop.create_future()
            self._waiters[job_id] = fut
            futures.append(fut)
        if futures:
            await asyncio.wait(futures, timeout=timeout)
        return sum(1 for f in futures if not f.done())



async def wait_until_pipeline_answers(pipe: Pipe, worker: Proc, probe_key: str, timeout: float = 120.0) -> float:
    """Readiness by behaviour: publish events for a small probe image until *this* worker answers one.

    Only the bench worker's results carry its model version (see :class:`Pipe`), so an answer from some
    other worker on the broker does not count. Returns the seconds it took.
    """
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if not worker.alive():
            raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
        probe = f"probe-{uuid.uuid4()}"
        await pipe.send(probe, pipe.event(probe, probe_key))
        await pipe.flush()
        if await pipe.wait_for([probe], timeout=3.0) == 0:
            return time.monotonic() - started
    raise TimeoutError(f"the worker did not answer within {timeout}s:\n{worker.log_tail()}")


async def wait_until_group_settled(workers: list[Proc], timeout: float = 120.0) -> float:
    """Every worker ready and, together, holding every partition of every topic they read exactly once: no
    rebalance left to happen under a measurement. Returns the seconds it took."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        while time.monotonic() - started < timeout:
            held: dict[str, list[int]] = collections.defaultdict(list)
            counts: dict[str, int] = collections.defaultdict(int)
            generations = set()
            ready = 0
            for worker in workers:
                if not worker.alive():
                    raise RuntimeError(f"{worker.name} exited:\n{worker.log_tail()}")
                with contextlib.suppress(TimeoutError, aiohttp.ClientError, ValueError):
                    async with http.get(f"http://127.0.0.1:{worker.web_port}/readyz",
                                        timeout=aiohttp.ClientTimeout(total=3)) as resp:
                        body = await resp.json(content_type=None)
                        ready += resp.status == 200
                        generations.add(body["generation"])
                        for topic, partitions in body["partitions_held"].items():
                            held[topic] += partitions
                            # A worker may not know a count (null) while another does.
                            counts[topic] = max(counts[topic], body["partition_counts"][topic] or 0)
            if ready == len(workers) and len(generations) == 1 and counts and all(
                    n and sorted(held[t]) == list(range(n)) for t, n in counts.items()):
                return time.monotonic() - started
            await asyncio.sleep(0.5)
    raise TimeoutError(f"the workers did not settle within {timeout}s")


def probe_image() -> bytes:
    """A small, unique JPEG: the readiness probe (one model call, then cache hits)."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng().integers(0, 256, (96, 128, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


async def worker_counters(ports: Iterable[int]) -> dict[str, float]:
    """The bench workers' Prometheus counters (``waste_events_total{stage="upload"}`` and friends), summed."""
    out: dict[str, float] = collections.defaultdict(float)
    async with aiohttp.ClientSession() as http:
        for port in ports:
            try:
                async with http.get(f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r:
                    text = await r.text()
            except (TimeoutError, aiohttp.ClientError):
                continue
            for line in text.splitlines():
                if line.startswith(("waste_events_total{", "waste_model_calls_total{", "waste_results_total{")):
                    name, _, value = line.rpartition(" ")
                    with contextlib.suppress(ValueError):
                        out[name] += float(value)
    return dict(out)
    for line in text.splitlines():
        if line.startswith(("waste_events_total{", "waste_model_calls_total{", "waste_results_total{")):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


async def delete_app_topics(settings: Settings, app_id: str) -> int:
    """Remove the changelog/leader topics a bench worker created (its app id is unique to the run)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**kafka_security.client_kwargs(settings, "admin"))
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(f"{app_id}-")]
        if names:
            await admin.delete_topics(names, timeout_ms=15000)
        return len(names)
    finally:
        await admin.close()


# --- resources: RSS and CPU of process trees ------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    children = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _status_kb(pid: int, field_name: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kb(pid: int) -> int:
    return sum(_status_kb(p, "VmRSS") for p in process_tree(pid))


def tree_hwm_kb(pid: int) -> int:
    """Sum of each process's own peak RSS (VmHWM): an upper bound of the tree's peak."""
    return sum(_status_kb(p, "VmHWM") for p in process_tree(pid))


def tree_cpu_s(pid: int) -> float:
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                fields = f.read().decode(errors="replace").rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total / _CLK_TCK


class RssSampler:
    """Samples the RSS of named process trees in a thread; keeps the peak per name while enabled."""

    def __init__(self, interval: float = 0.25) -> None:
        self.pids: dict[str, int] = {}
        self.peak_kb: dict[str, int] = {}
        self.enabled = False
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if not self.enabled:
                continue
            for name, pid in list(self.pids.items()):
                rss = tree_rss_kb(pid)
                if rss > self.peak_kb.get(name, 0):
                    self.peak_kb[name] = rss


def stack_pids() -> dict[str, int]:
    """The local stack's processes, from the pid files scripts/stack.sh writes."""
    pids = {}
    for name in ("kafka", "redis", "s3", "edge", "simulator"):
        with contextlib.suppress(OSError, ValueError):
            pid = int((STACK_DIR / "run" / f"{name}.pid").read_text().strip())
            if Path(f"/proc/{pid}").exists():
                pids[name] = pid
    return pids


class CpuMeter:
    """CPU used between start() and stop(): by named process trees, by the bench itself, by the whole machine.

    Percentages are of one core (a 2-core machine has 200). ``foreign`` is what the machine spent outside
    every process named here and the bench: other people's work on a shared machine, i.e. noise.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {k: v for k, v in pids.items() if v}
        self._start: dict[str, float] = {}
        self._t0 = 0.0
        self._busy0 = 0.0

    def start(self) -> CpuMeter:
        self._t0 = time.monotonic()
        self._busy0 = _machine_busy_s()
        self._steal0 = _steal_s()
        self._start = {name: tree_cpu_s(pid) for name, pid in self.pids.items()}
        self._start["bench"] = time.process_time()
        return self

    def stop(self) -> dict[str, Any]:
        wall = max(time.monotonic() - self._t0, 1e-6)
        used = {name: tree_cpu_s(pid) - self._start[name] for name, pid in self.pids.items()}
        used["bench"] = time.process_time() - self._start["bench"]
        busy = _machine_busy_s() - self._busy0
        ours = {name: round(100 * s / wall, 1) for name, s in sorted(used.items(), key=lambda kv: -kv[1])}
        return {
            "pct_of_one_core": ours,
            "machine_busy": round(100 * busy / wall, 1),
            "machine_capacity": 100 * (os.cpu_count() or 1),
            "foreign": round(max(0.0, 100 * (busy - sum(used.values())) / wall), 1),
            "steal": round(100 * (_steal_s() - self._steal0) / wall, 1),  # taken by the hypervisor
        }


def _machine_busy_s() -> float:
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    # user nice system idle iowait irq softirq steal (guest time is already inside user and nice)
    values = [int(v) for v in parts[:8]]
    return (values[0] + values[1] + values[2] + values[5] + values[6]) / _CLK_TCK


def _steal_s() -> float:
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    return int(parts[7]) / _CLK_TCK if len(parts) > 7 else 0.0

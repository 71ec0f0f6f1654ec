"""What the benchmarks add to the pipeline kit (tools/kit): their workers and API, the edge purger, the result
stream that keeps only the bench worker's results with their arrival times, and CPU and RSS meters.

Everything talks to 127.0.0.1 only, and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from models.settings import Settings
from streams import kafka_security
from streams.clients import s3_client
from tools import kit
from tools.kit import LOG_DIR, STACK_DIR, Proc, ResultWatcher, free_port, workers_counter

BENCH_CACHE = Path(__file__).resolve().parent / ".cache"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def start_worker(settings: Settings, index: int = 0) -> Proc:
    """``faust -A streams.app worker``, its table data in bench/.cache (removed on stop).

    Workers ``index`` 1, 2, ... join the same group as worker 0 (one process per core, as Faust deployments
    scale); each has its own data folder and web port. Only worker 0 positions a new group at the end.
    """
    if index:
        settings = settings.model_copy(update={"worker_web_port": free_port()})
    tag = f"{settings.app_id}-{index}" if index else settings.app_id
    return kit.start_worker(settings, "worker" if index == 0 else f"worker-{index + 1}", new_group=index == 0,
                            for_tests=False, datadir=BENCH_CACHE / "faust" / tag,
                            log_path=LOG_DIR / f"bench-worker-{tag}.log", keep_data=False)


def start_api(settings: Settings) -> Proc:
    return kit.start_api(settings, LOG_DIR / f"bench-api-{settings.app_id}.log")


def start_simulator(tag: str, latency_ms: int) -> kit.Simulator:
    """A private simulator: its latency changes slow down no one else's tests, and its call count (what a real
    model would bill) counts this run's calls only."""
    return kit.Simulator.start(f"bench-simulator-{tag}", SIM_LATENCY_MS=str(latency_ms), SIM_LATENCY_JITTER_MS="0",
                               SIM_SEED="1", SIM_LOG_LEVEL="WARNING")


# --- objects --------------------------------------------------------------------------------------------------


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


class Pipe(ResultWatcher):
    """The kit's result watcher, keeping only the bench worker's results, each with its arrival time.

    Every worker on the broker reads ``waste.uploads.completed`` (each app id is its own consumer group), so
    on a shared machine another person's test worker may answer the bench's events too. Only results made
    under the bench worker's model version (its own prompt version) count; the others are tallied in
    ``foreign`` per job id, so a run can say how much it was disturbed.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, consumer_options={"fetch_max_wait_ms": 100},
                         producer_options={"linger_ms": 0, "acks": 1})
        self.arrivals: dict[str, Arrival] = {}
        self.foreign: collections.Counter[str] = collections.Counter()
        self.duplicates = 0

    def handle(self, job_id: str, value: bytes, recv: float) -> None:
        if job_id in self.arrivals:
            self.duplicates += 1
            return
        arrival = parse_result(value, recv)
        if arrival.model_version != self.settings.model_version:
            self.foreign[job_id] += 1
            return
        self.arrivals[job_id] = arrival
        self.received[job_id] = [arrival]
        if self.on_result is not None:
            self.on_result(job_id, arrival)

    def event(self, job_id: str, key: str, **fields: Any) -> bytes:
        return super().event(job_id, key, content_type="image/jpeg", **fields)

    def probe(self, key: str) -> Any:
        """A readiness probe for :func:`tools.kit.wait_until_pipeline_answers`: a real event for object ``key``."""
        return lambda job_id: self.event(job_id, key)


def probe_image() -> bytes:
    """A small, unique JPEG: the readiness probe (one model call, then cache hits)."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng().integers(0, 256, (96, 128, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


async def uploads_handled(workers: Iterable[Proc]) -> float:
    """The bench workers' count of upload events handled, summed."""
    return await workers_counter([w.web_port for w in workers if w.web_port], "waste_events_total", stage="upload")


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

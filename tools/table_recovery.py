"""How long a worker takes to answer again, and how much memory it holds, with N cached photos in its table.

    python -m tools.table_recovery --entries 10000 100000 1000000 [--stores memory rocksdb] [--json PATH]

For each N and store, on the running stack (scripts/stack.sh up): a fresh app id's results-table changelog is
filled with N realistic entries straight through a Kafka producer (the value format of streams/tables.py), plus
one for a real photo under this run's model version (so only the table can answer it: Redis has no entry for that
version). A worker (``TABLE_STORE=memory|rocksdb``) is started and measured from its start until

- ``ready``: /readyz answers 200 and the worker holds every partition of every topic it reads (tables recovered);
- ``answered``: an upload of that photo, published as the worker starts, has its result, served from the table;
- ``peak_rss``: VmHWM of the worker process (/proc), read once it answered and ``--observe`` seconds later, while
  a copy of the photo is uploaded every 2 s (``worst_answer``: the slowest of those, a sweep of the whole table by
  a timer shows there).

The worker is then stopped (SIGTERM: it leaves its group, so the restart does not wait out a session timeout) and
started again on the same data dir: for ``rocksdb`` that is the restart whose tables are already on disk. Every
topic the run created (``{app_id}-*``) and its data dirs are deleted at the end. The machine's other load shows
in the figures: run it niced, and compare stores within one run.
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
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.partitioner import murmur2
from PIL import Image, ImageDraw

from models.classification import WasteCategory
from models.records import AnalysisResult, CachedClassification, UploadCompleted, utcnow
from models.settings import Settings
from streams import kafka_security, topics
from streams.clients import s3_client
from streams.imaging import hash_image
from streams.table_store import CHANGELOG_TOPIC_CONFIG
from tools.kafka_admin import partition_counts, position_at_end

try:  # the kit's new home; the test harness before it
    from tools.kit import free_port, start_worker
except ImportError:  # pragma: no cover
    from tests.pipeline_harness import free_port, start_worker  # type: ignore[no-redef]

RESULTS_TABLE = getattr(topics, "RESULTS_TABLE", "results-by-phash")
STACK_DIR = Path(os.environ.get("STACK_DIR", Path(__file__).resolve().parents[1] / ".stack"))


def changelog_topic(settings: Settings, table: str = RESULTS_TABLE) -> str:
    """Faust's name for a table's changelog topic."""
    return f"{settings.app_id}-{table}-changelog"


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def changelog_key(phash: str) -> bytes:
    """A results_by_phash key as Faust writes it to the changelog: JSON (the table's schema says raw, but Faust
    0.15.3 serializes changelog keys with the serializer of the table's key_type, which is json when unset)."""
    return _json(phash)


def entry_value(entry: CachedClassification, stored_at: float) -> bytes:
    """A results_by_phash value as Faust writes it (streams/tables.py: json, {entry, stored_at})."""
    return _json({"entry": entry.model_dump(mode="json"), "stored_at": stored_at})


def make_entry(phash: str, model_version: str, rng: random.Random) -> CachedClassification:
    category = rng.choice(list(WasteCategory))
    return CachedClassification.model_validate({
        "phash": phash,
        "classification": {
            "category": category.value,
            "item_name": rng.choice(["plastic bottle", "glass jar", "pizza box", "banana peel", "battery",
                                     "yoghurt pot", "newspaper", "tin can", "coffee cup", "light bulb"]),
            "disposal_instructions": "Empty and rinse it, remove the lid, and put it in the container for "
                                     f"{category.value} waste; check your municipality's rules for exceptions.",
            "recyclable": rng.random() < 0.6,
            "confidence": round(rng.uniform(0.55, 0.99), 3),
        },
        "model_version": model_version,
        "job_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "created_at": utcnow().isoformat(),
        "answered_by": {"model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_50cad350e4", "simulated": False},
        "cost_usd": round(rng.uniform(0.0004, 0.0012), 6),
    })


def synthetic_values(n: int, model_version: str, seed: int = 1) -> Iterable[tuple[str, bytes, bytes]]:
    """``n`` (pHash, key, value) triples of distinct random 256-bit pHashes, stored within the last six days.

    Built from one template per 1,000 entries (only pHash, job id and stored_at change in between): the fill
    then costs what the producer costs, not pydantic."""
    rng = random.Random(seed)
    now = time.time()
    template: dict[str, Any] = {}
    for i in range(n):
        phash = f"{rng.getrandbits(256):064x}"
        if i % 1000 == 0:
            template = make_entry(phash, model_version, rng).model_dump(mode="json")
        entry = {**template, "phash": phash, "job_id": str(uuid.UUID(int=rng.getrandbits(128)))}
        # Older than the re-warm's recent window, younger than the 7-day TTL: live, and never written to Redis.
        stored_at = now - rng.uniform(3600.0, 6 * 24 * 3600.0)
        yield phash, changelog_key(phash), _json({"entry": entry, "stored_at": stored_at})


async def create_changelog(settings: Settings, table: str = RESULTS_TABLE) -> str:
    """The changelog topic as Faust declares it (compacted, the app's partitions), before the worker does."""
    name = changelog_topic(settings, table)
    admin = AIOKafkaAdminClient(**kafka_security.client_kwargs(settings, "admin"))
    await admin.start()
    try:
        if name not in await admin.list_topics():
            await admin.create_topics([NewTopic(name, settings.topic_partitions, settings.topic_replication_factor,
                                                topic_configs={"cleanup.policy": "compact",
                                                               **CHANGELOG_TOPIC_CONFIG})])
    finally:
        await admin.close()
    return name


async def fill_changelog(settings: Settings, records: Iterable[tuple[str, bytes, bytes]]) -> int:
    """Write (pHash, key, value) ``records`` to the results table's changelog, each to the partition Faust writes
    it to: the pHash-keyed topics' partition, murmur2 of the raw pHash (not of the JSON key)."""
    name = await create_changelog(settings)
    producer = AIOKafkaProducer(**kafka_security.client_kwargs(settings, "admin"), acks=1, linger_ms=20,
                                max_batch_size=512 * 1024, max_request_size=4 * 1024 * 1024)
    await producer.start()
    count = 0
    try:
        pending: list[asyncio.Future[Any]] = []
        for phash, key, value in records:
            partition = (murmur2(phash.encode()) & 0x7FFFFFFF) % settings.topic_partitions
            pending.append(await producer.send(name, key=key, value=value, partition=partition))
            count += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count


async def topic_config(settings: Settings, name: str) -> dict[str, str]:
    """A topic's configuration as the broker reports it."""
    admin = AIOKafkaAdminClient(**kafka_security.client_kwargs(settings, "admin"))
    await admin.start()
    try:
        response = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
        return {entry[0]: entry[1] for r in response for resource in r.resources for entry in resource[4]}
    finally:
        await admin.close()


async def delete_app_topics(settings: Settings) -> list[str]:
    """Delete every topic of the app id (its changelogs and Faust's leader topic)."""
    admin = AIOKafkaAdminClient(**kafka_security.client_kwargs(settings, "admin"))
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(f"{settings.app_id}-")]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()


def probe_photo(seed: int | str | None = None) -> tuple[bytes, str]:
    """A JPEG no one else sends (random rectangles) and its pHash as the worker computes it.

    Every worker group on the broker reads every upload: a shipped photo sent here would be cached by other
    groups and turn another test's first upload of it into a cache hit."""
    rng = random.Random(seed if seed is not None else uuid.uuid4().hex)
    image = Image.new("RGB", (640, 480), tuple(rng.randrange(256) for _ in range(3)))  # type: ignore[arg-type]
    draw = ImageDraw.Draw(image)
    for _ in range(24):
        x, y = rng.randrange(600), rng.randrange(440)
        draw.rectangle((x, y, x + rng.randrange(20, 320), y + rng.randrange(20, 240)),
                       fill=tuple(rng.randrange(256) for _ in range(3)))  # type: ignore[arg-type]
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    data = out.getvalue()
    return data, hash_image(data, max_pixels=Settings(_env_file=None).max_image_pixels).phash  # type: ignore[call-arg]


def probe_record(settings: Settings, phash: str) -> tuple[str, bytes, bytes]:
    """The table entry for the probe photo, under this run's model version (Redis has none for it)."""
    entry = make_entry(phash, settings.model_version, random.Random(phash))
    return phash, changelog_key(phash), entry_value(entry, time.time() - 3600.0)


class Uploader:
    """Uploads the probe photo and publishes upload-complete events (the API's principal); reads results."""

    def __init__(self, settings: Settings, data: bytes) -> None:
        self.settings = settings
        self.data = data
        self.received: dict[str, AnalysisResult] = {}
        self.arrived: dict[str, float] = {}

    async def __aenter__(self) -> Uploader:
        kafka = kafka_security.client_kwargs(self.settings, "api")
        self.consumer = AIOKafkaConsumer(topics.ANALYSIS_RESULTS, **kafka, group_id=None, auto_offset_reset="latest")
        self.producer = AIOKafkaProducer(**kafka)
        await self.consumer.start()
        await self.producer.start()
        await position_at_end(self.consumer)  # "latest" is resolved lazily: fix the positions now
        self.key = f"tests/{uuid.uuid4()}.jpg"
        async with s3_client(self.settings) as s3:
            await s3.put_object(Bucket=self.settings.s3_bucket_name, Key=self.key, Body=self.data,
                                ContentType="image/jpeg")
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.producer.stop()
        await self.consumer.stop()

    async def _read(self) -> None:
        async for record in self.consumer:
            job_id = (record.key or b"").decode()
            if not job_id.startswith("tables-") or job_id in self.received:
                continue
            result = AnalysisResult.model_validate_json(record.value)
            # Every worker group on the broker reads the uploads topic and answers under its own model version:
            # only this run's worker answers with this run's.
            if result.cache is not None and result.cache.model_version == self.settings.model_version:
                self.arrived[job_id] = time.monotonic()
                self.received[job_id] = result

    async def publish(self) -> str:
        job_id = f"tables-{uuid.uuid4()}"
        event = UploadCompleted(job_id=job_id, bucket=self.settings.s3_bucket_name, key=self.key,
                                uploaded_at=utcnow())
        await self.producer.send_and_wait(topics.UPLOADS_COMPLETED, key=job_id.encode(), value=event.to_bytes())
        return job_id

    async def result(self, job_id: str, timeout: float) -> AnalysisResult:
        deadline = time.monotonic() + timeout
        while job_id not in self.received:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no result for {job_id} within {timeout:.0f}s")
            await asyncio.sleep(0.05)
        return self.received[job_id]


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


async def wait_ready(settings: Settings, worker: Any, timeout: float) -> float:
    """Seconds until /readyz is 200 with every partition of every source topic held (a lone worker)."""
    expected = await partition_counts(settings, topics.WORKER_SOURCES)
    url = f"http://127.0.0.1:{settings.worker_web_port}/readyz"
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        while time.monotonic() - started < timeout:
            if not worker.alive():
                raise RuntimeError(f"the worker exited:\n{worker.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=3)) as response:
                    body = await response.json(content_type=None)
                    if response.status == 200 and all(
                            body["partitions_held"].get(t) == list(range(n)) for t, n in expected.items()):
                        return time.monotonic() - started
            await asyncio.sleep(0.1)
    raise TimeoutError(f"not ready within {timeout:.0f}s:\n{worker.log_tail()}")


@dataclass
class Start:
    ready_s: float
    answered_s: float
    source: str
    rss_mib: float  # once answered
    peak_rss_mib: float  # VmHWM at the end of the observation
    worst_answer_ms: float | None = None  # of the uploads during the observation


@dataclass
class Run:
    entries: int
    store: str
    fill_s: float
    first: Start | None = None
    restart: Start | None = None
    table_dir_mib: float | None = None
    sweep_s: float | None = None  # reading and decoding every entry of the RocksDB table: what an expiry sweep costs
    errors: list[str] = field(default_factory=list)


async def measure_start(settings: Settings, uploader: Uploader, name: str, *, new_group: bool, observe: float,
                        timeout: float) -> tuple[Start, Any]:
    worker = start_worker(settings, name=name, new_group=new_group)
    started = time.monotonic()
    job = await uploader.publish()  # waits in the topic until the worker reads it
    ready_task = asyncio.create_task(wait_ready(settings, worker, timeout))
    try:
        result = await uploader.result(job, timeout)
    except TimeoutError:
        ready_task.cancel()
        raise TimeoutError(f"no answer within {timeout:.0f}s:\n{worker.log_tail()}") from None
    answered = uploader.arrived[job] - started
    ready = await ready_task
    rss = rss_kib(worker.process.pid)
    worst: float | None = None
    deadline = time.monotonic() + observe
    while time.monotonic() < deadline:
        sent = time.monotonic()
        again = await uploader.publish()
        await uploader.result(again, timeout)
        worst = max(worst or 0.0, (uploader.arrived[again] - sent) * 1000)
        await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - sent)))
    peak = rss_kib(worker.process.pid)
    source = result.cache.source.value if result.cache else f"none ({result.status.value})"
    return Start(round(ready, 2), round(answered, 2), source, round(rss.get("VmRSS", 0) / 1024, 1),
                 round(peak.get("VmHWM", 0) / 1024, 1), None if worst is None else round(worst, 1)), worker


def sweep_seconds(datadir: Path) -> tuple[float, int]:
    """Seconds to read and JSON-decode every results entry in a stopped worker's RocksDB databases: the CPU an
    expiry sweep (or the re-warm's full pass) spends on the table, without Faust's small overhead per entry."""
    from rocksdict import AccessType, Options, Rdict

    started, count = time.monotonic(), 0
    for path in sorted(datadir.glob(f"v*/tables*/*{RESULTS_TABLE}*.db")):
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                if key != b"__faust\0offset__":
                    json.loads(value)
                    count += 1
        finally:
            db.close()
    return round(time.monotonic() - started, 2), count


def dir_mib(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


async def run_one(entries: int, store: str, *, observe: float, timeout: float, photo: tuple[bytes, str],
                  restart: bool = True) -> Run:
    session = uuid.uuid4().hex[:8]
    settings = Settings(_env_file=None, app_env="development",  # type: ignore[call-arg]
                        app_id=f"waste-tables-{store}-{entries}-{session}", prompt_version=f"tables-{session}",
                        table_store=store, worker_web_port=free_port())  # type: ignore[arg-type]
    data, phash = photo
    started = time.monotonic()
    await fill_changelog(settings, [*synthetic_values(entries, settings.model_version),
                                    probe_record(settings, phash)])
    run = Run(entries, store, round(time.monotonic() - started, 1))
    print(f"[{store} {entries}] changelog filled in {run.fill_s}s", flush=True)
    worker = None
    datadir = STACK_DIR / "faust" / settings.app_id
    try:
        async with Uploader(settings, data) as uploader:
            run.first, worker = await measure_start(settings, uploader, f"tables-{store}-{entries}-first",
                                                    new_group=True, observe=observe, timeout=timeout)
            print(f"[{store} {entries}] first start: {run.first}", flush=True)
            worker.stop()
            if store == "rocksdb":
                run.table_dir_mib = dir_mib(datadir)
            if not restart:
                return run
            run.restart, worker = await measure_start(settings, uploader, f"tables-{store}-{entries}-restart",
                                                      new_group=False, observe=observe, timeout=timeout)
            print(f"[{store} {entries}] restart: {run.restart}", flush=True)
            worker.stop()
            worker = None
            if store == "rocksdb":
                run.sweep_s, swept = sweep_seconds(datadir)
                print(f"[{store} {entries}] reading and decoding the {swept:,} entries on disk: {run.sweep_s}s",
                      flush=True)
    except (TimeoutError, RuntimeError) as exc:
        run.errors.append(str(exc)[-2000:])
        print(f"[{store} {entries}] failed: {str(exc)[-2000:]}", flush=True)
    finally:
        if worker is not None:
            worker.stop()
        deleted = await delete_app_topics(settings)
        shutil.rmtree(datadir, ignore_errors=True)
        print(f"[{store} {entries}] deleted {len(deleted)} topics", flush=True)
    return run


def table(runs: list[Run]) -> str:
    lines = ["| cached photos | store | first start: ready / answered | peak RSS | restart: ready / answered | "
             "peak RSS | worst answer while up | RocksDB on disk | full read of the table |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in runs:
        if r.first is None or (r.restart is None and r.errors):
            lines.append(f"| {r.entries:,} | {r.store} | failed: {(r.errors or ['?'])[0][:80]} | | | | | | |")
            continue
        again = r.restart
        seen = (r.first.worst_answer_ms, again.worst_answer_ms if again else None)
        worst = max([0.0, *(x for x in seen if x is not None)])
        lines.append(
            f"| {r.entries:,} | {r.store} | {r.first.ready_s:.1f} s / {r.first.answered_s:.1f} s | "
            f"{r.first.peak_rss_mib:.0f} MiB | "
            + (f"{again.ready_s:.1f} s / {again.answered_s:.1f} s | {again.peak_rss_mib:.0f} MiB | " if again
               else "not run (replays the changelog again) | | ")
            + f"{worst:.0f} ms | "
            f"{'' if r.table_dir_mib is None else f'{r.table_dir_mib:.0f} MiB'} | "
            f"{'' if r.sweep_s is None else f'{r.sweep_s:.1f} s'} |")
    return "\n".join(lines)


async def held(port: int) -> dict[str, Any] | None:
    """A worker's /readyz body when it says ready."""
    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(total=3)) as response:
            body = await response.json(content_type=None)
            if response.status == 200 and isinstance(body, dict):
                return body
    return None


async def run_failover(entries: int, standby: int, *, settle: float, timeout: float) -> dict[str, Any]:
    """Two RocksDB workers share the partitions; one is killed (-9): seconds until an upload whose pHash was on
    the dead worker's partition is answered from the table by the survivor, with ``standby`` replicas."""
    session = uuid.uuid4().hex[:8]
    settings = Settings(_env_file=None, app_env="development",  # type: ignore[call-arg]
                        app_id=f"waste-tables-failover{standby}-{entries}-{session}",
                        prompt_version=f"tables-{session}", table_store="rocksdb", table_standby_replicas=standby,
                        worker_web_port=free_port(), kafka_session_timeout_seconds=6)
    photos = [probe_photo(f"{session}-{i}") for i in range(12)]
    await fill_changelog(settings, [*synthetic_values(entries, settings.model_version),
                                    *(probe_record(settings, phash) for _, phash in photos)])
    second = settings.model_copy(update={"worker_web_port": free_port()})
    workers: list[Any] = []
    out: dict[str, Any] = {"entries": entries, "standby": standby}
    try:
        workers.append(start_worker(settings, name=f"failover{standby}-a"))
        await wait_ready(settings, workers[0], timeout)
        workers.append(start_worker(second, name=f"failover{standby}-b", new_group=False))
        deadline = time.monotonic() + timeout
        while True:  # both ready in one generation, the partitions split between them
            bodies = [await held(s.worker_web_port) for s in (settings, second)]
            if all(bodies) and len({b["generation"] for b in bodies if b}) == 1 and all(
                    b and b["partitions_held"].get(topics.IMAGES_HASHED) for b in bodies):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the two workers did not share the partitions: {bodies}")
            await asyncio.sleep(0.5)
        await asyncio.sleep(settle)  # standbys read the other worker's changelog partitions meanwhile
        victim = set(bodies[0]["partitions_held"][topics.IMAGES_HASHED])  # type: ignore[index]
        data, phash = next((d, p) for d, p in photos
                           if (murmur2(p.encode()) & 0x7FFFFFFF) % settings.topic_partitions in victim)
        async with Uploader(settings, data) as uploads:
            workers[0].process.kill()
            killed = time.monotonic()
            job = await uploads.publish()
            result = await uploads.result(job, timeout)
            out["answered_s"] = round(uploads.arrived[job] - killed, 2)
            out["source"] = result.cache.source.value if result.cache else None
        out["survivor_peak_rss_mib"] = round(rss_kib(workers[1].process.pid).get("VmHWM", 0) / 1024, 1)
        print(f"[failover standby={standby} {entries}] {out}", flush=True)
    except (TimeoutError, RuntimeError) as exc:
        out["error"] = str(exc)[-1500:]
        print(f"[failover standby={standby} {entries}] failed: {out['error']}", flush=True)
    finally:
        for worker in workers:
            worker.stop()
        await delete_app_topics(settings)
        shutil.rmtree(STACK_DIR / "faust" / settings.app_id, ignore_errors=True)
    return out


async def main_async(args: argparse.Namespace) -> int:
    if args.failover is not None:
        outs = [await run_failover(entries, standby, settle=args.settle, timeout=args.timeout)
                for entries in args.entries for standby in args.failover]
        if args.json:
            Path(args.json).write_text(json.dumps(outs, indent=2) + "\n")
        return 0 if all("error" not in o for o in outs) else 1
    photo = probe_photo()
    runs = []
    for entries in args.entries:
        for store in args.stores:
            restart = not (store == "memory" and entries in args.no_memory_restart_at)
            runs.append(await run_one(entries, store, observe=args.observe, timeout=args.timeout, photo=photo,
                                      restart=restart))
    print(table(runs))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in runs], indent=2) + "\n")
    answered = all(r.first and r.first.source == "table" and (r.restart is None or r.restart.source == "table")
                   and not r.errors for r in runs)
    return 0 if answered else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--stores", nargs="+", choices=["memory", "rocksdb"], default=["memory", "rocksdb"])
    parser.add_argument("--observe", type=float, default=35.0,
                        help="seconds of uploads after each start (longer than the 30 s table sweep timer)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on a start after this long")
    parser.add_argument("--no-memory-restart-at", type=int, nargs="*", default=[], metavar="N",
                        help="skip the memory store's restart at these sizes (it replays the changelog like the first "
                        "start: minutes at 1M)")
    parser.add_argument("--failover", type=int, nargs="+", metavar="STANDBYS",
                        help="instead: two RocksDB workers, one killed; time until the survivor answers a photo of "
                        "the dead one's partition, with each of these TABLE_STANDBY_REPLICAS")
    parser.add_argument("--settle", type=float, default=60.0,
                        help="--failover: seconds both workers run before the kill (standbys catch up)")
    parser.add_argument("--json", help="also write the figures to this file")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

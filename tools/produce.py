"""Upload local photos to the bucket, publish their upload-complete events, and follow the results.

    python -m tools.produce samples/waste/glass --repeat 2      # the shipped photos of one class, twice each
    python -m tools.produce ~/Pictures/bins photo.png           # any folders (searched recursively) and files

Prints each result as it arrives on the results topic, then a summary (done, failed, cache hits by source,
model calls). This is how a person feeds the pipeline without the app; the demo goes through the API instead.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from models.records import AnalysisResult, UploadCompleted, utcnow
from models.settings import Settings, load_settings
from streams import kafka_security, topics
from streams.clients import s3_client
from tools.kafka_admin import position_at_end
from tools.photos import content_type, image_files


@dataclass
class Job:
    job_id: str
    path: Path
    key: str
    sent_at: float = 0.0


@dataclass
class Summary:
    results: dict[str, AnalysisResult] = field(default_factory=dict)
    latency_s: dict[str, float] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        c: collections.Counter[str] = collections.Counter()
        for r in self.results.values():
            c[r.status.value] += 1
            if r.cache is not None:
                c[f"source:{r.cache.source.value}"] += 1
            if r.error is not None:
                c[f"error:{r.error.code.value}"] += 1
        return dict(c)


def collect_files(paths: list[str]) -> list[Path]:
    """Images under the folders (recursively, by extension) and the files named directly."""
    try:
        return image_files(*paths)
    except FileNotFoundError as exc:
        raise SystemExit(str(exc)) from None


async def upload_all(settings: Settings, files: list[Path], repeat: int, prefix: str) -> list[Job]:
    """Each file is uploaded once per repeat under its own key, as a phone re-uploading it would."""
    jobs = [Job(str(uuid.uuid4()), f, "") for _ in range(repeat) for f in files]
    async with s3_client(settings) as s3:
        sem = asyncio.Semaphore(16)

        async def put(job: Job) -> None:
            job.key = f"{prefix}/{job.job_id}{job.path.suffix.lower() or '.jpg'}"
            ctype = content_type(job.path)
            async with sem:
                await s3.put_object(Bucket=settings.s3_bucket_name, Key=job.key, Body=job.path.read_bytes(),
                                    ContentType=ctype)

        await asyncio.gather(*(put(j) for j in jobs))
    return jobs


async def run(settings: Settings, jobs: list[Job], *, timeout: float, quiet: bool,
              simulator_url: str | None) -> Summary:
    calls_before = await simulator_calls(simulator_url)
    summary = Summary()
    pending = {j.job_id: j for j in jobs}
    # The API's principal: it writes upload events and reads results, like the API (streams/kafka_security.py).
    consumer = AIOKafkaConsumer(topics.ANALYSIS_RESULTS, **kafka_security.client_kwargs(settings, "api"),
                                group_id=None, auto_offset_reset="latest")
    producer = AIOKafkaProducer(**kafka_security.client_kwargs(settings, "api"), linger_ms=5)
    await consumer.start()
    await producer.start()
    try:
        await position_at_end(consumer)
        for job in jobs:
            event = UploadCompleted(job_id=job.job_id, bucket=settings.s3_bucket_name, key=job.key,
                                    content_type=content_type(job.path),
                                    size=job.path.stat().st_size, uploaded_at=utcnow())
            job.sent_at = time.monotonic()
            await producer.send(topics.UPLOADS_COMPLETED, key=job.job_id.encode(), value=event.to_bytes())
        await producer.flush()
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    job_id = (record.key or b"").decode()
                    if job_id not in pending:
                        continue
                    job = pending.pop(job_id)
                    result = AnalysisResult.model_validate_json(record.value)
                    summary.results[job_id] = result
                    summary.latency_s[job_id] = time.monotonic() - job.sent_at
                    if not quiet:
                        print(_line(job, result, len(summary.results), len(jobs)), flush=True)
    finally:
        await producer.stop()
        await consumer.stop()
    calls_after = await simulator_calls(simulator_url)
    _print_summary(summary, len(jobs), pending, calls_before, calls_after)
    return summary




async def simulator_calls(url: str | None) -> int | None:
    if not url:
        return None
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{url.rstrip('/')}/_sim/stats") as resp:
            return int((await resp.json())["calls"])
    except (aiohttp.ClientError, KeyError, ValueError):
        return None


def _line(job: Job, r: AnalysisResult, n: int, total: int) -> str:
    bar = "#" * int(20 * n / total)
    if r.status.value == "done" and r.classification is not None and r.cache is not None:
        c = r.classification
        what = f"{c.category.value:<13} {c.item_name[:28]:<28} cache={r.cache.source.value}"
    else:
        what = f"FAILED {r.error.code.value if r.error else '?'}: {r.error.message if r.error else ''}"
    return f"[{bar:<20}] {n:>4}/{total} {job.path.name[:24]:<24} {what}"


def _print_summary(summary: Summary, total: int, pending: dict[str, Job], before: int | None,
                   after: int | None) -> None:
    counts = summary.counts()
    print("\nsummary:", json.dumps(counts, sort_keys=True))
    print(f"jobs: {total}, results: {len(summary.results)}, missing: {len(pending)}")
    if before is not None and after is not None:
        print(f"model calls (simulator count): {after - before}")
    lat = sorted(summary.latency_s.values())
    if lat:
        print(f"latency p50={lat[len(lat) // 2] * 1000:.0f} ms  max={lat[-1] * 1000:.0f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="image files or folders (searched recursively by extension)")
    parser.add_argument("--repeat", type=int, default=1, help="upload each file this many times")
    parser.add_argument("--prefix", default="uploads", help="object key prefix")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for all results")
    parser.add_argument("--simulator-url", default=None, help="count model calls via the simulator's /_sim/stats")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    settings = load_settings()
    files = collect_files(args.paths)
    if not files:
        print("no image files found", file=sys.stderr)
        return 2
    jobs = asyncio.run(upload_all(settings, files, args.repeat, args.prefix))
    summary = asyncio.run(run(settings, jobs, timeout=args.timeout, quiet=args.quiet, simulator_url=args.simulator_url))
    return 0 if len(summary.results) == len(jobs) else 1


if __name__ == "__main__":
    raise SystemExit(main())

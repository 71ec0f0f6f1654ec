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

from models.records import AnalysisResult
from models.settings import Settings, load_settings
from tools.kit import ResultWatcher, Simulator, put_objects
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
    for job in jobs:
        job.key = f"{prefix}/{job.job_id}{job.path.suffix.lower() or '.jpg'}"
    await put_objects(settings, [(job.key, job.path.read_bytes(), content_type(job.path)) for job in jobs])
    return jobs


async def run(settings: Settings, jobs: list[Job], *, timeout: float, quiet: bool,
              simulator_url: str | None) -> Summary:
    simulator = Simulator(simulator_url) if simulator_url else None
    calls_before = await simulator.calls_or_none() if simulator else None
    summary = Summary()
    pending = {j.job_id: j for j in jobs}

    def arrived(job_id: str, result: AnalysisResult) -> None:
        job = pending.pop(job_id, None)
        if job is None:
            return
        summary.results[job_id] = result
        summary.latency_s[job_id] = time.monotonic() - job.sent_at
        if not quiet:
            print(_line(job, result, len(summary.results), len(jobs)), flush=True)

    async with ResultWatcher(settings, producer_options={"linger_ms": 5}) as watcher:
        watcher.on_result = arrived
        for job in jobs:
            value = watcher.event(job.job_id, job.key, content_type=content_type(job.path),
                                  size=job.path.stat().st_size)
            job.sent_at = time.monotonic()
            await watcher.send(job.job_id, value)
        await watcher.flush()
        await watcher.unanswered(list(pending), timeout)
    calls_after = await simulator.calls_or_none() if simulator else None
    _print_summary(summary, len(jobs), pending, calls_before, calls_after)
    return summary


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

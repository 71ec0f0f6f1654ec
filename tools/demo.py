"""`make demo`: the whole pipeline on the local stack, used by a crowd of simulated app users.

Starts the workers and the API (the stack and the vision-model simulator are started by `make stack-up`):
``--workers`` worker processes in one group (default 2, one per core, as Faust deployments scale; BENCHMARKS.md),
then sends a sample of real photos (the repository's samples/waste, or any folder given with --photos / make demo
PHOTOS=dir), with re-uploads of some, through the real API
flow: analyze -> pre-signed POST upload to S3 -> upload-complete -> results over the WebSocket. Prints live
progress and a summary, and ends with the web page's address. The workers and the API keep running
(`make stack-down` stops everything).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from models.settings import Settings, load_settings
from tools import cost_report
from tools.kafka_admin import start_group_at_end
from tools.kit import ResultWatcher, Simulator, processes, wait_http_ok, wait_until_pipeline_answers
from tools.kit import api as kit_api
from tools.kit.ready import wait_until_ports_hold_partitions
from tools.photos import SAMPLES_DIR, content_type, image_files


@dataclass
class Outcome:
    photo: str
    status: str
    cache_hit: bool
    source: str
    category: str
    latency_s: float
    error: str | None = None
    answered_by: str | None = None  # "gpt-4o (simulator)" when the endpoint is the simulator


def pick_photos(folder: Path, distinct: int, reuploads: int, seed: int) -> list[Path]:
    """``distinct`` photos of ``folder`` (any layout: images are found recursively by extension), then
    ``reuploads`` more uploads of photos already picked, shuffled."""
    try:
        files = image_files(folder)
    except FileNotFoundError as exc:
        raise SystemExit(f"--photos: {exc}") from None
    if not files:
        raise SystemExit(f"no photos under {folder} (looked for .jpg, .jpeg, .png, .webp, .gif, .bmp, .tif, .tiff)")
    rng = random.Random(seed)
    chosen = rng.sample(files, min(distinct, len(files)))
    again = [rng.choice(chosen) for _ in range(reuploads)]
    crowd = chosen + again
    rng.shuffle(crowd)
    return crowd


# Worker processes of the demo's group: one per core of a 2-core machine (see BENCHMARKS.md, "Two cores on the
# decode path"). Worker N > 1 has the pid file worker-N and the web port WORKER_WEB_PORT + N - 1.
DEFAULT_WORKERS = 2


def worker_names(workers: int) -> list[str]:
    return ["worker" if i == 0 else f"worker-{i + 1}" for i in range(workers)]


async def start_pipeline(settings: Settings, workers: int = DEFAULT_WORKERS) -> None:
    app_id = f"waste-demo-{int(time.time())}"
    if processes.running_pid("worker", "streams.app") is None:
        # A consumer group of its own, starting at the end of the topics: on a machine where tests or
        # benchmarks wrote to the same topics, a reused group would first replay all of their events.
        await start_group_at_end(settings.model_copy(update={"app_id": app_id}))
    elif (running := _running_app_id()) is not None:  # more workers join the running demo's group
        app_id = running
    else:  # a worker of unknown group runs: start no other, which could form a group of its own
        workers = 1
    pids = []
    for i, name in enumerate(worker_names(workers)):
        datadir = processes.STACK_DIR / "faust" / (app_id if i == 0 else f"{app_id}-{i + 1}")
        datadir.mkdir(parents=True, exist_ok=True)
        env = {"APP_ID": app_id, "KAFKA_AUTO_OFFSET_RESET": "earliest", "APP_ENV": "development",
               "WORKER_WEB_PORT": str(settings.worker_web_port + i)}
        pid, new = processes.start_detached(name, processes.worker_argv(datadir), "streams.app", env=env)
        (processes.RUN_DIR / f"{name}.app_id").write_text(f"{app_id}\n")
        pids.append(f"{pid} ({'started' if new else 'already running'})")
    # One machine plays the whole crowd from 127.0.0.1: per-client rate limits off for the demo's API.
    api_pid, new_api = processes.start_detached("api", [sys.executable, "-m", "api"], "-m api",
                                                env={"APP_ENV": "development", "RATE_LIMIT_ANALYZE": "0",
                                                     "RATE_LIMIT_UPLOAD_COMPLETE": "0",
                                                     "WS_MAX_SOCKETS_PER_CLIENT": "1000"})
    print(f"worker pids {', '.join(pids)} (one group: {app_id}), "
          f"API pid {api_pid} ({'started' if new_api else 'already running'}); logs in {processes.LOG_DIR}")
    url = f"http://{settings.api_host}:{settings.api_port}/healthz"
    if not await wait_http_ok(url, timeout=60):
        raise SystemExit(f"the API did not become healthy at {url}; see {processes.LOG_DIR / 'api.log'}")
    try:  # ready when the worker answers a probe event (an invalid one gets a `failed` result)
        async with ResultWatcher(settings) as watcher:
            await wait_until_pipeline_answers(watcher, timeout=120)
        # ... and every worker of the group holds its share: a worker joining mid-crowd would rebalance the group
        # under the users' jobs.
        await wait_until_ports_hold_partitions(settings.model_copy(update={"app_id": app_id}),
                                               [settings.worker_web_port + i for i in range(workers)])
    except TimeoutError:
        raise SystemExit(f"the worker did not answer; see {processes.LOG_DIR / 'worker.log'}") from None


def _running_app_id() -> str | None:
    try:
        return (processes.RUN_DIR / "worker.app_id").read_text().strip() or None
    except OSError:
        return None


async def metrics_snapshot(settings: Settings, workers: int = DEFAULT_WORKERS) -> dict[str, float] | None:
    """The workers' metrics now, summed over the group (None when none can be read)."""
    host = "127.0.0.1" if settings.worker_web_host in ("0.0.0.0", "") else settings.worker_web_host
    summed: dict[str, float] = {}
    read = 0
    for i in range(workers):
        try:
            url = f"http://{host}:{settings.worker_web_port + i}/metrics"
            samples = await asyncio.to_thread(cost_report.read_metrics, url, 5.0)
        except (OSError, ValueError):
            continue
        read += 1
        for key, value in samples.items():
            summed[key] = summed.get(key, 0.0) + value
    return summed if read else None


def print_costs(summary: dict[str, Any], before: dict[str, float] | None, after: dict[str, float] | None) -> None:
    """Dollars spent and saved during the crowd (the worker's counters, after minus before), and the cost table."""
    if before is None or after is None:
        print("  model dollars: the worker's /metrics could not be read")
        return
    # The worker's counters, not the edge exporter's: those count every reader of the edge (tests, other workers).
    worker = cost_report.minus(after, before)
    spent = cost_report.total(worker, "waste_model_spent_dollars_total")
    saved = cost_report.by_label(worker, "waste_model_saved_dollars_total", "source")
    summary["dollars_spent"] = round(spent, 6)
    summary["dollars_saved"] = {k: round(v, 6) for k, v in saved.items()}
    tiers = ", ".join(f"{k} ${v:.4f}" for k, v in sorted(saved.items()) if v)
    print(f"  model dollars spent ${spent:.4f}, saved ${sum(saved.values()):.4f}"
          f"{f' ({tiers})' if tiers else ''}  (usage x MODEL_PRICE_*_PER_1M_TOKENS; docs/COST.md)")
    print()
    print(cost_report.render(cost_report.build_report(worker, None)))
    print()


async def one_user(http: aiohttp.ClientSession, api: str, photo: Path) -> Outcome:
    """What the app does for one photo."""
    ctype = content_type(photo)
    try:
        job = await kit_api.analyze(http, api, content_type=ctype)
    except kit_api.ApiError as exc:
        return Outcome(photo.name, "failed", False, "-", "-", 0.0, str(exc))
    status, _ = await kit_api.post_upload(http, job, photo.read_bytes(), content_type=ctype)
    if status >= 300:
        return Outcome(photo.name, "failed", False, "-", "-", 0.0, f"upload HTTP {status}")
    started = time.monotonic()
    async with http.ws_connect(kit_api.ws_url(api, job)) as ws:
        status, body = await kit_api.upload_complete(http, api, job)
        if status != 202:
            return Outcome(photo.name, "failed", False, "-", "-", 0.0, f"upload-complete HTTP {status}: {body}")
        _, r = await kit_api.ws_result(ws, job["job_id"])
    if r is None:
        return Outcome(photo.name, "failed", False, "-", "-", time.monotonic() - started, "WebSocket closed early")
    cache = r.get("cache") or {}
    by = r.get("answered_by") or {}
    return Outcome(photo.name, r["status"], bool(cache.get("hit")), cache.get("source", "-"),
                   (r.get("classification") or {}).get("category", "-"), time.monotonic() - started,
                   (r.get("error") or {}).get("code"),
                   f"{by['model']}{' (simulator)' if by.get('simulated') else ''}" if by else None)


async def crowd(settings: Settings, photos: list[Path], users: int) -> list[Outcome]:
    api = f"http://{settings.api_host}:{settings.api_port}"
    outcomes: list[Outcome] = []
    queue: asyncio.Queue[Path] = asyncio.Queue()
    for p in photos:
        queue.put_nowait(p)

    async def user(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            photo = queue.get_nowait()
            try:
                outcome = await asyncio.wait_for(one_user(http, api, photo), timeout=120)
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = Outcome(photo.name, "failed", False, "-", "-", 0.0, type(exc).__name__)
            outcomes.append(outcome)
            mark = "hit " if outcome.cache_hit else "miss"
            what = outcome.category if outcome.status == "done" else f"FAILED {outcome.error}"
            print(f"  [{len(outcomes):>3}/{len(photos)}] {mark} {outcome.source:<8} {outcome.latency_s * 1000:>7.0f} ms"
                  f"  {outcome.photo[:28]:<28} {what}", flush=True)

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(user(http) for _ in range(users)))
    return outcomes


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(outcomes: list[Outcome], calls: int | None) -> dict[str, Any]:
    done = [o for o in outcomes if o.status == "done"]
    hits = [o.latency_s * 1000 for o in done if o.cache_hit]
    misses = [o.latency_s * 1000 for o in done if not o.cache_hit]
    summary: dict[str, Any] = {
        "jobs": len(outcomes), "done": len(done), "failed": len(outcomes) - len(done),
        "cache_hit_rate": round(len(hits) / len(done), 3) if done else 0.0,
        "model_calls": calls, "model_calls_saved": (len(outcomes) - calls) if calls is not None else None,
        "answered_by": sorted({o.answered_by for o in done if o.answered_by}),
        "hit_ms": {"p50": round(percentile(hits, 0.5)), "p95": round(percentile(hits, 0.95)), "n": len(hits)}
        if hits else None,
        "miss_ms": {"p50": round(percentile(misses, 0.5)), "p95": round(percentile(misses, 0.95)), "n": len(misses)}
        if misses else None,
    }
    return summary


async def main_async(args: argparse.Namespace) -> int:
    settings = load_settings()
    print("vision model:", settings.vision_model, "at", settings.openai_base_url,
          "(the local stack's SIMULATOR, not a real model)" if "8090" in (settings.openai_base_url or "") else "")
    await start_pipeline(settings, args.workers)
    photos = pick_photos(args.photos, args.distinct, args.reuploads, args.seed)
    distinct = len(set(photos))
    print(f"\n{len(photos)} uploads ({distinct} distinct photos from {args.photos} + {len(photos) - distinct} "
          f"re-uploads) by {args.users} concurrent users:")
    simulator = Simulator.of(settings.openai_base_url)
    before = await simulator.calls_or_none()
    metrics_before = await metrics_snapshot(settings, args.workers)
    started = time.monotonic()
    outcomes = await crowd(settings, photos, args.users)
    after = await simulator.calls_or_none()
    metrics_after = await metrics_snapshot(settings, args.workers)
    summary = summarize(outcomes, after - before if before is not None and after is not None else None)
    summary["wall_s"] = round(time.monotonic() - started, 1)
    print("\nsummary")
    print(f"  jobs {summary['jobs']}: done {summary['done']}, failed {summary['failed']}")
    print(f"  cache hit rate {summary['cache_hit_rate']:.0%}")
    if summary["model_calls"] is not None:
        print(f"  model calls {summary['model_calls']} (saved {summary['model_calls_saved']} of {summary['jobs']})")
    for label in ("hit_ms", "miss_ms"):
        if summary[label]:
            s = summary[label]
            print(f"  {label[:-3]:<4} latency p50 {s['p50']} ms, p95 {s['p95']} ms  (n={s['n']})")
    print(f"  wall time {summary['wall_s']} s")
    if summary["answered_by"]:
        print(f"  answered by {', '.join(summary['answered_by'])}")
    print_costs(summary, metrics_before, metrics_after)
    if any("(simulator)" in name for name in summary["answered_by"]):
        print("  NOTE: these answers come from the vision-model SIMULATOR (a stand-in that guesses), "
              "not from a real model")
    if args.json:
        print(json.dumps(summary))
    print(f"\nweb page: http://{settings.api_host}:{settings.api_port}/   (make stack-down stops everything)")
    return 0 if summary["failed"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the pipeline with a crowd of simulated app users.")
    parser.add_argument("--photos", type=Path, default=SAMPLES_DIR,
                        help="a folder of images, searched recursively (default: the shipped samples/waste)")
    parser.add_argument("--distinct", type=int, default=36, help="distinct photos")
    parser.add_argument("--reuploads", type=int, default=24, help="re-uploads of photos already sent")
    parser.add_argument("--users", type=int, default=8, help="concurrent users")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"worker processes in the demo's group (default {DEFAULT_WORKERS}: one per core)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--json", action="store_true", help="also print the summary as JSON")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())

"""CPU per event of the bench's workers on the decode path, per thread, under a paced load: a focused measurement.

    python -m bench.cpu_per_event                       2 workers, 20 ev/s for 30 s, twice
    python -m bench.cpu_per_event --workers 1 --rate 10
    python -m bench.cpu_per_event --env STORAGE_EVENTS_ENABLED=false   settings for the workers (env)

The same workers, pool and paced load as ``python -m bench`` (``CONTENT_DIGEST_CACHE=false``: every upload is
decoded), measured in a way that a busy machine disturbs less than a rate: CPU seconds of each worker's threads
from ``/proc/{pid}/task/*/stat`` before the load and after every result is in, divided by the events sent. The
main thread runs the event loop (agents, HTTP, Redis, the producer); the hash threads decode; the Kafka consumer
runs in a thread of its own (Faust's). A run whose workers handled events that are not the bench's (another
group's uploads on the same broker) says so: its figures include that work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    EdgePurger,
    Pipe,
    delete_app_topics,
    delete_prefix,
    log,
    probe_image,
    process_tree,
    start_simulator,
    start_worker,
    uploads_handled,
)
from bench.load import Load, Pool
from bench.workload import phone_uploads
from models.settings import load_settings
from tools.kit import free_port, put_objects, wait_until_partitions_held
from tools.kit import wait_until_pipeline_answers as answers

_TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pids: list[int]) -> dict[str, float]:
    """CPU seconds (user + system) per thread of the workers' process trees: ``main``, ``other`` threads of the
    worker processes, ``children`` (processes they started), ``sys`` (system time of all), and per thread id."""
    out: dict[str, float] = {"main": 0.0, "other": 0.0, "children": 0.0, "sys": 0.0}
    for root in pids:
        for pid in process_tree(root):
            for task in Path(f"/proc/{pid}/task").iterdir():
                try:
                    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                user, system = int(fields[11]) / _TICK, int(fields[12]) / _TICK
                out["sys"] += system
                out[f"thread {pid}/{task.name}"] = user + system
                kind = "children" if pid != root else "main" if int(task.name) == pid else "other"
                out[kind] += user + system
    return out


def per_event(before: dict[str, float], after: dict[str, float], events: int) -> dict[str, float]:
    return {k: round((v - before.get(k, 0.0)) * 1000 / events, 2) for k, v in after.items()}


async def run(args: argparse.Namespace) -> None:
    run_id = secrets.token_hex(4)
    sim = start_simulator(run_id, latency_ms=200)
    settings = load_settings(
        app_id=f"waste-bench-{run_id}", prompt_version=f"bench-{run_id}", worker_web_port=free_port(),
        openai_base_url=sim.openai_base_url, cache_ttl_seconds=3600, api_port=free_port(),
        api_token_secret=secrets.token_hex(16), results_retention_seconds=600, content_digest_cache=False,
        upload_key_pattern=rf"bench/{run_id}/[a-z0-9/_.-]+", rate_limit_analyze=0, rate_limit_upload_complete=0)
    prefix = f"bench/{run_id}/"
    blobs = [p.read_bytes() for p in phone_uploads(args.photos)]
    keys = [f"{prefix}pool/{i:03d}-{c:02d}.jpg" for c in range(args.copies) for i in range(len(blobs))]
    await put_objects(settings, [(k, blobs[i % len(blobs)], "image/jpeg") for i, k in enumerate(keys)], concurrency=8)
    await put_objects(settings, [(f"{prefix}probe.jpg", probe_image(), "image/jpeg")], concurrency=1)
    workers: list[Any] = []
    try:
        workers = [start_worker(settings, i) for i in range(args.workers)]
        pids = [w.pid for w in workers]
        pipe = Pipe(settings)
        async with pipe, EdgePurger(settings) as purger:
            await answers(pipe, workers[0], probe=pipe.probe(f"{prefix}probe.jpg"), settle=False)
            await wait_until_partitions_held(settings, workers)
            load = Load(pipe, purger)
            pool = Pool(keys[len(blobs):])
            await load.burst(keys[: len(blobs)])  # the first uploads: misses, one model call each
            await load.burst([pool.next() for _ in range(len(blobs))])  # warm-up of the hit path
            await asyncio.sleep(2)
            if args.idle:
                c0 = thread_cpu_s(pids)
                await asyncio.sleep(args.idle)
                idle = per_event(c0, thread_cpu_s(pids), 1)
                log(f"idle: CPU ms per second main {idle['main'] / args.idle:.1f}, other threads "
                    f"{idle['other'] / args.idle:.1f}")
            for r in range(args.repeats):
                h0, c0, t0 = await uploads_handled(workers), thread_cpu_s(pids), time.monotonic()
                result = await load.paced(pool, args.rate, args.seconds)
                left = await load.drain(180)
                c1, h1 = thread_cpu_s(pids), await uploads_handled(workers)
                n = len(result.sent)
                ms = per_event(c0, c1, n)
                threads = sorted(((k, v) for k, v in ms.items() if k.startswith("thread")), key=lambda kv: -kv[1])
                latencies = sorted(result.latencies())
                log(f"run {r + 1}: {args.workers} worker(s), {args.rate} ev/s x {args.seconds:.0f} s: {n} events, "
                    f"missing {result.missing}, unanswered after the drain {left}, handled {h1 - h0:.0f} "
                    f"({h1 - h0 - n:.0f} not the bench's), p50 "
                    f"{latencies[len(latencies) // 2] * 1000 if latencies else float('nan'):.0f} ms, "
                    f"{time.monotonic() - t0:.0f} s")
                log(f"run {r + 1}: workers' CPU ms per event {ms['main'] + ms['other'] + ms['children']:.2f} = main "
                    f"{ms['main']:.2f} + other threads {ms['other']:.2f} + child processes {ms['children']:.2f} "
                    f"(system {ms['sys']:.2f}); busiest threads: "
                    + ", ".join(f"{k.split(' ', 1)[1]} {v:.2f}" for k, v in threads[:6] if v > 0.05))
                await asyncio.sleep(2)
    finally:
        for worker in workers:
            worker.stop()
        sim.stop()
        await delete_prefix(settings, prefix)
        await delete_app_topics(settings, settings.app_id)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_per_event", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes in one group (default 2)")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second, all workers (default 20)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--photos", type=int, default=32, help="distinct photos of the pool (default 32)")
    parser.add_argument("--copies", type=int, default=4, help="object keys per photo (default 4)")
    parser.add_argument("--idle", type=float, default=0.0, help="first measure this many seconds without load")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the workers, as an environment variable (repeatable)")
    args = parser.parse_args(argv)
    for pair in args.env:
        name, _, value = pair.partition("=")
        os.environ[name] = value
    asyncio.run(run(args))


if __name__ == "__main__":
    main()

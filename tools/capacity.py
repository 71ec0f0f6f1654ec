"""The capacity plan of docs/SCALING.md as arithmetic: from measured per-event costs to machines, memory and spend.

    python -m tools.capacity                                # 10 million uploads a day, the defaults below
    python -m tools.capacity --uploads-per-day 1e8 --distinct 0.5 --json

Every input is a flag; the defaults are the measured figures (BENCHMARKS.md run of 2026-11-27, 2-core VM;
docs/NEAR_DUPLICATES.md for the index; CHAOS.md for failover) or a stated assumption. Nothing here is measured
at 10 million a day: it scales measured per-event costs linearly, which holds while no shared piece saturates,
and the output names the pieces that do.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

DAY = 86_400


def plan(a: argparse.Namespace) -> dict[str, Any]:
    avg = a.uploads_per_day / DAY
    peak = avg * a.peak_factor
    misses_peak = peak * a.distinct
    calls_day = a.uploads_per_day * a.distinct
    # Workers: CPU per event of the worker process on the path taken, at a target utilisation, 2 cores each.
    worker_ms = a.decode_share * a.worker_ms_decode + (1 - a.decode_share) * a.worker_ms_digest
    worker_cores = peak * worker_ms / 1000 / a.target_cpu
    workers = max(2, math.ceil(worker_cores / a.cores_per_worker))
    # Model calls in flight at peak = rate x latency; each worker allows VISION_CONCURRENCY (and the classify
    # agent's CLASSIFY_CONCURRENCY) at once.
    in_flight = misses_peak * a.model_latency_s
    per_worker_concurrency = math.ceil(in_flight / workers * 1.5)
    # Redis: entries and index for the TTL's distinct photos, digests for every upload's bytes, markers per job.
    cached = calls_day * a.cache_ttl_days
    gb = 1e9
    redis = {
        "cache_entries_gb": cached * a.entry_bytes / gb,
        "near_index_gb": cached * a.index_bytes / gb,
        "digests_gb": a.uploads_per_day * a.cache_ttl_days * a.digest_bytes / gb,
        "result_markers_gb": a.uploads_per_day * (a.marker_ttl_h / 24) * a.marker_bytes / gb,
        "api_jobs_gb": a.uploads_per_day * (a.api_retention_h / 24) * a.api_job_bytes / gb,
    }
    redis["total_gb"] = sum(redis.values())
    # Kafka: bytes written per upload (all topics, before replication) and the changelog of the results table.
    produce_mb_s = peak * (a.event_bytes + a.distinct * a.miss_event_bytes) / 1e6
    kafka_cpu_cores = peak * a.kafka_ms / 1000 * a.replication / a.target_cpu
    retained_tb = (a.uploads_per_day * (a.event_bytes + a.distinct * a.miss_event_bytes) * a.retention_days
                   + cached * a.changelog_bytes) * a.replication / 1e12
    partitions = max(a.min_partitions, 2 ** math.ceil(math.log2(workers * a.growth)))
    # TABLE_STORE=memory would hold every cached photo of a worker's partitions in Python objects; the default,
    # RocksDB, keeps it on disk and restarts without reading the changelog. A cold start (new machine, lost disk,
    # a partition taken over without a standby) still replays the worker's share of the changelog.
    table_gb_per_worker = cached * a.table_bytes / workers / gb
    cold_start_s = cached * a.changelog_bytes / workers / (a.restore_mb_s * 1e6)
    cost_call = (a.input_tokens * a.price_in + a.output_tokens * a.price_out) / 1e6
    return {
        "inputs": vars(a),
        "traffic": {"uploads_per_s_avg": avg, "uploads_per_s_peak": peak, "model_calls_per_s_peak": misses_peak,
                    "model_calls_per_day": calls_day},
        "workers": {"cpu_ms_per_event": worker_ms, "cores_at_peak": worker_cores, "workers": workers,
                    "cores_per_worker": a.cores_per_worker, "partitions": partitions},
        "model": {"in_flight_at_peak": in_flight, "vision_concurrency_per_worker": per_worker_concurrency,
                  "rpm_at_peak": misses_peak * 60,
                  "tpm_at_peak": misses_peak * 60 * (a.input_tokens + a.output_tokens),
                  "model_calls_per_minute_budget": math.ceil(misses_peak * 60 * 1.5),
                  "model_calls_per_day_budget": math.ceil(calls_day * 1.5),
                  "cost_per_call_usd": cost_call, "cost_per_day_usd": calls_day * cost_call},
        "redis": redis,
        "redis_near_index_slot_gb": redis["near_index_gb"],
        "kafka": {"produce_mb_s_peak": produce_mb_s, "broker_cpu_cores": kafka_cpu_cores,
                  "retained_tb": retained_tb, "brokers": max(3, math.ceil(kafka_cpu_cores / 4))},
        "tables": {"cached_photos": cached, "memory_gb_per_worker_if_memory_store": table_gb_per_worker,
                   "cold_start_replay_s_per_worker": cold_start_s},
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    f = p.add_argument
    f("--uploads-per-day", type=float, default=10e6)
    f("--peak-factor", type=float, default=3.0, help="busiest hour / daily average (assumption)")
    f("--distinct", type=float, default=0.5, help="share of uploads that are new photos: paid calls (assumption)")
    f("--decode-share", type=float, default=0.9, help="share of uploads decoded (not byte-identical repeats)")
    f("--worker-ms-decode", type=float, default=32.4, help="worker CPU ms per decoded upload (BENCHMARKS.md)")
    f("--worker-ms-digest", type=float, default=7.7, help="worker CPU ms per byte-identical upload (BENCHMARKS.md)")
    f("--cores-per-worker", type=int, default=2, help="a worker process uses ~1.84 cores (hash threads)")
    f("--target-cpu", type=float, default=0.6, help="CPU use planned at peak")
    f("--model-latency-s", type=float, default=3.0, help="a real vision call, p50-p90 (assumption)")
    f("--cache-ttl-days", type=float, default=7.0)
    f("--entry-bytes", type=float, default=900, help="one cache:image:hash entry with key and overhead")
    f("--index-bytes", type=float, default=2_800, help="near-index memory per cached pHash (NEAR_DUPLICATES.md)")
    f("--digest-bytes", type=float, default=200, help="one digest -> pHash key")
    f("--marker-ttl-h", type=float, default=24.0)
    f("--marker-bytes", type=float, default=120)
    f("--api-retention-h", type=float, default=1.0, help="RESULTS_RETENTION_SECONDS (job record + result)")
    f("--api-job-bytes", type=float, default=2_500)
    f("--event-bytes", type=float, default=3_500, help="uploads + hashed + result events of one upload")
    f("--miss-event-bytes", type=float, default=4_500, help="vision request + table changelogs of a miss")
    f("--changelog-bytes", type=float, default=1_000, help="one results-by-phash changelog record")
    f("--table-bytes", type=float, default=2_500, help="one table entry in the worker's memory (Python objects)")
    f("--restore-mb-s", type=float, default=6.0,
      help="changelog replay rate of one worker's cold start (docs/SCALING.md, Tables: ~8,600 entries/s)")
    f("--kafka-ms", type=float, default=2.5, help="broker CPU ms per upload, one replica (BENCHMARKS.md)")
    f("--replication", type=int, default=3)
    f("--retention-days", type=float, default=1.0, help="retention of the pipeline's topics (not the changelog)")
    f("--min-partitions", type=int, default=32)
    f("--growth", type=float, default=4.0, help="worker count the partitions must allow, x today's")
    f("--input-tokens", type=float, default=500, help="prompt + schema + 85 image tokens (detail low)")
    f("--output-tokens", type=float, default=120)
    f("--price-in", type=float, default=2.50, help="dollars per 1M input tokens (MODEL_PRICE_INPUT_PER_1M_TOKENS)")
    f("--price-out", type=float, default=10.00, help="dollars per 1M output tokens")
    f("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    as_json = args.json
    del args.json
    result = plan(args)
    if as_json:
        print(json.dumps(result, indent=2))
        return 0
    for section, values in result.items():
        if section == "inputs":
            continue
        if isinstance(values, dict):
            print(f"{section}:")
            for k, v in values.items():
                if isinstance(v, float):
                    print(f"  {k:38} {v:,.4f}" if abs(v) < 1 else f"  {k:38} {v:,.1f}")
                else:
                    print(f"  {k:38} {v:,}")
        else:
            print(f"{section}: {values:,.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

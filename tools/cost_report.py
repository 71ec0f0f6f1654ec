"""The original design's cost table per 10,000 requests, beside the one measured from a run's metrics.

    python -m tools.cost_report                                  # the worker's and the edge's /metrics now
    python -m tools.cost_report --save before.json               # snapshot, run something, then:
    python -m tools.cost_report --baseline before.json           # the table for what happened in between
    python -m tools.cost_report --worker-metrics file.txt --edge-metrics none

Measured: model dollars are the worker's ``waste_model_spent_dollars_total`` (each answer's billed tokens at the
price table, MODEL_PRICE_*_PER_1M_TOKENS); requests are its terminal results; S3 GETs are the edge's origin
requests plus the worker's direct S3 reads; CDN egress and requests are what the edge served (its exporter,
tools/edge_exporter.py). AWS prices are the original design's (docs/COST.md names them). Savings per tier come
from ``waste_model_saved_dollars_total{source}`` (the cost of the call each hit reused).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

PER = 10_000
# The original design's prices (DESIGN.md section 5): per GB decimal, per request.
S3_GET_PER_1000 = 0.0004
S3_TRANSFER_PER_GB = 0.126
CLOUDFRONT_TRANSFER_PER_GB = 0.085
CLOUDFRONT_REQUESTS_PER_10000 = 0.0075
ORIGINAL_MODEL_CALL = 0.01
ORIGINAL_HIT_RATE = 0.70
ORIGINAL_IMAGE_BYTES = 2_000_000

Samples = dict[str, float]  # "name{label="value",...}" -> value


def parse_metrics(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = float(s.value)
    return samples


def read_metrics(source: str, timeout: float = 10.0) -> Samples:
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=timeout) as resp:  # noqa: S310 (an operator's own URL)
            return parse_metrics(resp.read().decode())
    return parse_metrics(Path(source).read_text())


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of every sample of ``name`` whose labels include ``labels``."""
    out = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        have = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if part)
        if all(have.get(k) == f'"{v}"' for k, v in labels.items()):
            out += value
    return out


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base == name:
            have = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if part)
            out[have.get(label, '""').strip('"')] += value
    return dict(out)


def minus(after: Samples, before: Samples | None) -> Samples:
    if not before:
        return after
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


@dataclass
class Row:
    item: str
    quantity: str
    dollars: float


@dataclass
class Report:
    requests: float
    hit_rate: float | None
    edge_hit_rate: float | None
    model_calls: float
    cost_per_call: float | None
    original: list[Row] = field(default_factory=list)
    measured: list[Row] = field(default_factory=list)
    saved: dict[str, float] = field(default_factory=dict)
    digest_hits: float = 0.0
    notes: list[str] = field(default_factory=list)

    def total(self, rows: list[Row]) -> float:
        return sum(r.dollars for r in rows)


def original_rows() -> list[Row]:
    calls = PER * (1 - ORIGINAL_HIT_RATE)
    gb = PER * ORIGINAL_IMAGE_BYTES / 1e9
    origin_gets = PER * (1 - ORIGINAL_HIT_RATE)
    return [
        Row("CDN egress", f"{gb:.0f} GB", gb * CLOUDFRONT_TRANSFER_PER_GB),
        Row("CDN requests", f"{PER:,}", PER / 10_000 * CLOUDFRONT_REQUESTS_PER_10000),
        Row("S3 GETs", f"{origin_gets:,.0f}", origin_gets / 1000 * S3_GET_PER_1000),
        Row("model calls", f"{calls:,.0f} x ${ORIGINAL_MODEL_CALL:.4f}", calls * ORIGINAL_MODEL_CALL),
    ]


def build_report(worker: Samples, edge: Samples | None) -> Report:
    results = total(worker, "waste_results_total")
    done = by_label({k: v for k, v in worker.items() if 'status="done"' in k}, "waste_results_total", "source")
    done_total = sum(done.values())
    hits = done_total - done.get("model", 0.0)
    spent = total(worker, "waste_model_spent_dollars_total")
    calls = total(worker, "waste_model_calls_total")
    answered = total(worker, "waste_model_call_cost_dollars_count")
    answered_dollars = total(worker, "waste_model_call_cost_dollars_sum")
    report = Report(
        requests=results, hit_rate=hits / done_total if done_total else None, edge_hit_rate=None,
        model_calls=calls, cost_per_call=answered_dollars / answered if answered else None,
        original=original_rows(),
        saved=by_label(worker, "waste_model_saved_dollars_total", "source"),
        digest_hits=total(worker, "waste_hash_total", path="digest"),
    )
    if results <= 0:
        report.notes.append("no results in these metrics: nothing to measure")
        return report
    scale = PER / results
    s3_direct = total(worker, "waste_fetch_total", source="s3") + total(worker, "waste_refetch_total", source="s3")
    if edge:
        edge_requests = total(edge, "waste_edge_requests_total")
        edge_bytes = total(edge, "waste_edge_bytes_served_total")
        origin = total(edge, "waste_edge_origin_requests_total")
        edge_hits = total(edge, "waste_edge_cache_lookups_total", result="hit")
        edge_lookups = edge_hits + total(edge, "waste_edge_cache_lookups_total", result="miss")
        report.edge_hit_rate = edge_hits / edge_lookups if edge_lookups else None
        gb = edge_bytes * scale / 1e9
        report.measured += [
            Row("CDN egress", f"{gb:.2f} GB", gb * CLOUDFRONT_TRANSFER_PER_GB),
            Row("CDN requests", f"{edge_requests * scale:,.0f}", edge_requests * scale / 10_000
                * CLOUDFRONT_REQUESTS_PER_10000),
        ]
    else:
        # The worker's own reads through the edge: what a shared or absent edge exporter cannot attribute to this run.
        reads = total(worker, "waste_fetch_total", source="cdn") + total(worker, "waste_refetch_total", source="cdn")
        hits = (total(worker, "waste_fetch_total", source="cdn", cdn_cache="hit")
                + total(worker, "waste_refetch_total", source="cdn", cdn_cache="hit"))
        origin = reads - hits
        report.edge_hit_rate = hits / reads if reads else None
        gb = total(worker, "waste_fetched_bytes_total", source="cdn") * scale / 1e9
        report.measured += [
            Row("CDN egress", f"{gb:.2f} GB", gb * CLOUDFRONT_TRANSFER_PER_GB),
            Row("CDN requests", f"{reads * scale:,.0f}", reads * scale / 10_000 * CLOUDFRONT_REQUESTS_PER_10000),
        ]
        report.notes.append("CDN rows from the worker's own reads through the edge (no edge metrics): the app's "
                            "reads of image_url are not in them")
    gets = (origin + s3_direct) * scale
    report.measured.append(Row("S3 GETs", f"{gets:,.0f}", gets / 1000 * S3_GET_PER_1000))
    per_call = f"${report.cost_per_call:.5f}" if report.cost_per_call is not None else "n/a"
    report.measured.append(Row("model calls", f"{calls * scale:,.0f} x {per_call}", spent * scale))
    return report


def render(report: Report) -> str:
    lines = []
    hit = f"{report.hit_rate:.1%}" if report.hit_rate is not None else "n/a"
    edge_hit = f"{report.edge_hit_rate:.1%}" if report.edge_hit_rate is not None else "n/a"
    lines.append(f"cost per {PER:,} requests: the original design beside this run ({report.requests:,.0f} requests, "
                 f"{report.model_calls:,.0f} model calls)")
    lines.append("")
    measured = {r.item: r for r in report.measured}
    lines.append(f"  {'':<14}{'original design':>34}   {'measured':>36}")
    for o in report.original:
        m = measured.get(o.item)
        right = f"{m.quantity:>25} ${m.dollars:>9.4f}" if m else f"{'not measured':>25} {'':>10}"
        lines.append(f"  {o.item:<14}{o.quantity:>23} ${o.dollars:>9.4f}   {right}")
    lines.append(f"  {'total':<14}{'':>23} ${report.total(report.original):>9.4f}   "
                 f"{'':>25} ${report.total(report.measured):>9.4f}")
    lines.append("")
    lines.append(f"  result-cache hit rate: original {ORIGINAL_HIT_RATE:.0%}, measured {hit}; "
                 f"edge hit rate (all reads): measured {edge_hit}")
    if report.cost_per_call is not None:
        lines.append(f"  a model call: original ${ORIGINAL_MODEL_CALL:.4f}, measured ${report.cost_per_call:.5f} "
                     "(billed tokens x price table)")
        if report.hit_rate is not None:
            what_if = PER * (1 - ORIGINAL_HIT_RATE) * report.cost_per_call
            at_original_price = PER * (1 - report.hit_rate) * ORIGINAL_MODEL_CALL
            lines.append(f"  the difference, split: measured price at the original 70% hits ${what_if:.2f}; "
                         f"original $0.01 price at the measured {hit} hits ${at_original_price:.2f}")
    spent_saved = sum(report.saved.values())
    if report.saved:
        tiers = ", ".join(f"{k} ${v:.4f}" for k, v in sorted(report.saved.items()))
        lines.append(f"  saved by the cache tiers: ${spent_saved:.4f} ({tiers}); digest: "
                     f"{report.digest_hits:,.0f} byte-identical re-uploads skipped the decode ($0 of model calls: "
                     "their results came from the tiers above)")
    for note in report.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker-metrics", default="http://127.0.0.1:6066/metrics", help="URL or file")
    parser.add_argument("--edge-metrics", default="http://127.0.0.1:9131/metrics",
                        help="URL or file of tools.edge_exporter; 'none' to leave the edge out")
    parser.add_argument("--save", type=Path, help="write a snapshot of both to this JSON file and exit")
    parser.add_argument("--baseline", type=Path, help="report the difference from this snapshot")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        worker = read_metrics(args.worker_metrics)
    except OSError as exc:
        print(f"cannot read the worker's metrics at {args.worker_metrics}: {exc}", file=sys.stderr)
        return 2
    edge: Samples | None = None
    if args.edge_metrics != "none":
        try:
            edge = read_metrics(args.edge_metrics)
        except OSError as exc:
            print(f"note: no edge metrics at {args.edge_metrics} ({exc})", file=sys.stderr)
    if args.save:
        args.save.write_text(json.dumps({"worker": worker, "edge": edge}))
        return 0
    if args.baseline:
        base: dict[str, Any] = json.loads(args.baseline.read_text())
        worker = minus(worker, base.get("worker"))
        edge = minus(edge, base.get("edge")) if edge is not None else None
    report = build_report(worker, edge)
    if args.json:
        print(json.dumps({**report.__dict__, "original": [r.__dict__ for r in report.original],
                          "measured": [r.__dict__ for r in report.measured]}, default=float))
    else:
        print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

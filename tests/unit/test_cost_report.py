"""tools.cost_report: the original design's table per 10,000 requests beside the one measured from metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools import cost_report

WORKER = """
# TYPE waste_results_total counter
waste_results_total{status="done",source="model"} 20
waste_results_total{status="done",source="redis"} 50
waste_results_total{status="done",source="near"} 20
waste_results_total{status="failed",source="none"} 10
# TYPE waste_model_calls_total counter
waste_model_calls_total{outcome="ok"} 20
waste_model_calls_total{outcome="MODEL_TIMEOUT"} 2
# TYPE waste_model_spent_dollars_total counter
waste_model_spent_dollars_total 0.04
# TYPE waste_model_call_cost_dollars histogram
waste_model_call_cost_dollars_bucket{le="+Inf"} 20
waste_model_call_cost_dollars_count 20
waste_model_call_cost_dollars_sum 0.036
# TYPE waste_model_saved_dollars_total counter
waste_model_saved_dollars_total{source="redis"} 0.09
waste_model_saved_dollars_total{source="near"} 0.036
# TYPE waste_fetch_total counter
waste_fetch_total{source="cdn",cdn_cache="miss"} 95
waste_fetch_total{source="s3",cdn_cache="unknown"} 5
# TYPE waste_hash_total counter
waste_hash_total{path="digest"} 30
"""

EDGE = """
# TYPE waste_edge_requests counter
waste_edge_requests_total 200
# TYPE waste_edge_cache_lookups counter
waste_edge_cache_lookups_total{result="hit"} 105
waste_edge_cache_lookups_total{result="miss"} 95
# TYPE waste_edge_bytes_served counter
waste_edge_bytes_served_total{part="body"} 1.0e8
waste_edge_bytes_served_total{part="header"} 0
# TYPE waste_edge_origin_requests counter
waste_edge_origin_requests_total 95
"""


def test_the_measured_column_scales_the_run_to_10000_requests() -> None:
    report = cost_report.build_report(cost_report.parse_metrics(WORKER), cost_report.parse_metrics(EDGE))
    measured = {r.item: r for r in report.measured}
    assert report.requests == 100 and report.hit_rate == pytest.approx(70 / 90)
    assert report.edge_hit_rate == pytest.approx(105 / 200)
    assert measured["model calls"].dollars == pytest.approx(0.04 * 100)  # spent x 10,000 / 100 requests
    assert report.cost_per_call == pytest.approx(0.0018)
    assert measured["S3 GETs"].dollars == pytest.approx((95 + 5) * 100 / 1000 * 0.0004)
    assert measured["CDN egress"].dollars == pytest.approx(1e8 * 100 / 1e9 * 0.085)
    assert measured["CDN requests"].dollars == pytest.approx(200 * 100 / 10_000 * 0.0075)
    assert report.total(report.original) == pytest.approx(31.7087)  # the design's "about $31.71" with the CDN
    text = cost_report.render(report)
    assert "77.8%" in text and "$0.00180" in text and "digest: 30" in text
    assert "2,200 x $0.00180 $   4.0000" in text  # the measured model line


def test_without_edge_metrics_the_workers_own_reads_are_the_cdn_rows() -> None:
    worker = WORKER + """
# TYPE waste_refetch_total counter
waste_refetch_total{source="cdn",cdn_cache="hit"} 20
# TYPE waste_fetched_bytes_total counter
waste_fetched_bytes_total{source="cdn"} 5.0e7
"""
    report = cost_report.build_report(cost_report.parse_metrics(worker), None)
    measured = {r.item: r for r in report.measured}
    assert measured["CDN requests"].quantity == f"{(95 + 20) * 100:,}"
    assert measured["CDN egress"].dollars == pytest.approx(5e7 * 100 / 1e9 * 0.085)
    assert measured["S3 GETs"].dollars == pytest.approx((95 + 5) * 100 / 1000 * 0.0004)  # edge misses + direct
    assert report.edge_hit_rate == pytest.approx(20 / 115)
    assert "the app's reads of image_url are not in them" in cost_report.render(report)


def test_a_baseline_snapshot_reports_only_what_happened_since(tmp_path: Path) -> None:
    metrics = tmp_path / "worker.txt"
    metrics.write_text(WORKER)
    snapshot = tmp_path / "before.json"
    assert cost_report.main(["--worker-metrics", str(metrics), "--edge-metrics", "none", "--save", str(snapshot)]) == 0
    later = WORKER.replace('source="redis"} 50', 'source="redis"} 60').replace(
        'waste_model_saved_dollars_total{source="redis"} 0.09', 'waste_model_saved_dollars_total{source="redis"} 0.108')
    base = json.loads(snapshot.read_text())["worker"]
    report = cost_report.build_report(cost_report.minus(cost_report.parse_metrics(later), base), None)
    assert report.requests == 10 and report.hit_rate == 1.0
    assert report.saved["redis"] == pytest.approx(0.018)
    assert report.measured[-1].dollars == 0  # no model dollars in between


def test_no_results_is_said_not_divided_by(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert cost_report.main(["--worker-metrics", str(empty), "--edge-metrics", "none"]) == 0
    assert "no results in these metrics" in capsys.readouterr().out


def test_the_demo_prints_what_the_crowd_spent_and_saved(capsys: pytest.CaptureFixture[str]) -> None:
    from tools.demo import print_costs

    before = cost_report.parse_metrics(WORKER)
    after = cost_report.parse_metrics(WORKER.replace("waste_model_spent_dollars_total 0.04",
                                                     "waste_model_spent_dollars_total 0.0475")
                                      .replace('saved_dollars_total{source="redis"} 0.09',
                                               'saved_dollars_total{source="redis"} 0.0918')
                                      .replace('source="model"} 20', 'source="model"} 25')
                                      .replace('source="redis"} 50', 'source="redis"} 51'))
    summary: dict = {}
    print_costs(summary, before, after)
    out = capsys.readouterr().out
    assert "model dollars spent $0.0075, saved $0.0018 (redis $0.0018)" in out
    assert summary["dollars_spent"] == pytest.approx(0.0075)
    assert "cost per 10,000 requests" in out and "(6 requests, 0 model calls)" in out
    print_costs(summary, None, after)
    assert "could not be read" in capsys.readouterr().out

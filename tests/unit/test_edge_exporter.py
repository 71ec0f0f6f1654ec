"""tools.edge_exporter: varnishstat's counters as the edge metrics the alerts and the dashboard read."""

from __future__ import annotations

import subprocess

from prometheus_client import CollectorRegistry, generate_latest

from tools.edge_exporter import VarnishCollector, parse_varnishstat

V1 = {"version": 1, "timestamp": "2026-11-30T06:05:08", "counters": {
    "MAIN.client_req": {"description": "Good client requests received", "flag": "c", "format": "i", "value": 1010},
    "MAIN.cache_hit": {"flag": "c", "format": "i", "value": 549},
    "MAIN.cache_miss": {"flag": "c", "format": "i", "value": 446},
    "MAIN.cache_hitpass": {"flag": "c", "format": "i", "value": 3},
    "MAIN.s_resp_hdrbytes": {"flag": "c", "format": "B", "value": 734237},
    "MAIN.s_resp_bodybytes": {"flag": "c", "format": "B", "value": 290456364},
    "MAIN.backend_req": {"flag": "c", "format": "i", "value": 446},
    "MAIN.backend_fail": {"flag": "c", "format": "i", "value": 1},
    "MAIN.n_object": {"flag": "g", "format": "i", "value": 428},
    "MGT.uptime": {"flag": "c", "format": "d", "value": 310},
}}


def scrape(read) -> dict[str, float]:  # type: ignore[no-untyped-def]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(VarnishCollector(read))
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_counters_become_the_edge_metrics() -> None:
    metrics = scrape(lambda: V1)
    assert metrics["waste_edge_up"] == 1
    assert metrics["waste_edge_requests_total"] == 1010
    assert metrics['waste_edge_cache_lookups_total{result="hit"}'] == 549
    assert metrics['waste_edge_cache_lookups_total{result="miss"}'] == 446
    assert metrics['waste_edge_bytes_served_total{part="body"}'] == 290456364
    assert metrics["waste_edge_origin_requests_total"] == 446
    assert metrics["waste_edge_cached_objects"] == 428


def test_the_flat_format_of_older_varnish_is_read_too() -> None:
    flat = {"timestamp": "x", **V1["counters"]}  # type: ignore[dict-item]
    assert parse_varnishstat(flat)["MAIN.cache_hit"] == 549


def test_a_failing_varnishstat_is_a_gap_not_zeros() -> None:
    def broken() -> dict:  # type: ignore[type-arg]
        raise subprocess.CalledProcessError(1, ["varnishstat"])

    metrics = scrape(broken)
    assert metrics == {"waste_edge_up": 0}

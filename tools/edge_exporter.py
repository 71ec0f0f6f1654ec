"""Prometheus metrics of the local CDN edge (Varnish), read from ``varnishstat -j`` at every scrape.

CloudFront reports requests, bytes and its hit rate to CloudWatch; the local edge's counters live in Varnish's
shared memory, which ``varnishstat`` reads. This exporter turns them into the metrics the alert rules and the
dashboard use (monitoring/), so the same "edge hit rate under 70%" rule can be tested on the local stack:

    python -m tools.edge_exporter --varnish-dir /tmp/waste-edge-0-6081/varnish --port 9131
    python -m tools.edge_exporter --from-file varnishstat.json --port 9131   # a JSON another process writes

``scripts/stack.sh up`` starts it on 127.0.0.1:$EDGE_EXPORTER_PORT (9131); in docker-compose.kafka.yml the edge's
container writes the JSON and this reads it (--from-file). A scrape whose varnishstat fails answers
``waste_edge_up 0`` and no counters (a gap, never a reset to zero).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric

DEFAULT_PORT = 9131
VARNISHSTAT_TIMEOUT_SECONDS = 5.0


def parse_varnishstat(doc: dict[str, Any]) -> dict[str, int]:
    """Counter name -> value, from Varnish 6.5+'s ``{"version": 1, "counters": {...}}`` or the older flat form."""
    nested = doc.get("counters")
    counters: dict[str, Any] = nested if isinstance(nested, dict) else doc
    values: dict[str, int] = {}
    for name, entry in counters.items():
        if isinstance(entry, dict) and "value" in entry:
            values[name] = int(entry["value"])
    return values


def edge_metrics(values: dict[str, int]) -> list[Metric]:
    """The exported families, from varnishstat's MAIN counters."""
    def get(name: str) -> int:
        return values.get(f"MAIN.{name}", 0)

    requests = CounterMetricFamily("waste_edge_requests", "Client requests the edge received (MAIN.client_req)")
    requests.add_metric([], get("client_req"))
    lookups = CounterMetricFamily(
        "waste_edge_cache_lookups", "Cache lookups by result: hit, miss (fetched from the origin), hitpass",
        labels=["result"])
    for result in ("hit", "miss", "hitpass"):
        lookups.add_metric([result], get(f"cache_{result}"))
    served = CounterMetricFamily("waste_edge_bytes_served", "Bytes the edge sent to clients, by part",
                                 labels=["part"])
    served.add_metric(["header"], get("s_resp_hdrbytes"))
    served.add_metric(["body"], get("s_resp_bodybytes"))
    origin = CounterMetricFamily("waste_edge_origin_requests", "Requests the edge sent to the origin (S3 GETs)")
    origin.add_metric([], get("backend_req"))
    origin_failures = CounterMetricFamily("waste_edge_origin_failures", "Origin connections that failed")
    origin_failures.add_metric([], get("backend_fail"))
    objects = GaugeMetricFamily("waste_edge_cached_objects", "Objects in the edge's cache")
    objects.add_metric([], get("n_object"))
    return [requests, lookups, served, origin, origin_failures, objects]


class VarnishCollector:
    """Reads the counters at collect time through ``read`` (a function returning varnishstat's JSON)."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("waste_edge_up", "1 when varnishstat could be read at this scrape")
        try:
            values = parse_varnishstat(self._read())
        except (OSError, ValueError, subprocess.SubprocessError):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1 if "MAIN.client_req" in values else 0)
        yield up
        if "MAIN.client_req" in values:
            yield from edge_metrics(values)


def varnishstat_reader(varnish_dir: str | None) -> Callable[[], dict[str, Any]]:
    command = ["varnishstat", "-j", *(["-n", varnish_dir] if varnish_dir else [])]

    def read() -> dict[str, Any]:
        out = subprocess.run(command, capture_output=True, text=True, check=True,
                             timeout=VARNISHSTAT_TIMEOUT_SECONDS).stdout
        doc: dict[str, Any] = json.loads(out)
        return doc

    return read


def file_reader(path: Path) -> Callable[[], dict[str, Any]]:
    def read() -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc

    return read


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prometheus exporter for the local Varnish edge")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--varnish-dir", help="varnishd's -n working directory")
    source.add_argument("--from-file", type=Path, help="read varnishstat -j output from this file instead")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    registry = CollectorRegistry(auto_describe=False)
    read = file_reader(args.from_file) if args.from_file else varnishstat_reader(args.varnish_dir)
    registry.register(VarnishCollector(read))
    server, thread = start_http_server(args.port, addr=args.host, registry=registry)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(f"edge exporter on http://{args.host}:{args.port}/metrics", flush=True)
    stop.wait()
    server.shutdown()
    thread.join(timeout=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Prometheus metrics. One registry per app, so several apps in one process (tests) do not collide."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "api_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "api_http_request_duration_seconds", "Time to answer an HTTP request", ["route"], registry=self.registry
        )
        self.open_sockets = Gauge("api_websockets_open", "Open WebSocket connections", registry=self.registry)
        self.result_delivery = Histogram(
            "api_result_delivery_seconds",
            "From result.completed_at (set by the pipeline) to the WebSocket send",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.results_consumed = Counter(
            "api_results_consumed", "Results read from the results topic", registry=self.registry
        )
        self.uploads_published = Counter(
            "api_uploads_published", "Upload-complete events published", registry=self.registry
        )

    def render(self) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def metrics_middleware(metrics: Metrics) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            # The route template, not the path: job ids must not become label values.
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            metrics.requests.labels(request.method, route, str(status)).inc()
            if status != 101:  # a WebSocket's "duration" is its lifetime, not a response time
                metrics.request_seconds.labels(route).observe(time.perf_counter() - started)

    return middleware

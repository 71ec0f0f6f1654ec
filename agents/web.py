"""Worker HTTP pages on the Faust web port: Prometheus metrics and readiness."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams import topics
from streams.app import app


@app.page("/metrics")
async def metrics_page(web: Any, request: Any) -> Any:
    return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])


@app.page("/readyz")
async def readiness_page(web: Any, request: Any) -> Any:
    """200 once the worker holds partitions and has restored its tables, 503 before and during a rebalance.

    The body lists the partitions this worker holds and the partition counts it knew when it joined, per topic
    it reads. In a group of several workers each holds only some; a lone worker should hold them all.
    """
    consumer = app.consumer
    held: dict[str, list[int]] = {}
    try:
        assignment = consumer.assignment()
    except Exception:  # the consumer has not started yet
        assignment = set()
    for tp in assignment:
        held.setdefault(tp.topic, []).append(tp.partition)
    reads = [*topics.WORKER_SOURCES, *(table.changelog_topic.get_topic_name() for table in app.tables.values())]
    # in_recovery covers every rebalance's table recovery (recovery.completed is set once and never cleared).
    ready = (bool(held) and not app.rebalancing and not app.in_recovery
             and app.tables.recovery.completed.is_set())  # type: ignore[attr-defined]
    body = {
        "ready": ready,
        "generation": app.consumer_generation_id,
        "partitions_held": {topic: sorted(held.get(topic, [])) for topic in reads},
        "partition_counts": {topic: consumer.topic_partitions(topic) if held else None for topic in reads},
    }
    return web.json(body, status=200 if ready else 503)

"""Consumer lag per partition this worker holds, as ``waste_consumer_lag{topic,partition}`` (monitoring/alerts.yml).

Lag = the partition's high-water mark minus the group's committed offset (Faust's committed offsets are "next
offset to read", like Kafka's). Each worker reports the partitions it holds; a partition being handed over is
reported by nobody for a moment. A dead worker reports nothing: the WorkerDown alert covers that.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from streams import metrics, topics
from streams.app import app

log = logging.getLogger(__name__)

LAG_INTERVAL_SECONDS = 15.0

def partition_lags(consumer: Any, sources: Iterable[str] = topics.WORKER_SOURCES) -> dict[tuple[str, int], int]:
    """(topic, partition) -> events not yet committed, for the partitions of ``sources`` the consumer holds."""
    wanted = set(sources)
    lags: dict[tuple[str, int], int] = {}
    for tp in consumer.assignment():
        if tp.topic not in wanted:
            continue
        highwater = consumer.highwater(tp)
        if highwater is None:  # not fetched from yet
            continue
        committed = consumer._committed_offset.get(tp)
        if committed is None:  # nothing committed by this worker yet: what it has read is the best it knows
            read = consumer._read_offset.get(tp)
            committed = read + 1 if read is not None else None
        if committed is None:
            continue
        lags[(tp.topic, tp.partition)] = max(0, int(highwater) - int(committed))
    return lags


def publish_lags(lags: dict[tuple[str, int], int], reported: set[tuple[str, str]]) -> None:
    """Set the gauge for these partitions and drop the ones this worker no longer holds (``reported``: the
    (topic, partition) labels set last time; updated)."""
    current = {(topic, str(partition)) for topic, partition in lags}
    for labels in reported - current:
        try:
            metrics.consumer_lag.remove(*labels)
        except KeyError:
            pass
    for (topic, partition), lag in lags.items():
        metrics.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)
    reported.clear()
    reported.update(current)


@app.timer(interval=LAG_INTERVAL_SECONDS)
async def export_consumer_lag() -> None:
    try:
        lags = partition_lags(app.consumer)
    except Exception as exc:  # the consumer is starting or rebalancing: skip this round
        log.debug("consumer lag not available: %s", exc)
        return
    publish_lags(lags, (await app.context.ready()).timers.lag_reported)

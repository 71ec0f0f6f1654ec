"""Consumer lag per partition this worker holds, as ``waste_consumer_lag{topic,partition}``, and the committed
offset it is measured from, as ``waste_consumer_committed_offset{topic,partition}`` (monitoring/alerts.yml).

Lag = the partition's high-water mark minus the group's committed offset (Faust's committed offsets are "next
offset to read", like Kafka's). Each worker reports the partitions it holds; a partition being handed over is
reported by nobody for a moment. A dead worker reports nothing: the WorkerDown alert covers that. Lag alone
cannot tell a busy partition from a stuck one (events in progress keep it above 0); a lag with a committed offset
that has not moved for minutes can: the PartitionStalled alert (a partition the worker holds but no longer
processes, as faust-streaming's dropped events once caused: streams/faust_fixes.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from streams import metrics, topics
from streams.app import app

log = logging.getLogger(__name__)

LAG_INTERVAL_SECONDS = 15.0

class PartitionLag(NamedTuple):
    lag: int  # events not yet committed
    committed: int  # the offset the lag is measured from: the next event to process


def partition_lags(consumer: Any, sources: Iterable[str] = topics.WORKER_SOURCES,
                   end_offsets: Mapping[Any, int] | None = None) -> dict[tuple[str, int], PartitionLag]:
    """(topic, partition) -> lag and committed offset, for the partitions of ``sources`` the consumer holds.

    ``end_offsets``: the broker's end offsets of partitions not fetched from yet (no high-water mark known): a
    partition held but never fetched is the stuck kind the lag must show, not hide."""
    wanted = set(sources)
    lags: dict[tuple[str, int], PartitionLag] = {}
    for tp in consumer.assignment():
        if tp.topic not in wanted:
            continue
        highwater = consumer.highwater(tp)
        if highwater is None:
            highwater = (end_offsets or {}).get(tp)
        if highwater is None:  # not fetched from yet, and no end offset asked for
            continue
        committed = consumer._committed_offset.get(tp)
        if committed is None:  # nothing committed by this worker yet: what it has read is the best it knows
            read = consumer._read_offset.get(tp)
            committed = read + 1 if read is not None else None
        if committed is None:
            continue
        lags[(tp.topic, tp.partition)] = PartitionLag(max(0, int(highwater) - int(committed)), int(committed))
    return lags


def publish_lags(lags: dict[tuple[str, int], PartitionLag], reported: set[tuple[str, str]]) -> None:
    """Set the gauges for these partitions and drop the ones this worker no longer holds (``reported``: the
    (topic, partition) labels set last time; updated)."""
    current = {(topic, str(partition)) for topic, partition in lags}
    for labels in reported - current:
        for gauge in (metrics.consumer_lag, metrics.consumer_committed_offset):
            try:
                gauge.remove(*labels)
            except KeyError:
                pass
    for (topic, partition), (lag, committed) in lags.items():
        metrics.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)
        metrics.consumer_committed_offset.labels(topic=topic, partition=str(partition)).set(committed)
    reported.clear()
    reported.update(current)


@app.timer(interval=LAG_INTERVAL_SECONDS)
async def export_consumer_lag() -> None:
    consumer = app.consumer
    try:
        unfetched = [tp for tp in consumer.assignment()
                     if tp.topic in topics.WORKER_SOURCES and consumer.highwater(tp) is None]
        lags = partition_lags(consumer, end_offsets=await consumer.highwaters(*unfetched) if unfetched else None)
    except Exception as exc:  # the consumer is starting or rebalancing: skip this round
        log.debug("consumer lag not available: %s", exc)
        return
    publish_lags(lags, (await app.context.ready()).timers.lag_reported)

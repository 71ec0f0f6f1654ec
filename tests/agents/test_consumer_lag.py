"""waste_consumer_lag: high-water mark minus committed offset, for the partitions this worker holds."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from faust.types import TP
from prometheus_client import REGISTRY

from agents.consumer_lag import PartitionLag, partition_lags, publish_lags
from streams import topics


class FakeConsumer:
    def __init__(self, held: dict[TP, tuple[int | None, int | None, int | None]]) -> None:
        self._held = held  # tp -> (highwater, committed, last read)
        self._committed_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self._read_offset: dict[TP, int | None] = defaultdict(lambda: None)
        for tp, (_, committed, read) in held.items():
            self._committed_offset[tp] = committed
            self._read_offset[tp] = read

    def assignment(self) -> set[TP]:
        return set(self._held)

    def highwater(self, tp: TP) -> Any:
        return self._held[tp][0]


def lag(topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value("waste_consumer_lag", {"topic": topic, "partition": str(partition)})


def committed(topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value("waste_consumer_committed_offset",
                                     {"topic": topic, "partition": str(partition)})


def test_lag_is_what_the_group_has_not_committed() -> None:
    consumer = FakeConsumer({
        TP(topics.UPLOADS_COMPLETED, 0): (120, 100, 110),  # 20 behind what is committed
        TP(topics.UPLOADS_COMPLETED, 1): (50, None, 44),  # nothing committed yet: read + 1
        TP(topics.VISION_REQUESTS, 3): (None, 5, 4),  # never fetched: unknown, not zero
        TP("waste-analysis-results_by_phash-changelog", 0): (900, 0, 0),  # a changelog: not ours to report
    })
    assert partition_lags(consumer) == {(topics.UPLOADS_COMPLETED, 0): PartitionLag(20, 100),
                                        (topics.UPLOADS_COMPLETED, 1): PartitionLag(5, 45)}


def test_a_partition_held_but_never_fetched_shows_its_lag_from_the_broker_s_end_offset() -> None:
    never_fetched = TP(topics.UPLOADS_COMPLETED, 2)
    consumer = FakeConsumer({never_fetched: (None, 100, None)})
    assert partition_lags(consumer) == {}  # no high-water mark: nothing to compute from
    assert partition_lags(consumer, end_offsets={never_fetched: 125}) == {
        (topics.UPLOADS_COMPLETED, 2): PartitionLag(25, 100)}


def test_partitions_handed_to_another_worker_stop_being_reported() -> None:
    reported: set[tuple[str, str]] = set()
    publish_lags({(topics.IMAGES_HASHED, 0): PartitionLag(7, 70), (topics.IMAGES_HASHED, 1): PartitionLag(3, 30)},
                 reported)
    assert (lag(topics.IMAGES_HASHED, 0), lag(topics.IMAGES_HASHED, 1)) == (7, 3)
    assert (committed(topics.IMAGES_HASHED, 0), committed(topics.IMAGES_HASHED, 1)) == (70, 30)
    publish_lags({(topics.IMAGES_HASHED, 1): PartitionLag(0, 33)}, reported)
    assert lag(topics.IMAGES_HASHED, 0) is None and lag(topics.IMAGES_HASHED, 1) == 0
    assert committed(topics.IMAGES_HASHED, 0) is None and committed(topics.IMAGES_HASHED, 1) == 33
    publish_lags({}, reported)

"""The results consumer: reads ``waste.analysis.results`` and hands every result to a callback.

Every API instance must see every result, because a job's sockets may be on any instance. So there is no
consumer group (a shared group would split the partitions between instances) and no committed offsets:
the live consumer starts at the end of each partition. A second, short-lived consumer replays the last
``lookback`` seconds (the results retention) up to that point, so an instance that starts after all others
were down refills Redis with what they missed. Storing is idempotent (the first result wins), and the replay
runs beside the live consumer, so live results never wait behind it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from models.records import AnalysisResult
from streams.topics import ANALYSIS_RESULTS

log = logging.getLogger("api.results")

ResultsCallback = Callable[[list[AnalysisResult]], Awaitable[None]]

ASSIGNMENT_WAIT_S = 10.0
BATCH = 500


class ResultsSource(Protocol):
    async def run(self, on_results: ResultsCallback, ready: asyncio.Event) -> None:
        """Call ``on_results`` for each batch of results until cancelled; set ``ready`` once positioned."""
        ...


class KafkaResultsSource:
    def __init__(self, bootstrap_servers: str, lookback_s: int, client_id: str = "waste-api-results",
                 security: Mapping[str, Any] | None = None) -> None:
        self._bootstrap = bootstrap_servers
        self._security = dict(security or {})  # aiokafka's security_protocol/sasl_* (streams/kafka_security.py)
        self._lookback_s = lookback_s
        self._client_id = client_id

    def _consumer(self, suffix: str = "") -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            **self._security,
            client_id=self._client_id + suffix,
            group_id=None,
            enable_auto_commit=False,
            # Partitions that appear later hold only new results: read them from the start.
            auto_offset_reset="earliest",
            metadata_max_age_ms=10_000,
        )

    async def run(self, on_results: ResultsCallback, ready: asyncio.Event) -> None:
        consumer = self._consumer()
        await consumer.start()
        replay: asyncio.Task[None] | None = None
        try:
            consumer.subscribe([ANALYSIS_RESULTS])
            partitions = await _wait_for_assignment(consumer)
            # Concrete end offsets, not seek_to_end(): that is resolved lazily and could skip a result
            # written right after start-up.
            ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions) if partitions else {}
            for tp, end in ends.items():
                consumer.seek(tp, end)
            if ends:
                replay = asyncio.create_task(self._replay(ends, on_results))
            ready.set()
            while True:
                batch = await consumer.getmany(timeout_ms=1000, max_records=BATCH)
                results = _decode_all(r for records in batch.values() for r in records)
                if results:
                    await on_results(results)
        finally:
            if replay is not None:
                replay.cancel()
                await asyncio.gather(replay, return_exceptions=True)
            await consumer.stop()

    async def _replay(self, ends: dict[TopicPartition, int], on_results: ResultsCallback) -> None:
        consumer = self._consumer("-replay")
        await consumer.start()
        try:
            consumer.assign(list(ends))
            since_ms = int((time.time() - self._lookback_s) * 1000)
            starts = await consumer.offsets_for_times({tp: since_ms for tp in ends})
            todo: dict[TopicPartition, int] = {}
            for tp, end in ends.items():
                start = starts.get(tp)
                if start is not None and start.offset < end:
                    consumer.seek(tp, start.offset)
                    todo[tp] = end
            replayed = 0
            while todo:
                batch = await consumer.getmany(*todo, timeout_ms=1000, max_records=BATCH)
                records = [r for tp, rs in batch.items() for r in rs if r.offset < todo[tp]]
                results = _decode_all(records)
                if results:
                    await on_results(results)
                    replayed += len(results)
                for tp in list(todo):
                    if await consumer.position(tp) >= todo[tp]:
                        del todo[tp]
            log.info("replayed %d result(s) of the last %ss", replayed, self._lookback_s)
        except Exception:  # the live consumer goes on; only late subscribers of missed jobs lose out
            log.exception("replaying recent results failed")
        finally:
            await consumer.stop()


async def _wait_for_assignment(consumer: AIOKafkaConsumer) -> list[TopicPartition]:
    # The no-group coordinator assigns all partitions after a metadata update (which also auto-creates
    # the topic on brokers that allow it).
    deadline = time.monotonic() + ASSIGNMENT_WAIT_S
    while not consumer.assignment() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    partitions = sorted(consumer.assignment())
    if partitions:
        log.info("results consumer on %d partition(s) of %s", len(partitions), ANALYSIS_RESULTS)
    else:
        log.warning("topic %s has no partitions yet; will read it from the start when it appears", ANALYSIS_RESULTS)
    return partitions


def _decode_all(records: Iterable[ConsumerRecord[Any, Any]]) -> list[AnalysisResult]:
    results = []
    for record in records:
        try:
            results.append(AnalysisResult.model_validate_json(record.value or b""))
        except ValidationError as exc:
            log.warning(
                "skipping malformed result topic=%s partition=%s offset=%s: %s",
                record.topic,
                record.partition,
                record.offset,
                exc.errors()[0].get("msg", "invalid"),
            )
    return results

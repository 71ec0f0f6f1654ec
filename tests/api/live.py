"""Helpers for tests against the real stack: a listening API server, and topic readers/writers.

Used by tests/integration/test_api_*.py and tests/browser/.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from uuid import uuid4

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from api.app import create_app
from api.logs import PathOnlyAccessLogger
from models.records import AnalysisResult
from models.settings import Settings
from streams import kafka_security
from streams.topics import ANALYSIS_RESULTS
from tools.kit import free_port


@asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[str]:
    """The API app listening on a free port (real sockets, real clients); yields its base URL."""
    runner = web.AppRunner(create_app(settings), access_log_class=PathOnlyAccessLogger)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclass
class TopicReader:
    """Reads one topic from 'now' on, with its own consumer group; filters by key."""

    consumer: AIOKafkaConsumer
    records: list[ConsumerRecord[bytes, bytes]] = field(default_factory=list)

    def by_key(self, key: str) -> list[bytes]:
        return [r.value or b"" for r in self.records if r.key == key.encode()]

    async def wait_for_key(self, key: str, timeout: float = 30.0) -> bytes:
        async def poll() -> bytes:
            while not self.by_key(key):
                await self._fetch(500)
            return self.by_key(key)[0]

        return await asyncio.wait_for(poll(), timeout)

    async def read_to_end(self, timeout: float = 30.0) -> None:
        """Read everything written up to now: afterwards, counting a key's records is exact."""
        tps = list(self.consumer.assignment())
        ends = await self.consumer.end_offsets(tps)

        async def poll() -> None:
            while [tp for tp in tps if await self.consumer.position(tp) < ends[tp]]:
                await self._fetch(200)

        await asyncio.wait_for(poll(), timeout)

    async def _fetch(self, timeout_ms: int) -> None:
        batch = await self.consumer.getmany(timeout_ms=timeout_ms)
        for records in batch.values():
            self.records.extend(records)


@asynccontextmanager
async def topic_reader(settings: Settings, topic: str) -> AsyncIterator[TopicReader]:
    consumer = AIOKafkaConsumer(
        topic,
        **kafka_security.client_kwargs(settings, "admin"),  # any topic, a group of its own: the stack's admin
        group_id=f"test-api-{uuid4().hex[:12]}",
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 30
        while not consumer.assignment():
            assert time.monotonic() < deadline, f"no partitions of {topic} assigned"
            await asyncio.sleep(0.05)
        for tp in consumer.assignment():
            await consumer.position(tp)  # resolve "latest" now, so nothing written from here on is missed
        yield TopicReader(consumer)
    finally:
        await consumer.stop()


@asynccontextmanager
async def results_writer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    """Plays the worker's role: writes AnalysisResults to the results topic."""
    # As the worker principal, the only one (besides admin) that may write results.
    producer = AIOKafkaProducer(**kafka_security.client_kwargs(settings, "worker"))
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def publish_results(producer: AIOKafkaProducer, results: Iterable[AnalysisResult]) -> None:
    sends = [await producer.send(ANALYSIS_RESULTS, r.to_bytes(), key=r.job_id.encode()) for r in results]
    await asyncio.gather(*sends)

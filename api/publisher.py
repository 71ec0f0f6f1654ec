"""Publishing the upload-complete event (the pipeline's input contract) with aiokafka."""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiokafka import AIOKafkaProducer

from models.records import UploadCompleted
from streams.topics import UPLOADS_COMPLETED

SEND_TIMEOUT_S = 10.0


class UploadPublisher(Protocol):
    async def publish(self, event: UploadCompleted) -> None: ...
    async def ping(self) -> None: ...


class KafkaUploadPublisher:
    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    async def publish(self, event: UploadCompleted) -> None:
        # key = job_id: every event of one job lands on one partition, in order.
        await asyncio.wait_for(
            self._producer.send_and_wait(UPLOADS_COMPLETED, event.to_bytes(), key=event.job_id.encode()),
            SEND_TIMEOUT_S,
        )

    async def ping(self) -> None:
        await self._producer.client.fetch_all_metadata()

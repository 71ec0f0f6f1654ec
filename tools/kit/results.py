"""Objects in the bucket, upload-complete events on Kafka, results from the results topic.

The watcher reads the results topic from "now" on in a background task (subscribed, at the end of every
partition, before anything is published) and writes upload-complete events, both as the API's Kafka principal:
whoever drives the pipeline this way proves the API's ACLs suffice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from models.records import AnalysisResult, UploadCompleted, utcnow
from models.settings import Settings
from streams import kafka_security, topics
from streams.clients import s3_client
from tools.kafka_admin import position_at_end

# What a worker group that does not read the tests' keys (tests/...) answers them with: every group on the broker
# reads every upload event, so a benchmark's or a demo's worker refuses each test upload this way.
KEY_REFUSED = "the event's object key is not acceptable"


def of_group(result: AnalysisResult, model_version: str) -> bool:
    """Whether ``result`` can be the answer of the worker group whose model version is ``model_version``.

    A classification carries its group's model version; a failure carries none, so every failure counts except
    another group's refusal of a key only test workers read.
    """
    if result.cache is not None:
        return result.cache.model_version == model_version
    return result.error is None or result.error.message != KEY_REFUSED


async def put_objects(settings: Settings, items: Iterable[tuple[str, bytes, str]], concurrency: int = 16) -> None:
    """Put every (key, body, content type) into the bucket, ``concurrency`` at a time."""
    async with s3_client(settings) as s3:
        sem = asyncio.Semaphore(concurrency)

        async def put(key: str, data: bytes, content_type: str) -> None:
            async with sem:
                await s3.put_object(Bucket=settings.s3_bucket_name, Key=key, Body=data, ContentType=content_type)

        await asyncio.gather(*(put(*item) for item in items))


class ResultWatcher:
    """Results by job id as they arrive (``received``, every copy), and a producer of upload-complete events.

    ``handle`` turns one record into what is kept; a subclass may keep something else (the bench keeps only
    its own worker's results, with their arrival times). ``on_result`` is called with each kept one.
    """

    def __init__(self, settings: Settings, *, consumer_options: dict[str, Any] | None = None,
                 producer_options: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.received: dict[str, list[Any]] = {}
        self.on_result: Callable[[str, Any], None] | None = None
        self._options = (consumer_options or {}, producer_options or {})
        self._reader: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()

    async def __aenter__(self) -> ResultWatcher:
        kafka = kafka_security.client_kwargs(self.settings, "api")
        self._consumer = AIOKafkaConsumer(topics.ANALYSIS_RESULTS, **kafka, group_id=None, auto_offset_reset="latest",
                                          **self._options[0])
        # acks=all and idempotent unless the options say otherwise (kafka_security.producer_kwargs).
        self._producer = AIOKafkaProducer(**kafka_security.producer_kwargs(self.settings, "api", **self._options[1]))
        await self._consumer.start()
        await self._producer.start()
        await position_at_end(self._consumer)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._producer.stop()
        await self._consumer.stop()

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=1000)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    with contextlib.suppress(ValueError, TypeError):  # not a result: not ours to judge here
                        self.handle((record.key or b"").decode(), record.value or b"", now)
            if batch:
                self._arrived.set()
                self._arrived = asyncio.Event()

    def handle(self, job_id: str, value: bytes, recv: float) -> None:
        result = AnalysisResult.model_validate_json(value)
        self.received.setdefault(job_id, []).append(result)
        if self.on_result is not None:
            self.on_result(job_id, result)

    # --- publishing ---

    def event(self, job_id: str, key: str, **fields: Any) -> bytes:
        return UploadCompleted(job_id=job_id, bucket=self.settings.s3_bucket_name, key=key, uploaded_at=utcnow(),
                               **fields).to_bytes()

    async def publish(self, key: str, *, job_id: str | None = None, **fields: Any) -> str:
        """One upload-complete event for object ``key`` (acknowledged by the broker); returns its job id."""
        job_id = job_id or str(uuid.uuid4())
        await self.publish_raw(job_id.encode(), self.event(job_id, key, **fields))
        return job_id

    async def publish_raw(self, key: bytes | None, value: bytes) -> None:
        await self._producer.send_and_wait(topics.UPLOADS_COMPLETED, key=key, value=value)

    async def send(self, job_id: str, value: bytes) -> float:
        """Queue one event without waiting for the broker; returns the perf_counter taken right before."""
        t = time.perf_counter()
        await self._producer.send(topics.UPLOADS_COMPLETED, key=job_id.encode(), value=value)
        return t

    async def flush(self) -> None:
        await self._producer.flush()

    # --- waiting ---

    async def unanswered(self, job_ids: Iterable[str], timeout: float) -> set[str]:
        """Wait until every job has a result or the deadline passes; returns the jobs still without one."""
        wanted = set(job_ids)
        deadline = time.monotonic() + timeout
        while missing := wanted - self.received.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return missing
            if self._reader is not None and self._reader.done():
                self._reader.result()  # the reader failed: say why, rather than time out
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(remaining, 1.0))
        return set()

    async def wait_for(self, job_ids: Iterable[str], timeout: float = 60.0) -> dict[str, Any]:
        """The first result of every job; TimeoutError when some job has none within ``timeout``."""
        wanted = list(job_ids)
        if missing := await self.unanswered(wanted, timeout):
            raise TimeoutError(f"{len(missing)} of {len(set(wanted))} results missing, e.g. {sorted(missing)[:3]}")
        return {j: self.received[j][0] for j in wanted}

    async def read_to_end(self, timeout: float = 60.0) -> None:
        """Wait until every record on the results topic now has been handled: the end offsets, read again until
        two readings agree (a produce request already on its way when this is called still lands)."""
        deadline = time.monotonic() + timeout
        ends: dict[Any, int] | None = None
        while True:
            now = await self._consumer.end_offsets(list(self._consumer.assignment()))
            if now == ends:
                return
            ends = now
            # _read handles a batch before it awaits again, so a position past a record means it was handled.
            while any([await self._consumer.position(tp) < end for tp, end in ends.items()]):
                if time.monotonic() > deadline:
                    raise TimeoutError("the results topic was not read to its end in time")
                if self._reader is not None and self._reader.done():
                    self._reader.result()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), 0.5)

    async def drain(self, seconds: float) -> None:
        """Keep collecting for ``seconds`` (to catch duplicate results after the expected ones arrived)."""
        await asyncio.sleep(seconds)


class PipelineClient:
    """Uploads photos (keys ``tests/{uuid}.jpg``, which a worker started ``for_tests`` reads) and opens watchers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def upload(self, data: bytes, *, suffix: str = ".jpg", content_type: str = "image/jpeg") -> str:
        key = f"tests/{uuid.uuid4()}{suffix}"
        await put_objects(self.settings, [(key, data, content_type)])
        return key

    async def upload_many(self, blobs: Iterable[bytes]) -> list[str]:
        items = [(f"tests/{uuid.uuid4()}.jpg", data, "image/jpeg") for data in blobs]
        await put_objects(self.settings, items)
        return [key for key, _, _ in items]

    @contextlib.asynccontextmanager
    async def results(self) -> AsyncIterator[ResultWatcher]:
        async with ResultWatcher(self.settings) as watcher:
            yield watcher

"""In-memory fakes of Redis, Kafka and S3 for the API tests, and small helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from api.context import Backends
from api.results import ResultsCallback
from api.store import Job, JobState, StateCallback
from api.tokens import make_token
from api.uploads import ObjectHead, PresignedUpload
from models.classification import WasteCategory, WasteClassification
from models.errors import ErrorCode
from models.records import AnalysisResult, CacheInfo, CacheSource, ErrorInfo, JobStatus, UploadCompleted
from models.settings import Settings

SECRET = "test-secret"
ALLOWED_ORIGIN = "http://app.example"


class FakeStore:
    """JobStore in memory. State changes reach every watcher, as Redis pub/sub would."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.results: dict[str, AnalysisResult] = {}
        self.published: set[str] = set()
        self.watchers: list[StateCallback] = []
        self.fail_with: Exception | None = None

    def _check(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    async def create_job(self, job: Job) -> None:
        self._check()
        self.jobs[job.job_id] = job

    async def get_job(self, job_id: str) -> Job | None:
        self._check()
        return self.jobs.get(job_id)

    async def claim_publish(self, job_id: str) -> bool:
        if job_id in self.published:
            return False
        self.published.add(job_id)
        return True

    async def release_publish(self, job_id: str) -> None:
        self.published.discard(job_id)

    async def set_state(self, job_id: str, state: JobState) -> None:
        if job_id in self.jobs:
            self.jobs[job_id] = self.jobs[job_id].model_copy(update={"state": state})
        for watcher in self.watchers:
            watcher(job_id, state)

    async def save_results(self, results: list[AnalysisResult]) -> None:
        for result in results:
            self.results.setdefault(result.job_id, result)  # the first result wins

    async def get_result(self, job_id: str) -> AnalysisResult | None:
        self._check()
        return self.results.get(job_id)

    async def watch_states(self, on_state: StateCallback, ready: asyncio.Event) -> None:
        self.watchers.append(on_state)
        ready.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.watchers.remove(on_state)

    async def ping(self) -> None:
        self._check()


class FakePublisher:
    def __init__(self) -> None:
        self.events: list[UploadCompleted] = []
        self.fail_next = False
        self.healthy = True

    async def publish(self, event: UploadCompleted) -> None:
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("broker down")
        self.events.append(event)

    async def ping(self) -> None:
        if not self.healthy:
            raise ConnectionError("broker down")


class FakeStorage:
    def __init__(self) -> None:
        self.objects: dict[str, ObjectHead] = {}
        self.presigned: list[tuple[str, str]] = []
        self.deleted: list[str] = []

    async def presign(self, key: str, content_type: str) -> PresignedUpload:
        self.presigned.append((key, content_type))
        return PresignedUpload(
            post_url="http://s3.test/bucket", post_fields={"key": key, "policy": "p", "Content-Type": content_type}
        )

    async def head(self, key: str) -> ObjectHead | None:
        return self.objects.get(key)

    async def delete(self, key: str) -> None:
        self.deleted.append(key)
        self.objects.pop(key, None)


class FakeResults:
    """The results topic: tests put results, the app's consumer task takes them."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[AnalysisResult] = asyncio.Queue()

    async def run(self, on_results: ResultsCallback, ready: asyncio.Event) -> None:
        ready.set()
        while True:
            await on_results([await self.queue.get()])


class FakeCacheAdmin:
    def __init__(self) -> None:
        self.cached: set[str] = set()

    async def invalidate(self, *, phash: str | None, job_id: str | None) -> list[str]:
        if phash is None and job_id is None:
            raise ValueError("give a phash or a job id")
        if phash is not None and phash in self.cached:
            self.cached.discard(phash)
            return [phash]
        return []


@dataclass
class Fakes:
    store: FakeStore = field(default_factory=FakeStore)
    publisher: FakePublisher = field(default_factory=FakePublisher)
    storage: FakeStorage = field(default_factory=FakeStorage)
    results: FakeResults = field(default_factory=FakeResults)
    cache_admin: FakeCacheAdmin = field(default_factory=FakeCacheAdmin)

    def backends(self) -> Callable[[Settings], Any]:
        @asynccontextmanager
        async def factory(settings: Settings) -> AsyncIterator[Backends]:
            yield Backends(store=self.store, publisher=self.publisher, storage=self.storage, results=self.results,
                           cache_admin=self.cache_admin)

        return factory

    def upload(self, key: str, size: int = 1234, content_type: str | None = "image/jpeg") -> None:
        """As if the client had uploaded to the pre-signed URL."""
        self.storage.objects[key] = ObjectHead(size=size, content_type=content_type)


def token_for(job_id: str, expires_at: int | None = None) -> str:
    import time

    return make_token(SecretStr(SECRET), job_id, expires_at=expires_at or int(time.time()) + 3600)


def auth(job_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(job_id)}"}


def sample_result(job_id: str, *, status: JobStatus = JobStatus.DONE, hit: bool = False) -> AnalysisResult:
    return AnalysisResult(
        job_id=job_id,
        status=status,
        classification=WasteClassification(
            category=WasteCategory.PET_BOTTLE,
            item_name="water bottle",
            disposal_instructions="Rinse, remove the label, crush, recycle with PET.",
            recyclable=True,
            confidence=0.93,
        )
        if status == JobStatus.DONE
        else None,
        cache=CacheInfo(hit=hit, source=CacheSource.REDIS if hit else CacheSource.MODEL, phash="0" * 64)
        if status == JobStatus.DONE
        else None,
        fetch=None,
        error=None if status == JobStatus.DONE else ErrorInfo(code=ErrorCode.IMAGE_UNDECODABLE, message="not an image"),
    )

"""FETCH_RETRY_SECONDS: while the CDN and S3 both fail, the fetch waits the outage out (with backoff) instead of
failing the job; a missing object, or an outage longer than the budget, still ends it with its own error code."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web

from models.errors import ErrorCode, PipelineError
from models.records import FetchSource
from streams import fetch
from tests.unit.test_fetch_fallback import BUCKET, KEY, PHOTO, FakeS3, S3Error, cdn, fetcher, http  # noqa: F401


class S3Outage(FakeS3):
    """S3 that fails its first ``failures`` reads with InternalError, then serves the photo."""

    def __init__(self, failures: int, code: str = "InternalError") -> None:
        super().__init__()
        self.failures, self.code = failures, code

    async def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 - botocore's names
        if len(self.calls) < self.failures:
            self.calls.append((Bucket, Key))
            raise S3Error(self.code)
        return await super().get_object(Bucket=Bucket, Key=Key)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "RETRY_FIRST_DELAY_S", 0.01)
    monkeypatch.setattr(fetch, "RETRY_MAX_DELAY_S", 0.02)


def edge_down(cdn: Any) -> None:
    fake, _ = cdn
    fake.answer = lambda request: web.Response(status=503)


async def test_an_outage_shorter_than_the_budget_is_waited_out(settings_factory: Any, http: aiohttp.ClientSession,
                                                               cdn: Any) -> None:
    edge_down(cdn)
    s3 = S3Outage(failures=3)
    fetched = await fetcher(settings_factory, http, s3, cdn[1], fetch_retry_seconds=5).fetch_patiently(BUCKET, KEY)
    assert fetched.data == PHOTO and fetched.info.source is FetchSource.S3
    assert len(s3.calls) == 4  # three failed reads, then the one that served it
    assert len(cdn[0].paths) == 4  # each attempt asks the edge first


async def test_an_outage_longer_than_the_budget_fails_the_job(settings_factory: Any, http: aiohttp.ClientSession,
                                                              cdn: Any) -> None:
    edge_down(cdn)
    s3 = S3Outage(failures=10_000)
    with pytest.raises(PipelineError) as failed:
        await fetcher(settings_factory, http, s3, cdn[1], fetch_retry_seconds=0.2).fetch_patiently(BUCKET, KEY)
    assert failed.value.code is ErrorCode.FETCH_FAILED
    assert 2 <= len(s3.calls) < 10_000  # it tried again, and gave up at the deadline


async def test_a_budget_of_zero_fails_at_the_first_attempt(settings_factory: Any, http: aiohttp.ClientSession,
                                                           cdn: Any) -> None:
    edge_down(cdn)
    s3 = S3Outage(failures=1)
    with pytest.raises(PipelineError) as failed:
        await fetcher(settings_factory, http, s3, cdn[1], fetch_retry_seconds=0).fetch_patiently(BUCKET, KEY)
    assert failed.value.code is ErrorCode.FETCH_FAILED and len(s3.calls) == 1


async def test_a_missing_object_is_not_retried(settings_factory: Any, http: aiohttp.ClientSession, cdn: Any) -> None:
    edge_down(cdn)
    s3 = S3Outage(failures=10_000, code="NoSuchKey")
    with pytest.raises(PipelineError) as failed:
        await fetcher(settings_factory, http, s3, cdn[1], fetch_retry_seconds=5).fetch_patiently(BUCKET, KEY)
    assert failed.value.code is ErrorCode.IMAGE_NOT_FOUND and len(s3.calls) == 1

"""The retry schedule of a fetch while both sources fail: doubling waits from RETRY_FIRST_DELAY_S, capped at
RETRY_MAX_DELAY_S, each jittered by a factor in [0.8, 1.2], and a warning per retry that names key and reason."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from streams import fetch
from tests.unit.test_fetch_fallback import BUCKET, KEY, PHOTO, FakeS3, S3Error, fetcher, http  # noqa: F401


class Outage(FakeS3):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 - botocore's names
        if len(self.calls) < self.failures:
            self.calls.append((Bucket, Key))
            raise S3Error("InternalError")
        return await super().get_object(Bucket=Bucket, Key=Key)


@pytest.fixture
def schedule(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The waits the fetcher asks for and the jitter ranges it draws from (no time passes)."""
    seen = SimpleNamespace(waits=[], ranges=[])

    async def sleep(seconds: float) -> None:
        seen.waits.append(seconds)
        await asyncio.sleep(0)

    def uniform(low: float, high: float) -> float:
        seen.ranges.append((low, high))
        return high

    monkeypatch.setattr(fetch, "asyncio", SimpleNamespace(sleep=sleep, wait_for=asyncio.wait_for))
    monkeypatch.setattr(fetch, "random", SimpleNamespace(uniform=uniform))
    monkeypatch.setattr(fetch, "RETRY_FIRST_DELAY_S", 1.0)
    monkeypatch.setattr(fetch, "RETRY_MAX_DELAY_S", 5.0)
    return seen


async def test_waits_double_up_to_the_cap_with_jitter(settings_factory: Any, http: Any, schedule: SimpleNamespace,  # noqa: F811
                                                      caplog: pytest.LogCaptureFixture) -> None:
    s3 = Outage(failures=5)
    f = fetcher(settings_factory, http, s3, "http://127.0.0.1:9/unused", cdn_enabled=False, fetch_retry_seconds=3600)
    with caplog.at_level(logging.WARNING, logger="streams.fetch"):
        got = await f.fetch_patiently(BUCKET, KEY)
    assert got.data == PHOTO and len(s3.calls) == 6
    # 1, 2, 4, then the 5 s cap; each times the jitter factor (its upper end here).
    assert schedule.waits == pytest.approx([1.2, 2.4, 4.8, 6.0, 6.0])
    assert schedule.ranges == [(0.8, 1.2)] * 5
    warnings = [r.getMessage() for r in caplog.records if r.name == "streams.fetch"]
    assert warnings[0] == f"key={KEY}: fetch failed (S3 GetObject failed: InternalError: An error occurred " \
                          "(InternalError)); trying again in 1.2s"
    assert len(warnings) == 5

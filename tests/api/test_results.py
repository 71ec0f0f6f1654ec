"""Decoding the results topic, and the guard against cancellations lost by a client library."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import ConsumerRecord

from api.results import _decode_all
from api.store import cancellation_safe
from tests.api.fakes import sample_result


def _record(value: bytes, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="waste.analysis.results",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=value,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(value),
        headers=(),
    )


def test_malformed_results_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    good = sample_result("job-1")
    decoded = _decode_all([_record(b"{not json", 1), _record(good.to_bytes(), 2), _record(b'{"job_id": 1}', 3)])
    assert decoded == [good]
    assert "offset=1" in caplog.text and "offset=3" in caplog.text


async def test_a_swallowed_cancellation_is_raised_again() -> None:
    started = asyncio.Event()

    @cancellation_safe
    async def swallows() -> None:  # what redis-py sometimes does with a cancel that lands mid-command
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise ConnectionError("Connection closed by server.") from None

    async def loop() -> None:
        while True:
            try:
                await swallows()
            except ConnectionError:
                pass

    task = asyncio.create_task(loop())
    await started.wait()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert done and task.cancelled()

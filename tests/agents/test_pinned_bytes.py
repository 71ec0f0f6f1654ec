"""The model classifies the bytes that were hashed: an object replaced after it was hashed is never shown to it."""

from __future__ import annotations

from datetime import UTC, datetime

from agents.classify import answer_request
from agents.dedupe import deduplicate
from models.records import FetchInfo, FetchSource, ImageHashed, VisionRequest
from streams.imaging import content_digest, make_thumbnail, thumbnail_data_url
from tests import samples
from tests.agents.conftest import Harness

PHASH = "cd" * 32


def hashed(job_id: str, data: bytes) -> ImageHashed:
    return ImageHashed(job_id=job_id, bucket="waste-images", key=f"uploads/{job_id}", phash=PHASH,
                       image_url=f"http://cdn/uploads/{job_id}", fetch=FetchInfo(source=FetchSource.CDN, bytes=10),
                       received_at=datetime.now(UTC), sha256=content_digest(data))


async def run_requests(h: Harness) -> None:
    while h.requests.messages:
        _, value = h.requests.messages.pop(0)
        await answer_request(h.ctx, VisionRequest.model_validate_json(value))


async def test_an_object_replaced_after_hashing_fails_and_is_not_classified(harness: Harness) -> None:
    hashed_bytes, replacement = samples.photo_bytes(20), samples.photo_bytes(21)
    harness.fetcher.objects["uploads/owner"] = replacement
    await deduplicate(harness.ctx, hashed("owner", hashed_bytes))
    await run_requests(harness)
    result = harness.results_by_job()["owner"]
    assert result["status"] == "failed" and result["error"]["code"] == "IMAGE_CHANGED"
    assert not harness.vision.calls and PHASH not in harness.cache.entries
    assert "uploads/" not in result["error"]["message"]


async def test_a_waiter_with_the_hashed_bytes_is_shown_instead(harness: Harness) -> None:
    hashed_bytes = samples.photo_bytes(22)
    harness.fetcher.objects.update({"uploads/owner": samples.photo_bytes(23), "uploads/waiter": hashed_bytes})
    await deduplicate(harness.ctx, hashed("owner", hashed_bytes))
    await deduplicate(harness.ctx, hashed("waiter", hashed_bytes))
    await run_requests(harness)
    results = harness.results_by_job()
    assert results["owner"]["error"]["code"] == "IMAGE_CHANGED"
    assert results["waiter"]["status"] == "done"
    expected = thumbnail_data_url(make_thumbnail(hashed_bytes, max_pixels=10**8))
    assert harness.vision.calls == [expected]
    assert len(harness.results.messages) == 2  # one result each


async def test_unchanged_bytes_are_classified(harness: Harness) -> None:
    data = samples.photo_bytes(24)
    harness.fetcher.objects["uploads/owner"] = data
    await deduplicate(harness.ctx, hashed("owner", data))
    await run_requests(harness)
    assert harness.results_by_job()["owner"]["status"] == "done" and len(harness.vision.calls) == 1

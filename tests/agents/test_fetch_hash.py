"""The fetch+hash step: a hashed event keyed by pHash, or a failed result with a stable code."""

from __future__ import annotations

import json

from agents.fetch_hash import process_upload
from models.records import UploadCompleted
from streams.imaging import hash_image
from tests import samples
from tests.agents.conftest import Harness


def event(job_id: str, key: str) -> bytes:
    return UploadCompleted(job_id=job_id, bucket="waste-images", key=key).to_bytes()


async def test_a_photo_is_hashed_and_keyed_by_phash(harness: Harness) -> None:
    data = samples.photo_bytes(9)
    harness.fetcher.objects["p.jpg"] = data
    await process_upload("job-1", event("job-1", "p.jpg"), 0, 1)
    (key, value), = harness.hashed.messages
    body = json.loads(value)
    assert key == body["phash"] == hash_image(data, max_pixels=10**8).phash
    assert body["job_id"] == "job-1" and body["fetch"]["source"] == "cdn" and body["thumbnail_b64"]
    assert body["image_url"].endswith("/p.jpg")
    assert not harness.results.messages


async def test_a_malformed_event_is_dead_lettered_and_answered(harness: Harness) -> None:
    await process_upload(b"job-2", b"{oops", 3, 42)
    assert harness.results_by_job()["job-2"]["error"]["code"] == "INVALID_EVENT"
    letter = harness.dead_letters.values()[0]
    assert letter["partition"] == 3 and letter["offset"] == 42 and letter["original"] == "{oops"


async def test_a_missing_object_fails_the_job(harness: Harness) -> None:
    await process_upload("job-3", event("job-3", "nope.jpg"), 0, 1)
    assert harness.results_by_job()["job-3"]["error"]["code"] == "IMAGE_NOT_FOUND"
    assert not harness.hashed.messages


async def test_an_undecodable_object_fails_the_job(harness: Harness) -> None:
    harness.fetcher.objects["bad.jpg"] = samples.not_an_image()
    await process_upload("job-4", event("job-4", "bad.jpg"), 0, 1)
    result = harness.results_by_job()["job-4"]
    assert result["status"] == "failed" and result["error"]["code"] == "IMAGE_UNDECODABLE"
    assert result["classification"] is None

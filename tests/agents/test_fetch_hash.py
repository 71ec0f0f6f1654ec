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
    await process_upload(harness.ctx, "job-1", event("job-1", "p.jpg"), 0, 1)
    (key, value), = harness.hashed.messages
    body = json.loads(value)
    assert key == body["phash"] == hash_image(data, max_pixels=10**8).phash
    assert body["job_id"] == "job-1" and body["fetch"]["source"] == "cdn"
    assert body["thumbnail_b64"] is None  # made by classify, on a miss only: hashed events stay small
    assert len(value) < 2000
    assert body["image_url"].endswith("/p.jpg")
    assert not harness.results.messages


async def test_a_malformed_event_is_dead_lettered_only(harness: Harness) -> None:
    """A body that does not name its job must not fail the job its Kafka key names (someone else's)."""
    await process_upload(harness.ctx, b"job-2", b"{oops", 3, 42)
    assert not harness.results.messages
    letter = harness.dead_letters.values()[0]
    assert letter["partition"] == 3 and letter["offset"] == 42 and letter["original"] == "{oops"
    assert letter["code"] == "INVALID_EVENT" and letter["job_id"] is None


async def test_an_invalid_event_naming_its_own_job_is_answered(harness: Harness) -> None:
    body = json.dumps({"job_id": "job-5", "bucket": "waste-images"}).encode()
    await process_upload(harness.ctx, b"job-5", body, 3, 43)
    result = harness.results_by_job()["job-5"]
    assert result["error"]["code"] == "INVALID_EVENT" and "key" in result["error"]["message"]
    assert harness.dead_letters.values()[0]["job_id"] == "job-5"


async def test_an_event_under_another_jobs_key_fails_nobody(harness: Harness) -> None:
    harness.fetcher.objects["p.jpg"] = samples.photo_bytes(9)
    await process_upload(harness.ctx, b"victim", event("attacker", "p.jpg"), 0, 7)
    await process_upload(harness.ctx, None, event("attacker", "p.jpg"), 0, 8)
    assert not harness.results.messages and not harness.hashed.messages and not harness.fetcher.fetched
    assert [letter["code"] for letter in harness.dead_letters.values()] == ["INVALID_EVENT"] * 2


async def test_events_naming_other_buckets_or_unsafe_keys_touch_nothing(harness: Harness) -> None:
    bad = {"other-bucket": ("elsewhere", "p.jpg"), "dotdot": ("waste-images", "uploads/../p.jpg"),
           "encoded": ("waste-images", "uploads%2F..%2Fp.jpg"), "absolute": ("waste-images", "http://evil/p.jpg"),
           "backslash": ("waste-images", "uploads\\p.jpg"), "control": ("waste-images", "p\r\n.jpg"),
           "leading-slash": ("waste-images", "/p.jpg"), "overlong": ("waste-images", "a" * 300 + ".jpg")}
    for job, (bucket, key) in bad.items():
        value = UploadCompleted(job_id=job, bucket=bucket, key=key).to_bytes()
        await process_upload(harness.ctx, job, value, 0, 1)
    results = harness.results_by_job()
    assert results.keys() == bad.keys() and {r["error"]["code"] for r in results.values()} == {"INVALID_EVENT"}
    assert not harness.fetcher.fetched
    for result in results.values():  # the client is not told what the worker reads, nor where
        assert "waste-images" not in result["error"]["message"] and "evil" not in result["error"]["message"]


async def test_a_missing_object_fails_the_job(harness: Harness) -> None:
    await process_upload(harness.ctx, "job-3", event("job-3", "nope.jpg"), 0, 1)
    assert harness.results_by_job()["job-3"]["error"]["code"] == "IMAGE_NOT_FOUND"
    assert not harness.hashed.messages


async def test_an_undecodable_object_fails_the_job(harness: Harness) -> None:
    harness.fetcher.objects["bad.jpg"] = samples.not_an_image()
    await process_upload(harness.ctx, "job-4", event("job-4", "bad.jpg"), 0, 1)
    result = harness.results_by_job()["job-4"]
    assert result["status"] == "failed" and result["error"]["code"] == "IMAGE_UNDECODABLE"
    assert result["classification"] is None


class FakeDigests:
    def __init__(self) -> None:
        self.phashes: dict[str, tuple[str, int]] = {}

    async def phash_of(self, digest: str, *, max_pixels: int) -> str | None:
        phash, pixels = self.phashes.get(digest, (None, 0))
        return phash if pixels <= max_pixels else None

    async def remember(self, digest: str, phash: str, *, pixels: int) -> None:
        self.phashes[digest] = (phash, pixels)


async def test_a_byte_identical_reupload_is_not_decoded_again(harness: Harness, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import agents.fetch_hash
    res = harness.ctx
    monkeypatch.setattr(res, "digests", FakeDigests())
    decoded: list[int] = []
    real = agents.fetch_hash.hash_image

    def counting(data: bytes, **kwargs):  # type: ignore[no-untyped-def]
        decoded.append(len(data))
        return real(data, **kwargs)

    monkeypatch.setattr(agents.fetch_hash, "hash_image", counting)
    photo = samples.photo_bytes(9)
    harness.fetcher.objects.update({"a.jpg": photo, "copy.jpg": bytes(photo), "other.jpg": samples.photo_bytes(10)})
    for job, key in (("j1", "a.jpg"), ("j2", "copy.jpg"), ("j3", "other.jpg")):
        await process_upload(harness.ctx, job, event(job, key), 0, 1)
    phashes = {json.loads(v)["job_id"]: k for k, v in harness.hashed.messages}
    assert phashes["j1"] == phashes["j2"] != phashes["j3"]
    assert len(decoded) == 2  # the copy's pHash came from its digest


async def test_a_corrupt_upload_is_refused_every_time(harness: Harness, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    res = harness.ctx
    digests = FakeDigests()
    monkeypatch.setattr(res, "digests", digests)
    harness.fetcher.objects["bad.jpg"] = samples.not_an_image()
    for job in ("b1", "b2"):
        await process_upload(harness.ctx, job, event(job, "bad.jpg"), 0, 1)
    assert {r["error"]["code"] for r in harness.results_by_job().values()} == {"IMAGE_UNDECODABLE"}
    assert not digests.phashes and not harness.hashed.messages


async def test_a_known_image_over_a_lowered_pixel_limit_is_refused(harness: Harness, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    res = harness.ctx
    monkeypatch.setattr(res, "digests", FakeDigests())
    harness.fetcher.objects["big.jpg"] = samples.photo_bytes(9)
    await process_upload(harness.ctx, "first", event("first", "big.jpg"), 0, 1)
    monkeypatch.setattr(res, "settings", res.settings.model_copy(update={"max_image_pixels": 1000}))
    await process_upload(harness.ctx, "later", event("later", "big.jpg"), 0, 2)
    assert harness.results_by_job()["later"]["error"]["code"] == "IMAGE_TOO_LARGE"

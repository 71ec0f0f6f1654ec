"""Upload-complete events are checked before anything is fetched: bucket, key scheme, and the job they prove."""

from __future__ import annotations

import json
import uuid

import pytest

from models.settings import Settings
from streams.upload_checks import RefusedEvent, check_upload

SETTINGS = Settings(_env_file=None, app_env="development")  # type: ignore[call-arg]


def body(job_id: str, key: str | None = None, bucket: str = "waste-images", **extra: object) -> bytes:
    return json.dumps({"job_id": job_id, "bucket": bucket, "key": key or f"uploads/{job_id}", **extra}).encode()


def test_the_apis_keys_are_accepted() -> None:
    job = uuid.uuid4().hex
    assert check_upload(SETTINGS, job, body(job)).key == f"uploads/{job}"
    dashed = str(uuid.uuid4())  # tools.produce
    assert check_upload(SETTINGS, dashed, body(dashed, f"uploads/{dashed}.jpg")).job_id == dashed


@pytest.mark.parametrize("key", [
    "uploads/../secrets", "uploads/%2e%2e/x", "uploads%2F..%2Fx", "uploads/..%2Fx", "http://evil.example/x.jpg",
    "//evil.example/x.jpg", "/uploads/{job}", "uploads\\..\\x", "uploads/{job}\r\nX-Injected: 1", "uploads/{job}\x00",
    "uploads/{job}?x=1", "uploads/{job}#frag", "uploads/./{job}", "uploads//{job}", "uploads/{job}/",
    "uploads/" + "a" * 2000, "uploads/{job}.svg", "uploads/{job}.html", "other/{job}", "tests/{job}.jpg",
    "uploads/ {job}", "uploads/\u2024\u2024/{job}", "UPLOADS/{job}",
])
def test_keys_outside_the_scheme_are_refused_for_the_job_they_name(key: str) -> None:
    job = uuid.uuid4().hex
    with pytest.raises(RefusedEvent) as info:
        check_upload(SETTINGS, job, body(job, key.format(job=job)))
    assert info.value.job_id == job
    assert job not in info.value.message and "evil" not in info.value.message  # the client is not told details


def test_a_key_of_another_job_is_refused() -> None:
    job, other = uuid.uuid4().hex, uuid.uuid4().hex
    with pytest.raises(RefusedEvent) as info:
        check_upload(SETTINGS, job, body(job, f"uploads/{other}"))
    assert info.value.job_id == job and "another job" in info.value.detail


def test_another_bucket_is_refused() -> None:
    job = uuid.uuid4().hex
    with pytest.raises(RefusedEvent) as info:
        check_upload(SETTINGS, job, body(job, bucket="private-bucket"))
    assert info.value.job_id == job and "private-bucket" not in info.value.message


@pytest.mark.parametrize(("kafka_key", "value"), [
    ("victim", b"{not json"),
    ("victim", b"\xff\xfe"),
    ("victim", b"[]"),
    ("victim", b'{"bucket": "waste-images", "key": "uploads/x"}'),
    ("victim", json.dumps({"job_id": "attacker", "bucket": "waste-images", "key": "uploads/x"}).encode()),
    (None, json.dumps({"job_id": "attacker", "bucket": "waste-images", "key": "uploads/x"}).encode()),
    ("victim\n", json.dumps({"job_id": "victim\n", "bucket": "waste-images"}).encode()),
    ("x" * 200, json.dumps({"job_id": "x" * 200}).encode()),
])
def test_an_event_that_does_not_prove_its_job_answers_nobody(kafka_key: str | None, value: bytes) -> None:
    with pytest.raises(RefusedEvent) as info:
        check_upload(SETTINGS, kafka_key, value)
    assert info.value.job_id is None


def test_an_invalid_event_that_names_its_job_is_answered_without_its_values() -> None:
    with pytest.raises(RefusedEvent) as info:
        check_upload(SETTINGS, "job-1", json.dumps({"job_id": "job-1", "bucket": "b" * 300, "key": "k"}).encode())
    assert info.value.job_id == "job-1" and "bbbb" not in info.value.message


def test_the_pattern_is_a_setting() -> None:
    settings = Settings(_env_file=None, app_env="development",  # type: ignore[call-arg]
                        upload_key_pattern=r"photos/(?P<job_id>[a-z0-9-]+)\.jpg")
    assert check_upload(settings, "job-1", body("job-1", "photos/job-1.jpg")).key == "photos/job-1.jpg"
    with pytest.raises(RefusedEvent):
        check_upload(settings, "job-1", body("job-1", "uploads/job-1"))
    with pytest.raises(ValueError, match="UPLOAD_KEY_PATTERN"):
        Settings(_env_file=None, app_env="development", upload_key_pattern="(")  # type: ignore[call-arg]

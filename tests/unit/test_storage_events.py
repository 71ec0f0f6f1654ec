"""S3 event notifications as jobs: the record shapes, the checks, and the claim shared with the API."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from api.store import Job, JobState, RedisJobStore
from models.settings import Settings
from streams import job_claims
from streams.storage_events import NotANotification, job_for, parse_notification
from streams.upload_checks import RefusedEvent

JOB = "0123456789abcdef0123456789abcdef"
KEY = f"uploads/{JOB}"


def settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


def versitygw(name: str, key: str, size: int = 10, etag: str | None = '"60c2aa2b6787b3c02a04d7ed9f407fbc"') -> bytes:
    """What versitygw v1.7.0 sends (captured from the stack: s3event/event.go createEventSchema)."""
    return json.dumps({"Records": [{
        "eventVersion": "2.2", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-30T06:03:24Z", "eventName": name, "userIdentity": {"PrincipalId": "test"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "", "x-amz-id-2": ""},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "webhook-global",
               "bucket": {"name": "waste-images", "ownerIdentity": {"PrincipalId": "test"},
                          "arn": f"arn:aws:s3:::/waste-images/{key}"},
               "object": {"key": key, "size": size, "eTag": etag, "versionId": None, "sequencer": "2"}},
        "glacierEventData": {"restoreEventData": {"lifecycleRestorationExpiryTime": "",
                                                  "lifecycleRestoreStorageClass": ""}}}]}).encode()


def aws_record(key: str, name: str = "ObjectCreated:Post", bucket: str = "waste-images") -> dict[str, Any]:
    """An AWS S3 notification record (event message structure, version 2.1): the key URL-encoded."""
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "eu-west-1",
            "eventTime": "2026-11-30T06:03:24.123Z", "eventName": name,
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "uploads",
                   "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                   "object": {"key": key, "size": 2048, "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                              "sequencer": "0055AED6DCD90281E5"}}}


def test_versitygw_put_record() -> None:
    note = parse_notification(versitygw("s3:ObjectCreated:Put", KEY))
    [rec] = note.created
    assert (rec.bucket, rec.key, rec.size, rec.etag) == ("waste-images", KEY, 10, "60c2aa2b6787b3c02a04d7ed9f407fbc")
    assert rec.event_time == datetime(2026, 11, 30, 6, 3, 24, tzinfo=UTC)
    assert note.ignored == 0


def test_versitygw_post_record_names_no_object() -> None:
    [rec] = parse_notification(versitygw("s3:ObjectCreated:Post", "")).created
    assert rec.key == "" and rec.size == 10 and rec.etag == "60c2aa2b6787b3c02a04d7ed9f407fbc"


def test_aws_record_key_is_url_decoded() -> None:
    body = json.dumps({"Records": [aws_record("uploads/a+b%3Dc.jpg")]}).encode()
    [rec] = parse_notification(body).created
    assert rec.key == "uploads/a b=c.jpg" and rec.size == 2048 and rec.event_name == "ObjectCreated:Post"


@pytest.mark.parametrize("wrapper,shape", [("Body", "sqs"), ("body", "sqs"), ("Message", "sns")])
def test_sqs_and_sns_wrapped_records(wrapper: str, shape: str) -> None:
    inner = json.dumps({"Records": [aws_record(KEY)]})
    note = parse_notification(json.dumps({wrapper: inner, "MessageId": "m-1"}).encode())
    assert [r.key for r in note.created] == [KEY] and note.shape == shape


def test_sns_wrapped_sqs_body() -> None:
    sns = json.dumps({"Type": "Notification", "Message": json.dumps({"Records": [aws_record(KEY)]})})
    assert [r.key for r in parse_notification(json.dumps({"Body": sns}).encode()).created] == [KEY]


def test_eventbridge_object_created() -> None:
    event = {"version": "0", "id": "e-1", "detail-type": "Object Created", "source": "aws.s3",
             "time": "2026-11-30T06:03:24Z", "region": "eu-west-1",
             "detail": {"version": "0", "bucket": {"name": "waste-images"},
                        "object": {"key": KEY, "size": 77, "etag": "abc"}, "reason": "PostObject"}}
    note = parse_notification(json.dumps(event).encode())
    [rec] = note.created
    assert (rec.key, rec.size, rec.etag, note.shape) == (KEY, 77, "abc", "eventbridge")
    deleted = {**event, "detail-type": "Object Deleted"}
    assert parse_notification(json.dumps(deleted).encode()).created == []


@pytest.mark.parametrize("body", [
    {"Bucket": "Test-Bucket", "Event": "s3:TestEvent", "Service": "S3", "Time": "2026-11-30T06:03:04Z"},
    {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-30T06:03:04.000Z", "Bucket": "waste-images"},
    {"Body": json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})},
])
def test_test_events_are_ignored(body: dict[str, Any]) -> None:
    note = parse_notification(json.dumps(body).encode())
    assert note.created == [] and note.ignored == 1


def test_other_kinds_of_records_are_ignored() -> None:
    body = json.dumps({"Records": [aws_record(KEY, name="ObjectRemoved:Delete"), aws_record(KEY)]}).encode()
    note = parse_notification(body)
    assert len(note.created) == 1 and note.ignored == 1


@pytest.mark.parametrize("body", [
    b"\xff garbage", b"[]", b'{"job_id": "x"}', b'{"Records": []}', b'{"Records": "x"}',
    b'{"Records": [{"eventName": "ObjectCreated:Put"}]}', b'{"Records": [{"s3": {}}]}',
    b'{"Body": "not json"}',
    json.dumps({"Records": [{**aws_record(KEY), "s3": {"bucket": {"name": ""}, "object": {"key": KEY}}}]}).encode(),
])
def test_what_is_not_a_notification(body: bytes) -> None:
    with pytest.raises(NotANotification):
        parse_notification(body)


def test_job_for_the_api_key_scheme() -> None:
    s = settings()
    assert job_for(s, "waste-images", KEY) == JOB
    assert job_for(s, "waste-images", "uploads/7d0c1d2e-aaaa-4bbb-8ccc-0123456789ab.jpg") == \
        "7d0c1d2e-aaaa-4bbb-8ccc-0123456789ab"


@pytest.mark.parametrize("bucket,key,why", [
    ("other-bucket", KEY, "bucket"),
    ("waste-images", "elsewhere/x.jpg", "names no job"),
    ("waste-images", f"uploads/{JOB}/../../secret", "not acceptable"),
    ("waste-images", f"uploads/{JOB}.svg", "names no job"),
    ("waste-images", "uploads/a b=c.jpg", "not acceptable"),
    ("waste-images", "", "not acceptable"),
])
def test_job_for_refuses(bucket: str, key: str, why: str) -> None:
    with pytest.raises(RefusedEvent) as refused:
        job_for(settings(), bucket, key)
    assert why in refused.value.message and refused.value.job_id is None


def test_a_pattern_without_a_job_id_group_names_no_job() -> None:
    with pytest.raises(RefusedEvent, match="names no job"):
        job_for(settings(upload_key_pattern=r"tests/[a-z0-9-]+\.jpg"), "waste-images", "tests/abc.jpg")


class FakeRedis:
    """The commands both sides use, on a dict; records every key touched."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.ttl_ms: dict[str, int] = {}
        self.published: list[tuple[str, str]] = []

    async def get(self, key: str) -> str | None:
        return self.data.get(key)

    async def mget(self, keys: list[str]) -> list[str | None]:
        return [self.data.get(k) for k in keys]

    async def set(self, key: str, value: str, *, nx: bool = False, xx: bool = False, ex: int | None = None,
                  keepttl: bool = False) -> bool | None:
        if (nx and key in self.data) or (xx and key not in self.data):
            return None
        self.data[key] = value
        if ex is not None:
            self.ttl_ms[key] = ex * 1000
        elif not keepttl:
            self.ttl_ms.pop(key, None)
        return True

    async def delete(self, key: str) -> int:
        return int(self.data.pop(key, None) is not None)

    async def pttl(self, key: str) -> int:
        return self.ttl_ms.get(key, -1) if key in self.data else -2

    async def pexpire(self, key: str, ms: int) -> bool:
        self.ttl_ms[key] = ms
        return key in self.data

    async def publish(self, channel: str, message: str) -> int:
        self.published.append((channel, message))
        return 0


async def test_the_api_and_the_trigger_share_the_job_record_and_the_claim() -> None:
    redis = FakeRedis()
    store = RedisJobStore(redis, retention_s=3600, job_ttl_s=3600)  # type: ignore[arg-type]
    await store.create_job(Job(job_id=JOB, bucket="waste-images", key=KEY, created_at=datetime.now(UTC),
                               content_type="image/png"))
    job = await job_claims.issued_job(redis, JOB)
    assert job == job_claims.IssuedJob(JOB, "waste-images", KEY, "awaiting_upload", "image/png")
    assert await job_claims.issued_jobs(redis, [JOB, "f" * 32]) == {JOB: job}

    # Whoever claims first wins, in either order.
    assert await job_claims.claim(redis, JOB)
    assert not await store.claim_publish(JOB)
    await store.release_publish(JOB)
    assert await store.claim_publish(JOB)
    assert not await job_claims.claim(redis, JOB)

    # The trigger's state change is the API's: the record still parses, the channel carries it.
    await job_claims.set_state(redis, JOB, job_claims.QUEUED)
    stored = await store.get_job(JOB)
    assert stored is not None and stored.state is JobState.QUEUED and stored.content_type == "image/png"
    assert redis.published[-1] == ("api:job-states", json.dumps({"job_id": JOB, "state": "queued"}))


async def test_a_confirmed_claim_lives_as_long_as_the_job() -> None:
    redis = FakeRedis()
    await redis.set(job_claims.JOB_KEY.format(job_id=JOB), "{}", ex=3600)
    assert await job_claims.claim(redis, JOB)
    claim_key = job_claims.CLAIM_KEY.format(job_id=JOB)
    assert redis.ttl_ms[claim_key] == job_claims.PENDING_CLAIM_SECONDS * 1000
    await job_claims.confirm(redis, JOB)
    assert redis.ttl_ms[claim_key] == 3600 * 1000


async def test_set_state_never_resurrects_an_expired_job() -> None:
    redis = FakeRedis()
    await job_claims.set_state(redis, JOB, job_claims.QUEUED)
    assert redis.data == {} and len(redis.published) == 1

"""S3 event notifications, read as upload jobs. Pure and synchronous: parsing and checks, no I/O.

Three shapes are accepted (docs/STORAGE_EVENTS.md):

* the S3 notification, ``{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name"},
  "object": {"key", "size", "eTag"}}}]}``: what AWS S3 sends to SQS/SNS/Lambda (keys URL-encoded, ``+`` for a
  space) and what versitygw sends (``s3:``-prefixed event names, keys as they are; its POST uploads name no key);
* the same, wrapped in an SQS message or an SNS notification as a string ``Body`` / ``body`` / ``Message``;
* EventBridge's ``{"source": "aws.s3", "detail-type": "Object Created", "detail": {"bucket": {"name"},
  "object": {"key", "size", "etag"}}}``.

Test events (``s3:TestEvent``, sent by S3 when a notification is configured and by versitygw at start-up) and
records of other kinds (removals, tagging) carry no upload: they are counted and skipped. Anything else is not a
notification and is refused.

A record becomes a job only through :func:`job_for`: the bucket must be ``S3_BUCKET_NAME`` and the key must pass
the same checks as an upload-complete event (streams/upload_checks.py) and name its job through the ``job_id``
group of ``UPLOAD_KEY_PATTERN``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from models.records import UploadCompleted
from models.settings import Settings
from streams.upload_checks import RefusedEvent, _pattern, check_upload, unsafe_key_reason

MAX_NOTIFICATION_BYTES = 256 * 1024
MAX_RECORDS = 100
_CREATED = re.compile(r"(?:s3:)?ObjectCreated:[A-Za-z]+")
_WRAPPERS = ("Body", "body", "Message")


class NotANotification(Exception):
    """The message is not an S3 event notification in any accepted shape."""


@dataclass(frozen=True)
class ObjectCreated:
    """One object-created record. ``key`` is empty when the notifier did not name the object."""

    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None  # without quotes
    event_name: str = ""
    event_time: datetime | None = None


@dataclass(frozen=True)
class Notification:
    created: list[ObjectCreated] = field(default_factory=list)
    ignored: int = 0  # test events and records of other kinds
    shape: str = "s3"  # s3 | sqs | sns | eventbridge | test


def parse_notification(value: bytes) -> Notification:
    """The object-created records of one message, or :class:`NotANotification`."""
    if len(value) > MAX_NOTIFICATION_BYTES:
        raise NotANotification(f"message larger than {MAX_NOTIFICATION_BYTES} bytes")
    try:
        raw: Any = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotANotification(f"not JSON: {type(exc).__name__}") from exc
    return _parse(raw, depth=0)


def _parse(raw: Any, *, depth: int) -> Notification:
    if not isinstance(raw, dict):
        raise NotANotification("not a JSON object")
    if raw.get("Event") == "s3:TestEvent" or raw.get("eventName") == "s3:TestEvent":
        return Notification(ignored=1, shape="test")
    if "Records" in raw:
        records = raw["Records"]
        if not isinstance(records, list) or not records or len(records) > MAX_RECORDS:
            raise NotANotification(f"Records must be a list of 1 to {MAX_RECORDS} records")
        created = [c for c in (_s3_record(r) for r in records) if c is not None]
        return Notification(created=created, ignored=len(records) - len(created))
    if raw.get("source") == "aws.s3" and isinstance(raw.get("detail"), dict):
        return _eventbridge(raw)
    for name in _WRAPPERS:
        inner = raw.get(name)
        if isinstance(inner, str) and depth < 2:
            try:
                unwrapped = json.loads(inner)
            except ValueError as exc:
                raise NotANotification(f"{name} is not JSON") from exc
            parsed = _parse(unwrapped, depth=depth + 1)
            shape = "sns" if name == "Message" else "sqs"
            return Notification(parsed.created, parsed.ignored, parsed.shape if parsed.shape == "test" else shape)
    raise NotANotification("no Records, no EventBridge detail, no SQS/SNS body")


def _s3_record(record: Any) -> ObjectCreated | None:
    if not isinstance(record, dict):
        raise NotANotification("a record is not a JSON object")
    name = record.get("eventName")
    if not isinstance(name, str):
        raise NotANotification("a record has no eventName")
    if not _CREATED.fullmatch(name):
        return None
    s3 = record.get("s3")
    bucket = s3.get("bucket") if isinstance(s3, dict) else None
    obj = s3.get("object") if isinstance(s3, dict) else None
    if not isinstance(bucket, dict) or not isinstance(obj, dict):
        raise NotANotification("an ObjectCreated record has no s3.bucket or s3.object")
    key = obj.get("key", "")
    if not isinstance(key, str):
        raise NotANotification("s3.object.key is not a string")
    # S3 URL-encodes keys in notifications (a space as '+'); versitygw sends them as they are, and the keys of
    # this service's scheme have no character that decoding changes.
    return ObjectCreated(bucket=_text(bucket.get("name"), "s3.bucket.name"), key=unquote_plus(key),
                         size=_size(obj.get("size")), etag=_etag(obj.get("eTag")), event_name=name,
                         event_time=_time(record.get("eventTime")))


def _eventbridge(raw: dict[str, Any]) -> Notification:
    if raw.get("detail-type") != "Object Created":
        return Notification(ignored=1, shape="eventbridge")
    detail = raw["detail"]
    bucket, obj = detail.get("bucket"), detail.get("object")
    if not isinstance(bucket, dict) or not isinstance(obj, dict):
        raise NotANotification("an Object Created event has no detail.bucket or detail.object")
    key = obj.get("key")
    if not isinstance(key, str):
        raise NotANotification("detail.object.key is not a string")
    created = ObjectCreated(bucket=_text(bucket.get("name"), "detail.bucket.name"), key=key,
                            size=_size(obj.get("size")), etag=_etag(obj.get("etag")),
                            event_name=f"ObjectCreated:{detail.get('reason', '')}", event_time=_time(raw.get("time")))
    return Notification(created=[created], shape="eventbridge")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise NotANotification(f"{where} is missing")
    return value


def _size(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _etag(value: Any) -> str | None:
    return value.strip('"') if isinstance(value, str) and value.strip('"') else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def job_for(settings: Settings, bucket: str, key: str) -> str:
    """The job id an object of ``bucket``/``key`` belongs to, or :class:`RefusedEvent` (which proves no job)."""
    if bucket != settings.s3_bucket_name:
        raise RefusedEvent(None, "the notification names a bucket this service does not read", f"bucket={bucket!r:.80}")
    if (reason := unsafe_key_reason(key)) is not None:
        raise RefusedEvent(None, "the notification's object key is not acceptable", f"{reason}: key={key!r:.300}")
    match = _pattern(settings.upload_key_pattern).fullmatch(key)
    job_id = match.group("job_id") if match is not None and "job_id" in match.re.groupindex else None
    if job_id is None:
        raise RefusedEvent(None, "the notification's object key names no job",
                           f"key={key!r} does not match UPLOAD_KEY_PATTERN with a job_id")
    # The same checks as an upload-complete event, on the event this record would become.
    check_upload(settings, job_id, UploadCompleted(job_id=job_id, bucket=bucket, key=key).to_bytes())
    return str(job_id)

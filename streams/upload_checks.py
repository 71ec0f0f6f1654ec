"""Upload-complete events are checked before anything is fetched.

Anyone who can write to ``waste.uploads.completed`` chooses the bucket and key the worker reads, and the Kafka
key the failure would be published under. So, before any network call:

* the body must name its job (``job_id``) and the Kafka key must be that same job id: otherwise the event proves
  no job, and it is dead-lettered only (a bad body must never fail someone else's job through its Kafka key);
* the bucket must be ``S3_BUCKET_NAME``;
* the key must be plain (ASCII letters, digits, ``. _ - /``; no empty, ``.`` or ``..`` segment; at most
  ``MAX_KEY_LENGTH`` characters), so it cannot leave the bucket's path on the CDN (``..``, ``%2F``, ``\\``,
  ``http://``, control characters), and must match ``UPLOAD_KEY_PATTERN`` in full; a group named ``job_id`` in
  the pattern, when it takes part in the match, must equal the event's job id, so an event can only name its own
  upload.

Messages are what the client sees; the details (the offending key, the bucket) go to logs and dead letters.
Pure and synchronous: no I/O here.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from pydantic import ValidationError

from models.records import UploadCompleted
from models.settings import Settings

MAX_KEY_LENGTH = 256
_SAFE_KEY = re.compile(r"[A-Za-z0-9._/-]+")
# Job ids are what the API makes (uuid4 hex), what the tools make (dashed uuid4) and test probes: no control
# characters, no spaces, nothing that needs escaping in a log line or a Redis key.
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class RefusedEvent(Exception):
    """An event refused before any fetch. ``job_id`` is set only when the event proves that job."""

    def __init__(self, job_id: str | None, message: str, detail: str) -> None:
        super().__init__(f"{message} ({detail})")
        self.job_id = job_id
        self.message = message
        self.detail = detail


def unsafe_key_reason(key: str) -> str | None:
    """Why ``key`` could escape the bucket's path or be read as something else, or None when it is plain."""
    if len(key) > MAX_KEY_LENGTH:
        return f"key longer than {MAX_KEY_LENGTH} characters"
    if not _SAFE_KEY.fullmatch(key):
        return "key has characters other than ASCII letters, digits and . _ - /"
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        return "key has an empty, '.' or '..' path segment"
    return None


@functools.lru_cache(maxsize=8)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def check_upload(settings: Settings, kafka_key: str | None, value: bytes) -> UploadCompleted:
    """The event, if it is one the worker may act on; else :class:`RefusedEvent`."""
    try:
        raw: Any = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RefusedEvent(None, "the event is not JSON", f"{type(exc).__name__}: {exc}") from exc
    claimed = raw.get("job_id") if isinstance(raw, dict) else None
    if not isinstance(claimed, str) or not _JOB_ID.fullmatch(claimed):
        raise RefusedEvent(None, "the event has no valid job_id", f"job_id={claimed!r:.80}")
    if kafka_key != claimed:
        # The Kafka key names a job the body does not: answering it would fail a job this event cannot speak for.
        raise RefusedEvent(None, "the event's key is not its job_id", f"key={kafka_key!r:.80} job_id={claimed!r}")
    job_id = claimed
    try:
        upload = UploadCompleted.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else None
        where = ".".join(map(str, first["loc"])) if first else "event"
        # Field names and pydantic's wording only: never the offending value.
        raise RefusedEvent(job_id, f"invalid upload-complete event: {where}: {first['msg'] if first else exc}",
                           str(exc)[:500]) from exc
    if upload.bucket != settings.s3_bucket_name:
        raise RefusedEvent(job_id, "the event names a bucket this service does not read",
                           f"bucket={upload.bucket!r:.80}")
    if (reason := unsafe_key_reason(upload.key)) is not None:
        raise RefusedEvent(job_id, "the event's object key is not acceptable", f"{reason}: key={upload.key!r:.300}")
    match = _pattern(settings.upload_key_pattern).fullmatch(upload.key)
    if match is None:
        raise RefusedEvent(job_id, "the event's object key is not acceptable",
                           f"key={upload.key!r} does not match UPLOAD_KEY_PATTERN")
    if "job_id" in match.re.groupindex and match.group("job_id") not in (None, job_id):
        raise RefusedEvent(job_id, "the event's object key is not acceptable",
                           f"key={upload.key!r} belongs to another job")
    return upload

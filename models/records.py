"""Events on the topics, as pydantic models serialised to plain JSON.

Why not ``faust.Record``: the input and output topics are wire contracts with producers and consumers that are
not Faust (kcat, a Java client, the API). Plain JSON without Faust metadata, validated on the way in, lets a
malformed event become a ``failed`` result with a reason instead of a deserialisation crash inside the stream.
Topics therefore carry raw bytes and each agent decodes with the model below.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from models.classification import WasteClassification
from models.errors import ErrorCode

PHASH_HEX_LEN = 64  # 256-bit pHash (hash_size=16)


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


# --- waste.uploads.completed (key = job_id) -------------------------------------------------------------------


class UploadCompleted(_Event):
    """Written by the API (or any producer) once the photo is in the bucket."""

    job_id: str = Field(min_length=1, max_length=128)
    bucket: str = Field(min_length=1, max_length=255)
    key: str = Field(min_length=1, max_length=1024)
    content_type: str | None = None
    size: int | None = Field(default=None, ge=0)
    uploaded_at: AwareDatetime | None = None


# --- shared parts ---------------------------------------------------------------------------------------------


class FetchSource(StrEnum):
    CDN = "cdn"
    S3 = "s3"


class FetchInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: FetchSource
    cdn_cache: Literal["hit", "miss", "unknown"] = "unknown"
    bytes: int = 0
    cdn_age_s: int | None = None
    cdn_error: str | None = None  # why the CDN was skipped, when S3 served it


class CacheSource(StrEnum):
    TABLE = "table"  # this partition's Faust table
    REDIS = "redis"  # the shared cache
    INFLIGHT = "inflight"  # waited on another job's model call for the same hash
    MODEL = "model"  # this job paid for the model call
    NEAR = "near"  # the shared cache's result for another pHash within NEAR_DUPLICATE_MAX_DISTANCE bits
    REFRAMED = "reframed"  # the shared cache's result for a photo this one is a crop/rotation/mirror/letterbox of


class CacheInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    hit: bool
    source: CacheSource
    phash: str
    distance: int = 0
    reused_job_id: str | None = None  # the job whose model call produced this answer, when it is not this job
    matched_phash: str | None = None  # the pHash of the reused result, when it is not this job's (near matches)
    model_version: str | None = None
    # Which check accepted a reframed match: "orb+ransac inliers=.../... angle=... correlation=..." (else None).
    check: str | None = None


class ErrorInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: ErrorCode
    message: str


# --- waste.images.hashed (key = phash) ------------------------------------------------------------------------


class ImageHashed(_Event):
    job_id: str
    bucket: str
    key: str
    phash: str = Field(min_length=PHASH_HEX_LEN, max_length=PHASH_HEX_LEN)
    image_url: str
    fetch: FetchInfo
    received_at: AwareDatetime
    timings_ms: dict[str, float] = Field(default_factory=dict)
    # SHA-256 of the bytes that were hashed: classify shows the model these bytes or none (None in older events).
    sha256: str | None = None
    # No longer written or read: classify makes the model's thumbnail itself, on a miss. The field stays so the
    # events keep their shape (``"thumbnail_b64": null``); the in-flight table never stores it.
    thumbnail_b64: str | None = None
    # Set by dedupe when a near-duplicate's model call is under way: the event is re-sent keyed by that call's
    # pHash, so the dedupe step of its partition adds this job to the call's waiters. ``near_hops`` counts the
    # times a job went back to its own pHash after such a wait found no call (it then stops waiting on claims).
    wait_on: str | None = None
    near_hops: int = Field(default=0, ge=0)
    # The APP_ID of the worker group whose fetch made this event. The internal topics have fixed names, so every
    # group on a broker reads every group's events; a group answers only its own (None: events before this field).
    origin: str | None = None

    def of_group(self, app_id: str) -> bool:
        """Made by the worker group ``app_id`` (or before events said which group made them)."""
        return self.origin is None or self.origin == app_id


# --- waste.vision.requests (key = phash) ----------------------------------------------------------------------


class VisionRequest(_Event):
    """Ask for one paid model call for ``phash``; ``job`` is the job that owns the call."""

    phash: str
    job: ImageHashed
    requested_at: AwareDatetime
    # The photo's packed ORB features (base64, a few KB), computed by dedupe's reframed lookup: classify posts
    # them in the reframed index when the call succeeds (streams/reframed_index.py). None: not indexed.
    reframed_features: str | None = None

    def of_group(self, app_id: str) -> bool:
        """Asked for by the worker group ``app_id`` (the owning job's group, see :meth:`ImageHashed.of_group`)."""
        return self.job.of_group(app_id)


# --- waste.dedupe.maintenance (key = phash) -------------------------------------------------------------------


class MaintenanceCommand(StrEnum):
    """What the dedupe step's timers ask the partition of a pHash to do; on the wire, the value's bytes as they are
    (``b"expire"``...), as before this type existed."""

    EXPIRE = "expire"  # the table's answer is past CACHE_TTL_SECONDS: delete it
    INVALIDATE = "invalidate"  # an operator invalidated the answer: delete the table's copy
    INFLIGHT = "inflight"  # the model call looks lost: re-issue it (or give up after three tries)

    def to_bytes(self) -> bytes:
        return self.value.encode()

    @classmethod
    def parse(cls, raw: bytes | str | None) -> MaintenanceCommand | None:
        """The command, or None for a value that is none of them."""
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        try:
            return cls(text or "")
        except ValueError:
            return None


# --- cache entry (Redis value and Faust table value) ----------------------------------------------------------


class AnsweredBy(BaseModel):
    """Who classified the photo, as the model endpoint reported it. The project's simulator reports
    ``system_fingerprint = "simulator"``: such answers are marked ``simulated`` so no client mistakes them for
    a real model's."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str
    system_fingerprint: str | None = None
    simulated: bool = False


class CachedClassification(_Event):
    phash: str
    classification: WasteClassification
    model_version: str
    job_id: str  # the job whose model call produced it
    created_at: AwareDatetime
    answered_by: AnsweredBy | None = None  # absent in entries written before it was recorded
    cost_usd: float | None = None  # dollars of the model call that produced it (streams/cost.py); None before


# --- waste.analysis.results (key = job_id) --------------------------------------------------------------------


class JobStatus(StrEnum):
    DONE = "done"
    FAILED = "failed"


class AnalysisResult(_Event):
    """The one terminal result of a job."""

    job_id: str
    status: JobStatus
    classification: WasteClassification | None
    cache: CacheInfo | None
    fetch: FetchInfo | None
    timings_ms: dict[str, float] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    image_key: str | None = None
    image_url: str | None = None
    answered_by: AnsweredBy | None = None  # the model behind the classification (also for cache hits)
    completed_at: AwareDatetime = Field(default_factory=utcnow)


# --- waste.dead-letter (key = job_id when known) --------------------------------------------------------------


class DeadLetter(_Event):
    job_id: str | None
    code: ErrorCode
    message: str
    stage: str
    topic: str
    partition: int | None = None
    offset: int | None = None
    original: str  # the original event, decoded as UTF-8 with replacement
    failed_at: AwareDatetime = Field(default_factory=utcnow)

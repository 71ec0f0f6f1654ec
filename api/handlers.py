"""HTTP handlers: analyze (pre-signed upload), upload-complete (publish), results, health."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from api.context import BACKENDS, BACKGROUND, METRICS, SETTINGS
from api.errors import ApiError, error_body
from api.store import Job, JobState
from api.tokens import TokenCheck, make_token, verify_token
from api.uploads import StorageUnavailable
from models.records import UploadCompleted, utcnow

log = logging.getLogger("api.handlers")

# Job ids are ours (uuid4 hex), but results may name jobs created by other producers: accept any safe id.
JOB_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
HEALTH_TIMEOUT_S = 2.0


class AnalyzeRequest(BaseModel):
    """Optional body of analyze. A declared content type is pinned in the upload policy."""

    model_config = ConfigDict(extra="ignore")

    content_type: str | None = None

    @field_validator("content_type")
    @classmethod
    def _image_only(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("image/") or len(value) > 100):
            raise ValueError("content_type must be an image/* type")
        return value


def request_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.query.get("token")


def authorize(request: web.Request, job_id: str, token: str | None) -> None:
    """403 unless the token was issued for this job. Checked before any lookup, so it reveals nothing."""
    if not JOB_ID_RE.match(job_id):
        raise ApiError(404, "JOB_NOT_FOUND", "no such job")
    if not token:
        raise ApiError(403, "TOKEN_MISSING", "a job token is required (Authorization: Bearer <token>)")
    check = verify_token(request.app[SETTINGS].api_token_secret, job_id, token)
    if check is TokenCheck.EXPIRED:
        raise ApiError(403, "TOKEN_EXPIRED", "the token for this job has expired")
    if check is not TokenCheck.VALID:
        raise ApiError(403, "TOKEN_INVALID", "the token is not valid for this job")


async def _read_analyze_body(request: web.Request) -> AnalyzeRequest:
    if not request.can_read_body:
        return AnalyzeRequest()
    raw = await request.read()  # bounded by client_max_size
    if not raw.strip():
        return AnalyzeRequest()
    try:
        return AnalyzeRequest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ApiError(
            400, "VALIDATION_ERROR", f"{'.'.join(map(str, first['loc'])) or 'body'}: {first['msg']}"
        ) from exc


async def analyze(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    backends = request.app[BACKENDS]
    body = await _read_analyze_body(request)

    job_id = uuid.uuid4().hex
    key = f"uploads/{job_id}"  # generated here, never taken from the client
    upload = await backends.storage.presign(key, body.content_type)  # local signing, no network call
    now = utcnow()
    token_expires = int(now.timestamp()) + settings.api_token_ttl_seconds
    await backends.store.create_job(Job(job_id=job_id, bucket=settings.s3_bucket_name, key=key, created_at=now))
    log.info("job %s issued, key %s", job_id, key)
    return web.json_response(
        {
            "job_id": job_id,
            "upload_url": upload.post_url,
            "upload_fields": upload.post_fields,
            "put_url": upload.put_url,
            "image_url": f"{settings.cdn_base_url}/{key}",
            "token": make_token(settings.api_token_secret, job_id, expires_at=token_expires),
            "token_expires_at": datetime.fromtimestamp(token_expires, UTC).isoformat(),
            "expires_at": (now + timedelta(seconds=settings.upload_url_expires_seconds)).isoformat(),
            "max_bytes": settings.upload_max_bytes,
        }
    )


async def upload_complete(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    backends = request.app[BACKENDS]
    job_id = request.match_info["job_id"]
    authorize(request, job_id, request_token(request))
    job = await backends.store.get_job(job_id)
    if job is None:
        raise ApiError(404, "JOB_NOT_FOUND", "no such job (or it expired)")
    if job.state != JobState.AWAITING_UPLOAD:  # already published: say how far it got
        result = await backends.store.get_result(job_id)
        return _accepted(job_id, JobState(result.status.value) if result is not None else job.state)

    try:
        head = await backends.storage.head(job.key)
    except StorageUnavailable as exc:
        raise ApiError(503, "STORAGE_UNAVAILABLE", "could not check the upload") from exc
    if head is None:
        raise ApiError(409, "UPLOAD_MISSING", "the image has not been uploaded yet")
    if head.size > settings.upload_max_bytes:
        raise ApiError(413, "UPLOAD_TOO_LARGE", f"the image is larger than {settings.upload_max_bytes} bytes")
    if head.size == 0:
        raise ApiError(409, "UPLOAD_EMPTY", "the uploaded object is empty")
    if head.content_type is not None and not head.content_type.startswith("image/"):
        raise ApiError(415, "UPLOAD_NOT_IMAGE", "the uploaded object is not an image/* content type")

    if not await backends.store.claim_publish(job_id):
        return _accepted(job_id, JobState.QUEUED)  # a concurrent call (maybe on another instance) publishes
    # Announce "queued" before publishing: a fast pipeline (a cache hit) must not overtake the state change.
    await backends.store.set_state(job_id, JobState.QUEUED)
    event = UploadCompleted(
        job_id=job_id,
        bucket=job.bucket,
        key=job.key,
        content_type=head.content_type,
        size=head.size,
        uploaded_at=utcnow(),
    )
    try:
        await backends.publisher.publish(event)
    except Exception as exc:  # timeouts included; the client may retry
        await backends.store.set_state(job_id, JobState.AWAITING_UPLOAD)
        await backends.store.release_publish(job_id)
        log.warning("job %s: publishing upload-complete failed: %s", job_id, type(exc).__name__)
        raise ApiError(503, "QUEUE_UNAVAILABLE", "could not queue the job, try again") from exc
    request.app[METRICS].uploads_published.inc()
    log.info("job %s queued (%s bytes, %s)", job_id, head.size, head.content_type)
    return _accepted(job_id, JobState.QUEUED)


def _accepted(job_id: str, state: JobState) -> web.Response:
    return web.json_response({"job_id": job_id, "state": state.value}, status=202)


async def get_result(request: web.Request) -> web.Response:
    backends = request.app[BACKENDS]
    job_id = request.match_info["job_id"]
    authorize(request, job_id, request_token(request))
    result = await backends.store.get_result(job_id)
    if result is not None:
        return web.json_response(
            {"job_id": job_id, "state": result.status.value, "result": result.model_dump(mode="json")}
        )
    job = await backends.store.get_job(job_id)
    if job is None:
        raise ApiError(404, "JOB_NOT_FOUND", "no such job (or it expired)")
    return web.json_response({"job_id": job_id, "state": job.state.value, "result": None})


async def healthz(request: web.Request) -> web.Response:
    backends = request.app[BACKENDS]
    background = request.app[BACKGROUND]
    checks: dict[str, str] = {}
    for name, probe in (("kafka", backends.publisher.ping), ("redis", backends.store.ping)):
        try:
            await asyncio.wait_for(probe(), HEALTH_TIMEOUT_S)
            checks[name] = "ok"
        except (TimeoutError, Exception) as exc:  # report, never raise: this *is* the error report
            checks[name] = f"fail: {type(exc).__name__}"
    checks["results_consumer"] = "ok" if background.results_ready.is_set() else "starting"
    healthy = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"status": "ok" if healthy else "fail", "checks": checks}
    if not healthy:
        failing = ", ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
        body.update(error_body("UNHEALTHY", failing))
    return web.json_response(body, status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    return request.app[METRICS].render()

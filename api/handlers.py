"""HTTP handlers: analyze (pre-signed upload), upload-complete (publish), results, health."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from aiohttp import web

from api import limits
from api.auth import authorize, request_token
from api.context import BACKENDS, BACKGROUND, LIMITER, METRICS, SETTINGS
from api.errors import ApiError, error_body
from api.privacy import client_result
from api.store import Job, JobState, JobStore
from api.tokens import make_token
from api.uploads import StorageUnavailable
from models.records import UploadCompleted, utcnow

log = logging.getLogger("api.handlers")

HEALTH_TIMEOUT_S = 2.0
JSON_TYPES = ("application/json",)


async def _rate_limit(request: web.Request, bucket: str, limit: int) -> None:
    settings = request.app[SETTINGS]
    await limits.enforce(request, request.app[BACKENDS].ratelimit or request.app[LIMITER], bucket, limit,
                         settings.rate_limit_window_seconds, settings.api_trusted_proxy_hops)


async def _read_content_type(request: web.Request) -> str:
    """The Content-Type to pin for the upload: the body's ``content_type`` (exactly one of
    ``UPLOAD_CONTENT_TYPES``) or, without a body, the first of them. Off-spec bodies are 400."""
    allowed = request.app[SETTINGS].upload_content_types
    raw = await request.read() if request.can_read_body else b""  # bounded by client_max_size
    if not raw.strip():
        return allowed[0]
    if request.content_type not in JSON_TYPES:
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "the body must be application/json")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "VALIDATION_ERROR", "body: not valid JSON") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "VALIDATION_ERROR", "body: expected a JSON object")
    if set(body) - {"content_type"}:
        raise ApiError(400, "VALIDATION_ERROR", "body: only content_type is accepted")
    if "content_type" not in body:
        return allowed[0]
    content_type = body["content_type"]
    if not isinstance(content_type, str):
        raise ApiError(400, "VALIDATION_ERROR", "content_type: expected a string")
    if content_type not in allowed:
        raise ApiError(400, "CONTENT_TYPE_NOT_ALLOWED", "content_type must be one of: " + ", ".join(allowed))
    return content_type


async def analyze(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    backends = request.app[BACKENDS]
    await _rate_limit(request, "analyze", settings.rate_limit_analyze)
    content_type = await _read_content_type(request)

    job_id = uuid.uuid4().hex
    key = f"uploads/{job_id}"  # generated here, never taken from the client
    upload = await backends.storage.presign(key, content_type)  # local signing, no network call
    now = utcnow()
    token_expires = int(now.timestamp()) + settings.api_token_ttl_seconds
    await backends.store.create_job(
        Job(job_id=job_id, bucket=settings.s3_bucket_name, key=key, created_at=now, content_type=content_type)
    )
    log.info("job %s issued, key %s", job_id, key)
    return web.json_response(
        {
            "job_id": job_id,
            "upload_url": upload.post_url,
            "upload_fields": upload.post_fields,
            "image_url": f"{settings.cdn_base_url}/{key}",
            "token": make_token(settings.api_token_secret, job_id, expires_at=token_expires),
            "token_expires_at": datetime.fromtimestamp(token_expires, UTC).isoformat(),
            "expires_at": (now + timedelta(seconds=settings.upload_url_expires_seconds)).isoformat(),
            "max_bytes": settings.upload_max_bytes,
            "content_type": content_type,
        }
    )


async def _refuse_upload(request: web.Request, job: Job, status: int, code: str, message: str) -> NoReturn:
    """Delete the refused object (so it is never served or processed), then answer the refusal."""
    try:
        await request.app[BACKENDS].storage.delete(job.key)
    except StorageUnavailable as exc:
        log.warning("job %s: deleting the refused object failed: %s", job.job_id, exc)
        raise ApiError(503, "STORAGE_UNAVAILABLE", "could not remove the refused upload, try again") from exc
    log.info("job %s: upload refused (%s), object deleted", job.job_id, code)
    raise ApiError(status, code, message)


async def upload_complete(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    backends = request.app[BACKENDS]
    job_id = request.match_info["job_id"]
    await _rate_limit(request, "upload-complete", settings.rate_limit_upload_complete)
    authorize(request, job_id, request_token(request))
    job = await _existing_job(backends.store, job_id)
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
        await _refuse_upload(request, job, 413, "UPLOAD_TOO_LARGE",
                             f"the image is larger than {settings.upload_max_bytes} bytes")
    if head.size == 0:
        await _refuse_upload(request, job, 409, "UPLOAD_EMPTY", "the uploaded object is empty")
    wanted = job.content_type or head.content_type
    if head.content_type not in settings.upload_content_types or head.content_type != wanted:
        await _refuse_upload(request, job, 415, "UPLOAD_NOT_IMAGE",
                             "the uploaded object's Content-Type is not the allowed image type of this job")

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
        return web.json_response({"job_id": job_id, "state": result.status.value, "result": client_result(result)})
    job = await _existing_job(backends.store, job_id)
    return web.json_response({"job_id": job_id, "state": job.state.value, "result": None})


async def _existing_job(store: JobStore, job_id: str) -> Job:
    job = await store.get_job(job_id)
    if job is None:
        raise ApiError(404, "JOB_NOT_FOUND", "no such job (or it expired)")
    return job


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

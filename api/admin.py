"""Operator endpoints: stop serving one cached classification (a wrong answer, a changed rule), and the
admin view of a result with its provenance (the pHash, the job whose model call was reused).

``DELETE /api/v1/waste/admin/cache/{phash}``, ``DELETE /api/v1/waste/admin/cache?job_id=...`` and
``GET /api/v1/waste/admin/results/{job_id}``, with ``Authorization: Bearer <API_ADMIN_TOKEN>`` (the header
only: a token in a query string ends up in proxy logs and browser history). Disabled (404) unless
``API_ADMIN_TOKEN`` is set to a non-empty value.
"""

from __future__ import annotations

import hmac
import logging
from typing import Protocol

from aiohttp import web
from redis.asyncio import Redis

from api.context import BACKENDS, SETTINGS
from api.errors import ApiError
from api.handlers import JOB_ID_RE, WWW_AUTHENTICATE
from streams.invalidation import invalidate

log = logging.getLogger("api.admin")


class CacheAdmin(Protocol):
    async def invalidate(self, *, phash: str | None, job_id: str | None) -> list[str]: ...


class RedisCacheAdmin:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def invalidate(self, *, phash: str | None, job_id: str | None) -> list[str]:
        return await invalidate(self._redis, phash=phash, job_id=job_id)


def require_operator(request: web.Request) -> None:
    """404 when the admin endpoints are off; 401 without a bearer header; 403 with a wrong one."""
    expected = request.app[SETTINGS].api_admin_token
    if expected is None or not expected.get_secret_value():
        raise ApiError(404, "NOT_FOUND", "operator endpoints are disabled (set API_ADMIN_TOKEN)")
    auth = request.headers.get("Authorization", "")
    token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    if not token:
        raise ApiError(401, "TOKEN_MISSING", "an operator token is required (Authorization: Bearer <token>)",
                       headers=WWW_AUTHENTICATE)
    if not hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
        raise ApiError(403, "TOKEN_INVALID", "the operator token is not valid")


async def full_result(request: web.Request) -> web.Response:
    """The result as the pipeline wrote it, provenance included (operators only)."""
    require_operator(request)
    job_id = request.match_info["job_id"]
    if not JOB_ID_RE.match(job_id):
        raise ApiError(404, "JOB_NOT_FOUND", "no such job")
    result = await request.app[BACKENDS].store.get_result(job_id)
    if result is None:
        raise ApiError(404, "JOB_NOT_FOUND", "no result for that job (or it expired)")
    return web.json_response(result.model_dump(mode="json"))


async def invalidate_cached_result(request: web.Request) -> web.Response:
    admin = request.app[BACKENDS].cache_admin
    require_operator(request)
    if admin is None:
        raise ApiError(404, "NOT_FOUND", "operator endpoints are disabled (set API_ADMIN_TOKEN)")
    phash = request.match_info.get("phash")
    job_id = request.query.get("job_id")
    try:
        invalidated = await admin.invalidate(phash=phash, job_id=job_id)
    except ValueError as exc:
        raise ApiError(400, "BAD_REQUEST", str(exc)) from exc
    if not invalidated:
        raise ApiError(404, "NOT_CACHED", "nothing is cached under that pHash or job")
    log.info("operator invalidated %d cached result(s): %s", len(invalidated), ",".join(invalidated))
    return web.json_response({"invalidated": invalidated})

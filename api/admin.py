"""Operator endpoints: stop serving one cached classification (a wrong answer, a changed rule).

``DELETE /api/v1/admin/cache/{phash}`` or ``DELETE /api/v1/admin/cache?job_id=...``, with
``Authorization: Bearer <API_ADMIN_TOKEN>``. Disabled (404) unless ``API_ADMIN_TOKEN`` is set.
"""

from __future__ import annotations

import hmac
import logging
from typing import Protocol

from aiohttp import web
from redis.asyncio import Redis

from api.context import BACKENDS, SETTINGS
from api.errors import ApiError
from api.handlers import request_token
from streams.invalidation import invalidate

log = logging.getLogger("api.admin")


class CacheAdmin(Protocol):
    async def invalidate(self, *, phash: str | None, job_id: str | None) -> list[str]: ...


class RedisCacheAdmin:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def invalidate(self, *, phash: str | None, job_id: str | None) -> list[str]:
        return await invalidate(self._redis, phash=phash, job_id=job_id)


async def invalidate_cached_result(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    admin = request.app[BACKENDS].cache_admin
    if settings.api_admin_token is None or admin is None:
        raise ApiError(404, "NOT_FOUND", "operator endpoints are disabled (set API_ADMIN_TOKEN)")
    token = request_token(request) or ""
    if not hmac.compare_digest(token.encode(), settings.api_admin_token.get_secret_value().encode()):
        raise ApiError(403, "TOKEN_INVALID", "an operator token is required")
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

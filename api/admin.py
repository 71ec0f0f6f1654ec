"""Operator endpoints: stop serving one cached classification (a wrong answer, a changed rule), and the
admin view of a result with its provenance (the pHash, the job whose model call was reused).

``DELETE /api/v1/waste/admin/cache/{phash}``, ``DELETE /api/v1/waste/admin/cache?job_id=...`` and
``GET /api/v1/waste/admin/results/{job_id}``, with ``Authorization: Bearer <API_ADMIN_TOKEN>`` (the header
only: a token in a query string ends up in proxy logs and browser history). Disabled (404) unless
``API_ADMIN_TOKEN`` is set to a non-empty value.
"""

from __future__ import annotations

import logging

from aiohttp import web

from api.auth import JOB_ID_RE, operator_endpoints_off, require_operator
from api.context import BACKENDS
from api.errors import ApiError

log = logging.getLogger("api.admin")


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
    """Stop serving the cached classification of a pHash (path) or of the job that paid for it (``?job_id=``)."""
    require_operator(request)
    admin = request.app[BACKENDS].cache_admin
    if admin is None:
        raise operator_endpoints_off()
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

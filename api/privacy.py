"""What a client may see of a result: nothing that names another user's job, object key or pHash.

The results topic keeps the whole provenance (``cache.phash``, ``cache.reused_job_id``,
``cache.matched_phash``, ``fetch.cdn_error``) for the pipeline, metrics and operators (the admin view,
``GET /api/v1/waste/admin/results/{job_id}``); HTTP and WebSocket clients get :func:`client_result`.
"""

from __future__ import annotations

from typing import Any

from models.records import AnalysisResult

# cache.phash would let a client match its photo against others' (and find reused_job_id through the
# admin tools); reused_job_id names another user's job, and with it their photo at uploads/{job_id}.
INTERNAL_CACHE_FIELDS = ("phash", "reused_job_id", "matched_phash")
INTERNAL_FETCH_FIELDS = ("cdn_error",)  # names internal hosts and ports


def client_result(result: AnalysisResult) -> dict[str, Any]:
    data = result.model_dump(mode="json")
    for section, fields in (("cache", INTERNAL_CACHE_FIELDS), ("fetch", INTERNAL_FETCH_FIELDS)):
        part = data.get(section)
        if isinstance(part, dict):
            for name in fields:
                part.pop(name, None)
    return data

"""The OpenAPI 3.1 document of the HTTP endpoints, written by hand (the WebSocket is in api/README.md)."""

from __future__ import annotations

import copy
from typing import Any

from api.privacy import INTERNAL_CACHE_FIELDS, INTERNAL_FETCH_FIELDS
from models.records import AnalysisResult
from models.settings import Settings


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """An error response; ``headers`` maps each header it carries to that header's JSON type."""
    response: dict[str, Any] = {"description": description}
    if headers:
        response["headers"] = {name: {"schema": {"type": kind}} for name, kind in headers.items()}
    return {**response, "content": {"application/json": {"schema": _ref("Error")}}}


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 128}}
_TOKEN_QUERY = {
    "name": "token",
    "in": "query",
    "required": False,
    "description": "The job token, if it is not sent as `Authorization: Bearer <token>`.",
    "schema": {"type": "string"},
}
_JOB_STATE = {"type": "string", "enum": ["awaiting_upload", "queued", "done", "failed"]}
_UNAUTHORIZED = _error("No token (`WWW-Authenticate: Bearer`)", headers={"WWW-Authenticate": "string"})
# What a job's endpoints answer before any lookup (api/auth.py: authorize), and the operator endpoints' likewise.
_JOB_REFUSALS = {"401": _UNAUTHORIZED, "403": _error("Wrong or expired token"), "404": _error("Unknown or expired job")}
_OPERATOR_REFUSALS = {"401": _UNAUTHORIZED, "403": _error("Wrong operator token")}
_RATE_LIMITED = _error("Too many requests from this client (RATE_LIMIT_*); retry after `Retry-After` seconds",
                       headers={"Retry-After": "integer"})


def _without(schema: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    trimmed = copy.deepcopy(schema)
    for name in fields:
        trimmed.get("properties", {}).pop(name, None)
    trimmed["required"] = [r for r in trimmed.get("required", []) if r not in fields]
    return trimmed


def _result_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """The results-topic record's schema, and the schemas it refers to."""
    schema = AnalysisResult.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
    return schema, schema.pop("$defs", {})


def _schemas(settings: Settings) -> dict[str, Any]:
    result_schema, defs = _result_schema()
    # Clients get the client view (api/privacy.py): no pHash, no other job's id, no internal CDN error.
    defs["CacheInfo"] = _without(defs["CacheInfo"], INTERNAL_CACHE_FIELDS)
    defs["FetchInfo"] = _without(defs["FetchInfo"], INTERNAL_FETCH_FIELDS)
    # Operators (the admin view) get the whole record: it differs in these two parts only.
    full_result, full_defs = _result_schema()
    internal = ("CacheInfo", "FetchInfo")
    full_result = _rename_refs(full_result, {f"#/components/schemas/{k}": f"#/components/schemas/Internal{k}"
                                             for k in internal})
    return {
        **defs,
        **{f"Internal{k}": full_defs[k] for k in internal},
        "AnalysisResult": result_schema,
        "InternalAnalysisResult": full_result,
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
        "AnalyzeRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "content_type": {
                    "type": "string",
                    "enum": list(settings.upload_content_types),
                    "description": "Optional (default: the first allowed type). The upload must carry exactly "
                    "this Content-Type; the S3 server refuses anything else.",
                }
            },
        },
        "AnalyzeResponse": {
            "type": "object",
            "required": ["job_id", "upload_url", "upload_fields", "image_url", "token", "token_expires_at",
                         "expires_at", "max_bytes", "content_type"],
            "properties": {
                "job_id": {"type": "string"},
                "upload_url": {
                    "type": "string",
                    "description": "POST a multipart form here: every upload_fields entry (Content-Type included), "
                    "then the file as the last field, named `file`. At most max_bytes.",
                },
                "upload_fields": {"type": "object", "additionalProperties": {"type": "string"}},
                "content_type": {"type": "string", "description": "The Content-Type pinned in the upload policy."},
                "image_url": {"type": "string", "description": "Where the image is served, through the CDN."},
                "token": {"type": "string", "description": "Access token for this job; keep it private. "
                          "Opaque; refused with 403 TOKEN_EXPIRED after token_expires_at."},
                "token_expires_at": {"type": "string", "format": "date-time",
                                     "description": "Until when the token reads this job (API_TOKEN_TTL_SECONDS)."},
                "expires_at": {"type": "string", "format": "date-time",
                               "description": "Until when the pre-signed upload works."},
                "max_bytes": {"type": "integer"},
            },
        },
        "JobView": {
            "type": "object",
            "required": ["job_id", "state"],
            "properties": {
                "job_id": {"type": "string"},
                "state": _JOB_STATE,
                "result": {"anyOf": [_ref("AnalysisResult"), {"type": "null"}]},
            },
        },
        "Health": {
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["ok", "fail"]},
                "checks": {"type": "object", "additionalProperties": {"type": "string"}},
                "error": _ref("Error"),
            },
        },
    }


def _rename_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: (renames.get(v, v) if k == "$ref" else _rename_refs(v, renames)) for k, v in node.items()}
    if isinstance(node, list):
        return [_rename_refs(v, renames) for v in node]
    return node


def openapi_document(settings: Settings) -> dict[str, Any]:
    bearer: list[dict[str, list[str]]] = [{"jobToken": []}]
    operator: list[dict[str, list[str]]] = [{"operatorToken": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Waste photo analysis API",
            "version": "1.0.0",
            "description": "Upload a photo with a pre-signed URL, confirm it, and get the analysis live over "
            "`GET /api/v1/waste/ws` (WebSocket; messages in api/README.md) or by polling the results endpoint.",
        },
        "paths": {
            "/api/v1/waste/analyze": {
                "post": {
                    "summary": "Start a job: get a pre-signed upload (POST form) and a job token",
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _ref("AnalyzeRequest")}},
                    },
                    "responses": {
                        "200": _ok("The job and where to upload", "AnalyzeResponse"),
                        "400": _error("Invalid body, or a content_type that is not allowed"),
                        "413": _error("Body too large"),
                        "415": _error("A body that is not application/json"),
                        "429": _RATE_LIMITED,
                        "503": _error("Redis unavailable; retry"),
                    },
                }
            },
            "/api/v1/waste/upload-complete/{job_id}": {
                "post": {
                    "summary": "Confirm the upload; the job is queued for analysis (idempotent)",
                    "security": bearer,
                    "parameters": [_JOB_ID, _TOKEN_QUERY],
                    "responses": {
                        "202": _ok("Queued (or already queued)", "JobView"),
                        **_JOB_REFUSALS,
                        "409": _error("The object is not in the bucket yet, or empty (then deleted)"),
                        "413": _error("The object is larger than the upload limit (deleted)"),
                        "415": _error("The object is not the job's allowed image type (deleted)"),
                        "429": _RATE_LIMITED,
                        "503": _error("Kafka, Redis or S3 unavailable; retry"),
                    },
                }
            },
            "/api/v1/waste/results/{job_id}": {
                "get": {
                    "summary": "The job's result if there is one, else its state",
                    "security": bearer,
                    "parameters": [_JOB_ID, _TOKEN_QUERY],
                    "responses": {
                        "200": _ok("State, and the result once there is one", "JobView"),
                        **_JOB_REFUSALS,
                        "503": _error("Redis unavailable; retry"),
                    },
                }
            },
            "/api/v1/waste/admin/cache/{phash}": {
                "delete": {
                    "summary": "Operators: stop serving the cached classification of one pHash",
                    "description": "Needs `Authorization: Bearer <API_ADMIN_TOKEN>` (header only); disabled "
                    "(404) when unset or empty.",
                    "security": operator,
                    "parameters": [{"name": "phash", "in": "path", "required": True,
                                    "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}],
                    "responses": {
                        "200": {"description": "`{\"invalidated\": [pHash, ...]}`"},
                        "400": _error("Malformed pHash"),
                        **_OPERATOR_REFUSALS,
                        "404": _error("Nothing cached under it, or operator endpoints disabled"),
                    },
                }
            },
            "/api/v1/waste/admin/cache": {
                "delete": {
                    "summary": "Operators: stop serving the cached classification a job paid for (`?job_id=`)",
                    "security": operator,
                    "parameters": [{"name": "job_id", "in": "query", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "`{\"invalidated\": [pHash, ...]}`"},
                        "400": _error("No job id"),
                        **_OPERATOR_REFUSALS,
                        "404": _error("Nothing cached for that job, or operator endpoints disabled"),
                    },
                }
            },
            "/api/v1/waste/admin/results/{job_id}": {
                "get": {
                    "summary": "Operators: a job's result with its provenance (pHash, reused job)",
                    "security": operator,
                    "parameters": [_JOB_ID],
                    "responses": {
                        "200": _ok("The result as the pipeline published it", "InternalAnalysisResult"),
                        **_OPERATOR_REFUSALS,
                        "404": _error("No result for that job, or operator endpoints disabled"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Kafka producer, Redis and the results consumer",
                    "responses": {"200": _ok("Healthy", "Health"), "503": _ok("Unhealthy", "Health")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "Text exposition format", "content": {"text/plain": {}}}},
                }
            },
        },
        "components": {
            "securitySchemes": {"jobToken": {"type": "http", "scheme": "bearer"},
                                "operatorToken": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(settings),
        },
    }

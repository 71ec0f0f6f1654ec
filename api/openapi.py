"""The OpenAPI 3.1 document of the HTTP endpoints, written by hand (the WebSocket is in api/README.md)."""

from __future__ import annotations

from typing import Any

from models.records import AnalysisResult


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


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


def _schemas() -> dict[str, Any]:
    result_schema = AnalysisResult.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
    defs = result_schema.pop("$defs", {})
    return {
        **defs,
        "AnalysisResult": result_schema,
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
            "properties": {
                "content_type": {
                    "type": "string",
                    "pattern": "^image/",
                    "description": "Optional. When given, the upload must use exactly this Content-Type.",
                }
            },
        },
        "AnalyzeResponse": {
            "type": "object",
            "required": ["job_id", "upload_url", "upload_fields", "put_url", "image_url", "token", "token_expires_at",
                         "expires_at"],
            "properties": {
                "job_id": {"type": "string"},
                "upload_url": {
                    "type": "string",
                    "description": "POST a multipart form here: every upload_fields entry, a Content-Type field "
                    "(image/*) unless upload_fields has one, then the file as the last field, named `file`.",
                },
                "upload_fields": {"type": "object", "additionalProperties": {"type": "string"}},
                "put_url": {"type": "string", "description": "Pre-signed PUT, for clients of the original design."},
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


def openapi_document() -> dict[str, Any]:
    bearer: list[dict[str, list[str]]] = [{"jobToken": []}]
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
                    "summary": "Start a job: get a pre-signed upload (POST form and PUT URL) and a job token",
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _ref("AnalyzeRequest")}},
                    },
                    "responses": {
                        "200": _ok("The job and where to upload", "AnalyzeResponse"),
                        "400": _error("Invalid body"),
                        "413": _error("Body too large"),
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
                        "403": _error("Missing, wrong or expired token"),
                        "404": _error("Unknown or expired job"),
                        "409": _error("The object is not in the bucket yet"),
                        "413": _error("The object is larger than the upload limit"),
                        "415": _error("The object is not an image"),
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
                        "403": _error("Missing, wrong or expired token"),
                        "404": _error("Unknown or expired job"),
                    },
                }
            },
            "/api/v1/waste/admin/cache/{phash}": {
                "delete": {
                    "summary": "Operators: stop serving the cached classification of one pHash",
                    "description": "Needs `Authorization: Bearer <API_ADMIN_TOKEN>`; disabled (404) when unset.",
                    "parameters": [{"name": "phash", "in": "path", "required": True,
                                    "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}],
                    "responses": {
                        "200": {"description": "`{\"invalidated\": [pHash, ...]}`"},
                        "400": _error("Malformed pHash"),
                        "403": _error("Missing or wrong operator token"),
                        "404": _error("Nothing cached under it, or operator endpoints disabled"),
                    },
                }
            },
            "/api/v1/waste/admin/cache": {
                "delete": {
                    "summary": "Operators: stop serving the cached classification a job paid for (`?job_id=`)",
                    "parameters": [{"name": "job_id", "in": "query", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "`{\"invalidated\": [pHash, ...]}`"},
                        "400": _error("No job id"),
                        "403": _error("Missing or wrong operator token"),
                        "404": _error("Nothing cached for that job, or operator endpoints disabled"),
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
            "securitySchemes": {"jobToken": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
    }

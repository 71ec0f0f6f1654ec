"""JSON error bodies, everywhere: ``{"error": {"code": "...", "message": "..."}}``. Never an HTML page."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

log = logging.getLogger("api.errors")

# Codes for errors aiohttp raises itself (routing, body size); handlers raise ApiError with their own codes.
_HTTP_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


class ApiError(Exception):
    """An expected failure with a stable code; the middleware turns it into a JSON response."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(code, message), status=status, headers=headers)


def error_middleware(unavailable: tuple[type[Exception], ...] = ()) -> Middleware:
    """Every error as JSON. Exceptions of the ``unavailable`` types (a backing service is down) become 503."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return json_error(exc.status, exc.code, exc.message, exc.headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            # Keep headers such as Allow (405); drop the text/plain body's own headers.
            headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
            code = _HTTP_CODES.get(exc.status, f"HTTP_{exc.status}")
            return json_error(exc.status, code, exc.reason, headers)
        except unavailable as exc:
            log.warning("%s %s: backing service unavailable: %s", request.method, request.path, type(exc).__name__)
            return json_error(503, "SERVICE_UNAVAILABLE", "a backing service is unavailable, try again")
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return json_error(500, "INTERNAL_ERROR", "internal server error")

    return middleware

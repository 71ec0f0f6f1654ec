"""A tiny CORS middleware for the configured origins (settings.cors_origins; "*" allows any).

It also decorates error responses, so a browser on another origin can read the JSON error body.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from api.errors import json_error

ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type"
MAX_AGE_S = "600"


def cors_middleware(origins: list[str]) -> Middleware:
    allowed = frozenset(origins)
    allow_any = "*" in allowed

    def origin_ok(origin: str | None) -> bool:
        return origin is not None and (allow_any or origin in allowed)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not origin_ok(origin):
                return json_error(403, "CORS_ORIGIN_DENIED", "this origin may not call the API")
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin or "",
                    "Access-Control-Allow-Methods": ALLOW_METHODS,
                    "Access-Control-Allow-Headers": ALLOW_HEADERS,
                    "Access-Control-Max-Age": MAX_AGE_S,
                    "Vary": "Origin",
                },
            )
        response = await handler(request)
        if origin_ok(origin) and not response.prepared:  # a WebSocket is already prepared (and needs no CORS)
            response.headers["Access-Control-Allow-Origin"] = origin or ""
            response.headers["Vary"] = "Origin"
        return response

    return middleware

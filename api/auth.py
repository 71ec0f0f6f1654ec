"""Who may do what: the job token (clients) and the operator token (admin endpoints), each checked here and
each failure mapped to its error code here, for HTTP and the WebSocket alike."""

from __future__ import annotations

import hmac
import re

from aiohttp import web

from api.context import SETTINGS
from api.errors import ApiError
from api.tokens import TokenCheck, verify_token

# Job ids are ours (uuid4 hex), but results may name jobs created by other producers: accept any safe id.
JOB_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="waste-analysis"'}

# A job token that was sent but does not open the job: the code and message the client gets (HTTP 403, or an
# error frame on the WebSocket).
_REFUSED = {
    TokenCheck.EXPIRED: ("TOKEN_EXPIRED", "the token for this job has expired"),
    TokenCheck.INVALID: ("TOKEN_INVALID", "the token is not valid for this job"),
}


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header (maybe empty); None without such a header."""
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else None


def request_token(request: web.Request) -> str | None:
    """A job token: the header's if there is one, else the ``token`` query parameter (for clients that cannot
    set a header)."""
    token = bearer_token(request)
    return token if token is not None else request.query.get("token")


def job_token_refusal(request: web.Request, job_id: str, token: str | None) -> ApiError | None:
    """None when ``token`` opens ``job_id``; else the 403 to answer (``code`` and ``message`` for a frame)."""
    check = verify_token(request.app[SETTINGS].api_token_secret, job_id, token)
    if check is TokenCheck.VALID:
        return None
    return ApiError(403, *_REFUSED[check])


def authorize(request: web.Request, job_id: str, token: str | None) -> None:
    """404 for a malformed job id, 401 without a token, 403 unless it was issued for this job. Checked before
    any lookup: reveals nothing."""
    if not JOB_ID_RE.match(job_id):
        raise ApiError(404, "JOB_NOT_FOUND", "no such job")
    if not token:
        raise _missing("a job token is required (Authorization: Bearer <token>)")
    refusal = job_token_refusal(request, job_id, token)
    if refusal is not None:
        raise refusal


def require_operator(request: web.Request) -> None:
    """404 when the admin endpoints are off; 401 without a bearer header; 403 with a wrong one. The header
    only: a token in a query string ends up in proxy logs and browser history."""
    expected = request.app[SETTINGS].api_admin_token
    if expected is None or not expected.get_secret_value():
        raise operator_endpoints_off()
    token = bearer_token(request)
    if not token:
        raise _missing("an operator token is required (Authorization: Bearer <token>)")
    if not hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
        raise ApiError(403, "TOKEN_INVALID", "the operator token is not valid")


def operator_endpoints_off() -> ApiError:
    return ApiError(404, "NOT_FOUND", "operator endpoints are disabled (set API_ADMIN_TOKEN)")


def _missing(message: str) -> ApiError:
    return ApiError(401, "TOKEN_MISSING", message, headers=WWW_AUTHENTICATE)

"""Job access tokens: ``{expires}.{HMAC-SHA256(job_id|expires)}``, so the API needs no token table.

Whoever holds the token for a job may read it until it expires; nobody can forge one, or stretch its expiry,
without the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from enum import Enum

from pydantic import SecretStr


class TokenCheck(Enum):
    VALID = "valid"
    INVALID = "invalid"
    EXPIRED = "expired"


def make_token(secret: SecretStr, job_id: str, *, expires_at: int) -> str:
    """A token for ``job_id`` valid until ``expires_at`` (Unix seconds)."""
    return f"{expires_at}.{_mac(secret, job_id, expires_at)}"


def verify_token(secret: SecretStr, job_id: str, token: str | None, *, now: float | None = None) -> TokenCheck:
    if not token:
        return TokenCheck.INVALID
    expires, _, mac = token.partition(".")
    if not expires.isascii() or not expires.isdigit() or len(expires) > 12:
        return TokenCheck.INVALID
    # compare_digest: the time taken must not reveal how many leading characters were right.
    if not hmac.compare_digest(_mac(secret, job_id, int(expires)).encode(), mac.encode("utf-8", "replace")):
        return TokenCheck.INVALID
    # Checked after the MAC, so an expired answer only ever goes to the holder of a real token.
    return TokenCheck.EXPIRED if int(expires) < (time.time() if now is None else now) else TokenCheck.VALID


def check_token(secret: SecretStr, job_id: str, token: str | None) -> bool:
    return verify_token(secret, job_id, token) is TokenCheck.VALID


def _mac(secret: SecretStr, job_id: str, expires_at: int) -> str:
    message = f"{job_id}|{expires_at}".encode()
    return hmac.new(secret.get_secret_value().encode(), message, hashlib.sha256).hexdigest()

"""Job access tokens: HMAC-SHA256 over the job id, so the API needs no token table.

Whoever holds the token for a job may read it; nobody else can forge one without the secret.
"""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr


def make_token(secret: SecretStr, job_id: str) -> str:
    return hmac.new(secret.get_secret_value().encode(), job_id.encode(), hashlib.sha256).hexdigest()


def check_token(secret: SecretStr, job_id: str, token: str | None) -> bool:
    if not token:
        return False
    # compare_digest: the time taken must not reveal how many leading characters were right.
    return hmac.compare_digest(make_token(secret, job_id).encode(), token.encode())

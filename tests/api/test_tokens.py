from __future__ import annotations

import time

from pydantic import SecretStr

from api.tokens import TokenCheck, check_token, make_token, verify_token

SECRET = SecretStr("s3cret")
LATER = int(time.time()) + 3600


def test_token_round_trip() -> None:
    assert check_token(SECRET, "job-1", make_token(SECRET, "job-1", expires_at=LATER))


def test_token_is_bound_to_job_and_secret() -> None:
    token = make_token(SECRET, "job-1", expires_at=LATER)
    assert not check_token(SECRET, "job-2", token)
    assert not check_token(SecretStr("other"), "job-1", token)


def test_a_token_expires_and_its_expiry_cannot_be_stretched() -> None:
    token = make_token(SECRET, "job-1", expires_at=1000)
    assert verify_token(SECRET, "job-1", token, now=999) is TokenCheck.VALID
    assert verify_token(SECRET, "job-1", token, now=1001) is TokenCheck.EXPIRED
    stretched = "9999999999" + token[token.index("."):]
    assert verify_token(SECRET, "job-1", stretched, now=1001) is TokenCheck.INVALID


def test_missing_or_garbage_tokens_are_refused() -> None:
    assert not check_token(SECRET, "job-1", None)
    assert not check_token(SECRET, "job-1", "")
    assert not check_token(SECRET, "job-1", "zz")
    assert not check_token(SECRET, "job-1", "1.zz")
    assert not check_token(SECRET, "job-1", "ü" * 64)  # non-ASCII must not raise
    assert not check_token(SECRET, "job-1", "١٢٣.abc")  # non-ASCII digits must not pass as an expiry

from __future__ import annotations

from pydantic import SecretStr

from api.tokens import check_token, make_token

SECRET = SecretStr("s3cret")


def test_token_round_trip() -> None:
    assert check_token(SECRET, "job-1", make_token(SECRET, "job-1"))


def test_token_is_bound_to_job_and_secret() -> None:
    token = make_token(SECRET, "job-1")
    assert not check_token(SECRET, "job-2", token)
    assert not check_token(SecretStr("other"), "job-1", token)


def test_missing_or_garbage_tokens_are_refused() -> None:
    assert not check_token(SECRET, "job-1", None)
    assert not check_token(SECRET, "job-1", "")
    assert not check_token(SECRET, "job-1", "zz")
    assert not check_token(SECRET, "job-1", "ü" * 64)  # non-ASCII must not raise

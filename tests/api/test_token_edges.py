"""Job access tokens at their edges: the expiry instant, the expiry's length and digits, hostile MAC text."""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from api.tokens import TokenCheck, check_token, make_token, verify_token

SECRET = SecretStr("s3cret-of-the-test-suite")


def test_the_token_names_its_expiry_and_a_sha256_mac() -> None:
    expires, dot, mac = make_token(SECRET, "job-1", expires_at=1234).partition(".")
    assert (expires, dot) == ("1234", ".")
    assert len(mac) == 64 and int(mac, 16) >= 0


def test_a_token_is_valid_up_to_and_including_its_expiry_second() -> None:
    token = make_token(SECRET, "job-1", expires_at=1000)
    assert verify_token(SECRET, "job-1", token, now=1000) is TokenCheck.VALID
    assert verify_token(SECRET, "job-1", token, now=1000.5) is TokenCheck.EXPIRED


def test_without_a_given_time_the_clock_decides() -> None:
    now = int(time.time())
    assert verify_token(SECRET, "job-1", make_token(SECRET, "job-1", expires_at=now + 600)) is TokenCheck.VALID
    assert verify_token(SECRET, "job-1", make_token(SECRET, "job-1", expires_at=now - 600)) is TokenCheck.EXPIRED
    assert check_token(SECRET, "job-1", make_token(SECRET, "job-1", expires_at=now + 600))
    assert not check_token(SECRET, "job-1", make_token(SECRET, "job-1", expires_at=now - 600))


def test_an_expiry_of_twelve_digits_is_read_and_thirteen_refused_even_when_signed() -> None:
    twelve = make_token(SECRET, "job-1", expires_at=999_999_999_999)
    assert verify_token(SECRET, "job-1", twelve, now=0) is TokenCheck.VALID
    thirteen = make_token(SECRET, "job-1", expires_at=1_000_000_000_000)
    assert verify_token(SECRET, "job-1", thirteen, now=0) is TokenCheck.INVALID


def test_an_expiry_in_other_digits_is_refused_even_with_the_right_mac() -> None:
    # int() reads Arabic-Indic digits, so a MAC made for 123 would match "١٢٣": the ASCII check must refuse it.
    mac = make_token(SECRET, "job-1", expires_at=123).partition(".")[2]
    assert verify_token(SECRET, "job-1", f"١٢٣.{mac}", now=0) is TokenCheck.INVALID


@pytest.mark.parametrize("token", [
    "1000",  # no dot: no MAC at all
    ".abc",  # no expiry
    "-5.abc",
    "1e3.abc",
    "1000.\ud800",  # a lone surrogate (what a lenient decoder makes of bad bytes) must not raise
    "1000." + "é" * 64,
])
def test_malformed_tokens_are_invalid_and_never_raise(token: str) -> None:
    assert verify_token(SECRET, "job-1", token, now=0) is TokenCheck.INVALID


def test_a_real_mac_with_text_after_it_is_refused() -> None:
    token = make_token(SECRET, "job-1", expires_at=5000)
    assert verify_token(SECRET, "job-1", token + "0", now=0) is TokenCheck.INVALID
    assert verify_token(SECRET, "job-1", token + ".", now=0) is TokenCheck.INVALID
    assert verify_token(SECRET, "job-1", token.upper(), now=0) is TokenCheck.INVALID


def test_the_mac_binds_the_job_and_expiry_apart() -> None:
    # "job|12" + expiry 3 and "job|1" + expiry 23 would sign the same text without the separator.
    a = make_token(SECRET, "job-1", expires_at=23).partition(".")[2]
    b = make_token(SECRET, "job-12", expires_at=3).partition(".")[2]
    assert a != b
    assert verify_token(SECRET, "job-12", f"3.{a}", now=0) is TokenCheck.INVALID

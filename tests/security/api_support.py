"""Helpers for the API/edge black-box tests: a live API on the real stack, uploads the way a browser sends
them, and client identities of their own (so limits never collide with other tests on 127.0.0.1).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from models.settings import Settings
from streams.clients import s3_client
from tests.api.live import running_api

ROOT = Path(__file__).resolve().parents[2]
SECRET = "security-" + "s" * 40
TIMEOUT = 30.0


def settings_for(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "app_env": "development",
        "api_token_secret": SecretStr(SECRET),
        "rate_limit_analyze": 0,
        "rate_limit_upload_complete": 0,
        "upload_max_bytes": 50_000,
    }
    return Settings(_env_file=None, **{**base, **overrides})  # type: ignore[call-arg]


@asynccontextmanager
async def live_api(**overrides: Any) -> AsyncIterator[str]:
    async with running_api(settings_for(**overrides)) as base:
        yield base


def fake_ip() -> str:
    """A client address of this test's own (documentation range, random), sent as X-Forwarded-For."""
    n = uuid.uuid4().int
    return f"198.51.{n % 250}.{(n >> 8) % 250 + 1}"


def as_client(ip: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    return {**(headers or {}), "X-Forwarded-For": ip}


async def object_exists(key: str) -> bool:
    async with s3_client(settings_for()) as s3:
        try:
            await s3.head_object(Bucket=settings_for().s3_bucket_name, Key=key)
        except Exception:
            return False
        return True


async def plant_object(key: str, data: bytes, content_type: str | None) -> None:
    """Put an object with the server's credentials: what an upload path other than our POST could leave."""
    async with s3_client(settings_for()) as s3:
        extra = {"ContentType": content_type} if content_type else {}
        await s3.put_object(Bucket=settings_for().s3_bucket_name, Key=key, Body=data, **extra)


def jpeg_bytes(n: int = 2000) -> bytes:
    return b"\xff\xd8\xff\xe0" + os.urandom(n)


@contextmanager
def process(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """A child process (API or worker) with this environment; killed at the end if still running."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("APP_ENV", "API_TOKEN_SECRET", "API_ADMIN_TOKEN")}
    proc = subprocess.Popen(argv, cwd=ROOT, env={**full_env, **env, "PYTHONUNBUFFERED": "1"}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def api_argv() -> list[str]:
    return [sys.executable, "-m", "api"]

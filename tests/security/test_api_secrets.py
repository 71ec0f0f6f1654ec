"""Secrets and roles: nothing starts with a guessable secret outside development mode; forged tokens and the
admin token in the wrong place are refused. API and worker run as real processes here."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from api.tokens import make_token
from models.settings import Settings
from streams import kafka_security
from tests.security.api_support import (
    api_argv,
    live_api,
    process,
)
from tools.kit import free_port
from tools.kit.api import analyze
from tools.kit.processes import worker_argv

pytestmark = [pytest.mark.stack]


@pytest.mark.parametrize(
    "secret", [None, "", "dev-only-change-me", "short-but-not-empty"], ids=["unset", "empty", "default", "short"]
)
def test_api_refuses_to_start_in_production_with_a_guessable_secret(secret: str | None) -> None:
    env = {"APP_ENV": "production", "API_PORT": str(free_port())}
    if secret is not None:
        env["API_TOKEN_SECRET"] = secret
    with process(api_argv(), env) as proc:
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "refusing to start" in out and "API_TOKEN_SECRET" in out


def test_api_refuses_a_short_admin_token_in_production() -> None:
    env = {"APP_ENV": "production", "API_PORT": str(free_port()), "API_TOKEN_SECRET": secrets.token_urlsafe(32),
           "API_ADMIN_TOKEN": "admin"}
    with process(api_argv(), env) as proc:
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "API_ADMIN_TOKEN" in out, out


def test_worker_refuses_to_start_in_production_with_the_default_secret(tmp_path: Path) -> None:
    env = {"APP_ENV": "production", "WORKER_WEB_PORT": str(free_port()), "APP_ID": f"sec-{secrets.token_hex(4)}"}
    with process(worker_argv(tmp_path), env) as proc:
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out[-2000:]
    assert "refusing to start" in out and "API_TOKEN_SECRET" in out


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_api_starts_in_production_with_a_real_secret_and_logs_cannot_be_forged(log_format: str) -> None:
    port = free_port()
    env = {"APP_ENV": "production", "API_PORT": str(port), "API_TOKEN_SECRET": secrets.token_urlsafe(32),
           "LOG_FORMAT": log_format,
           # The local stack's broker, as the API's principal: outside development mode nothing is implied.
           **kafka_security.identity_env(Settings(_env_file=None, app_env="development"), "api")}  # type: ignore[call-arg]
    with process(api_argv(), env) as proc:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                try:
                    async with http.get(f"{base}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "the API did not become healthy"
                await asyncio.sleep(0.2)
            # A path with CR/LF and a fake log line, and a job id with ESC, in requests an attacker controls.
            forged = "x%0d%0a2026-01-01 00:00:00,000 CRITICAL api: FORGED%1b[2J"
            async with http.get(f"{base}/api/v1/waste/results/{forged}", headers={"Authorization": "Bearer x"}):
                pass
            async with http.get(f"{base}/healthz"):
                pass  # one more request: the forged one's log line has certainly been written
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    lines = out.splitlines()
    assert any("FORGED" in line for line in lines), out[-2000:]  # it was logged...
    assert not any(line.startswith("2026-01-01") for line in lines), out[-2000:]  # ...never as a line of its own
    assert not any("\x1b" in line for line in lines)
    if log_format == "json":
        records = [json.loads(line) for line in lines if line.startswith("{")]
        assert records and all({"ts", "level", "logger", "message"} <= r.keys() for r in records)
        assert any("FORGED" in r["message"] for r in records)


async def test_a_token_forged_with_the_default_secret_reads_nothing() -> None:
    async with live_api() as base, aiohttp.ClientSession() as http:
        job = await analyze(http, base)
        forged = make_token(SecretStr("dev-only-change-me"), job["job_id"], expires_at=int(time.time()) + 3600)
        async with http.get(f"{base}/api/v1/waste/results/{job['job_id']}",
                            headers={"Authorization": f"Bearer {forged}"}) as resp:
            assert resp.status == 403 and (await resp.json())["error"]["code"] == "TOKEN_INVALID"
        async with http.get(f"{base}/api/v1/waste/results/{job['job_id']}",  # the honest holder still reads it
                            headers={"Authorization": f"Bearer {job['token']}"}) as resp:
            assert resp.status == 200 and (await resp.json())["state"] == "awaiting_upload"


@pytest.mark.parametrize("admin_token", [None, "", "   "], ids=["unset", "empty", "blank"])
async def test_admin_endpoints_are_off_without_an_admin_token(admin_token: str | None) -> None:
    async with live_api(api_admin_token=admin_token) as base, aiohttp.ClientSession() as http:
        for method, path in (("DELETE", "/api/v1/waste/admin/cache/" + "0" * 64),
                             ("GET", "/api/v1/waste/admin/results/some-job")):
            for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer " + (admin_token or "")}):
                async with http.request(method, base + path, headers=headers) as resp:
                    assert resp.status == 404, (path, headers, await resp.text())


async def test_the_admin_token_is_accepted_in_the_header_only() -> None:
    admin = secrets.token_urlsafe(32)
    async with live_api(api_admin_token=admin) as base, aiohttp.ClientSession() as http:
        url = f"{base}/api/v1/waste/admin/results/nosuchjob"
        async with http.get(url, params={"token": admin}) as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.get(url, headers={"Authorization": "Bearer wrong" + admin}) as resp:
            assert resp.status == 403
        async with http.get(url, headers={"Authorization": f"Bearer {admin}"}) as resp:
            assert resp.status == 404 and (await resp.json())["error"]["code"] == "JOB_NOT_FOUND"  # authorized


async def test_a_job_token_is_no_admin_token() -> None:
    admin = secrets.token_urlsafe(32)
    async with live_api(api_admin_token=admin) as base, aiohttp.ClientSession() as http:
        job = await analyze(http, base)
        async with http.get(f"{base}/api/v1/waste/admin/results/{job['job_id']}",
                            headers={"Authorization": f"Bearer {job['token']}"}) as resp:
            assert resp.status == 403

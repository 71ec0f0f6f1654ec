"""Schemathesis (OpenAPI fuzzing) against the real API on the real stack: no 5xx, and every response matches
the document at /api/v1/openapi.json (status codes, headers, bodies), with and without valid credentials."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from models.settings import Settings
from streams import kafka_security
from tools.kit import free_port

pytestmark = [pytest.mark.stack]
ROOT = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "60"))


@pytest.fixture(scope="module")
def api_base() -> Iterator[str]:
    """`python -m api` as a process on a free port, production settings, rate limits off (one fuzzing client)."""
    port = free_port()
    env = {**os.environ, "APP_ENV": "production", "API_PORT": str(port), "API_TOKEN_SECRET": secrets.token_urlsafe(32),
           "API_ADMIN_TOKEN": secrets.token_urlsafe(32),
           **kafka_security.identity_env(Settings(_env_file=None, app_env="development"), "api"),  # type: ignore[call-arg]
           "RATE_LIMIT_ANALYZE": "0", "RATE_LIMIT_UPLOAD_COMPLETE": "0", "PYTHONUNBUFFERED": "1"}
    # The log goes to a file: a pipe nobody reads fills after 64 KB and then blocks the API's event loop.
    log_path = ROOT / ".stack" / "logs" / f"fuzz-api-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "api"], cwd=ROOT, env=env, stdout=log_file,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the API did not become healthy"
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()


def test_schemathesis_finds_no_5xx_and_no_response_off_the_spec(api_base: str, tmp_path: Path) -> None:
    st = Path(sys.executable).with_name("schemathesis")
    report = tmp_path / "junit.xml"
    run = subprocess.run(
        [str(st), "run", f"{api_base}/api/v1/openapi.json", "--checks", "all",
         "--max-examples", str(MAX_EXAMPLES), "--seed", "1", "--workers", "1",
         "--exclude-checks", "positive_data_acceptance",  # random job ids are 404 and random tokens 403
         "--report", "junit", "--report-junit-path", str(report), "--no-color"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "passed" in out.lower()

"""``python -m tools.model_check`` against the simulator in both modes, and the worker's start-up refusal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from simulator.faults import SimConfig, SimMode
from simulator.server import create_app
from tools import model_check

REPO = Path(__file__).resolve().parents[2]


async def start_simulator(aiohttp_server: Any, mode: SimMode) -> TestServer:
    return await aiohttp_server(create_app(SimConfig(latency_ms=0, jitter_ms=0, mode=mode)))


def run_check(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], base_url: str,
              **env: str) -> tuple[int, str]:
    monkeypatch.setenv("OPENAI_BASE_URL", base_url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = model_check.main([])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("mode", list(SimMode))
async def test_the_workers_request_is_accepted_in_both_modes(aiohttp_server: Any, mode: SimMode) -> None:
    sim = await start_simulator(aiohttp_server, mode)
    from models.settings import Settings

    settings = Settings(_env_file=None, openai_base_url=str(sim.make_url("/v1")))  # type: ignore[call-arg]
    report = await model_check.check(settings, model_check.default_photo())
    assert report["accepted"] is True and report["valid"] is True, report
    assert report["simulated"] is True and report["finish_reason"] == "stop"
    assert report["usage"]["prompt_tokens"] > 85  # the image at detail "low" plus the prompt
    assert report["classification"]["category"]


async def test_a_refused_request_is_reported_with_the_endpoints_error(aiohttp_server: Any) -> None:
    sim = await start_simulator(aiohttp_server, SimMode.STRICT)
    from models.settings import Settings

    settings = Settings(_env_file=None, openai_base_url=str(sim.make_url("/v1")),  # type: ignore[call-arg]
                        vision_model="gpt-9-imaginary")
    report = await model_check.check(settings, model_check.default_photo())
    assert report["accepted"] is False and report["status"] == 404
    assert report["error"]["code"] == "model_not_found"


def test_exit_codes_and_output(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_check(monkeypatch, capsys, "http://127.0.0.1:1/v1")
    assert code == 2 and "UNREACHABLE" in out


def test_the_worker_refuses_to_start_with_a_schema_the_endpoint_refuses() -> None:
    script = (
        "import sys, streams.vision as v\n"
        "v.classification_json_schema = lambda: {'type': 'object', 'additionalProperties': False,\n"
        "    'properties': {'a': {'type': 'string', 'maxLength': 9}}, 'required': ['a']}\n"
        "from streams.app import app\n"
        "sys.argv = ['faust', 'worker', '--web-port', '0']\n"
        "app.main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "APP_ENV": "development"})
    assert done.returncode != 0
    assert "outside OpenAI's strict subset: properties/a: 'maxLength' is not permitted." in done.stderr

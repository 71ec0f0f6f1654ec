"""Two API processes behind the same Kafka and Redis: any instance serves any client's job, and a client whose
instance is killed (SIGKILL) mid-wait reconnects to the other and gets its result, once.

The test plays the worker's role (it writes results to the results topic), so no worker group is involved; the
API instances are real processes (``python -m api``), as they run behind a load balancer.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from models.settings import Settings
from tests.api.live import publish_results, results_writer
from tests.integration.test_api_stack import fake_result
from tools.kit import wait_http_ok
from tools.kit.api import analyze, ws_result, ws_url
from tools.kit.processes import Proc, free_port, start_api

pytestmark = pytest.mark.stack

SECRET = "instances-secret"


@pytest.fixture
async def two_apis(settings_factory: Callable[..., Settings], tmp_path: Path
                   ) -> AsyncIterator[tuple[Settings, list[tuple[str, Proc]]]]:
    settings = settings_factory(api_token_secret=SecretStr(SECRET))
    apis: list[tuple[str, Proc]] = []
    try:
        for name in ("a", "b"):
            port = free_port()
            proc = start_api(settings.model_copy(update={"api_port": port}), tmp_path / f"api-{name}.log")
            apis.append((f"http://127.0.0.1:{port}", proc))
        for base, proc in apis:
            assert await wait_http_ok(f"{base}/healthz", proc), f"{base} not healthy:\n{proc.log_tail()}"
        yield settings, apis
    finally:
        for _, proc in apis:
            proc.stop()


async def test_any_instance_serves_any_job_and_a_killed_one_loses_no_client(
        two_apis: tuple[Settings, list[tuple[str, Proc]]]) -> None:
    settings, [(a, api_a), (b, _)] = two_apis
    async with aiohttp.ClientSession() as http:
        issued_on_a = await analyze(http, a)
        issued_on_b = await analyze(http, b)
        # Each client follows its job on the instance that did not issue it, and one more waits on A.
        async with http.ws_connect(ws_url(b, issued_on_a)) as on_b, \
                http.ws_connect(ws_url(a, issued_on_b)) as on_a:
            api_a.process.send_signal(signal.SIGKILL)  # A dies with a client waiting on it
            api_a.process.wait(timeout=10)
            async with results_writer(settings) as producer:  # the worker's role; the result for B's job twice
                await publish_results(producer, [fake_result(issued_on_a["job_id"], item="a's job"),
                                                 fake_result(issued_on_b["job_id"], item="b's job"),
                                                 fake_result(issued_on_b["job_id"], item="b's job, again")])
            _, result_a = await ws_result(on_b, issued_on_a["job_id"], timeout=60)
            assert result_a is not None and result_a["classification"]["item_name"] == "a's job"
            # The client on A lost its socket; it reconnects to B (what a load balancer does) with its token.
            _, cut_off = await ws_result(on_a, issued_on_b["job_id"], timeout=30)
            assert cut_off is None
        async with http.ws_connect(ws_url(b, issued_on_b)) as again:
            _, result_b = await ws_result(again, issued_on_b["job_id"], timeout=60)
            assert result_b is not None and result_b["classification"]["item_name"] == "b's job"  # the first
            after = await again.receive(timeout=10)  # then the socket closes: no second result follows
            assert after.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), after

"""Fixtures of several test folders (integration-only ones are in tests/integration/conftest.py). Settings are
built from keyword arguments, never from the test runner's environment."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from models.settings import Settings
from tools import kit
from tools.kit import Pipeline, Simulator, free_port, running_pipeline


@pytest.fixture
def settings_factory() -> Callable[..., Settings]:
    """Settings for the local stack, with per-test overrides (keyword arguments beat the environment)."""

    def make(**overrides: Any) -> Settings:
        # Development mode (test secrets are short); rate limits off, since every test client is 127.0.0.1
        # (tests/security turns them on with a client identity of their own).
        defaults: dict[str, Any] = {"app_env": "development", "rate_limit_analyze": 0, "rate_limit_upload_complete": 0}
        return Settings(_env_file=None, **{**defaults, **overrides})  # type: ignore[call-arg]

    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """A failed test that used the pipeline shows what the worker logged: CI keeps nothing else of it."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "pipeline" in getattr(item, "fixturenames", ()):
        for worker in kit.STARTED:
            report.sections.append((f"worker log {worker.log_path.name}", worker.log_digest()))


@pytest.fixture(scope="session")
def pipeline() -> Iterator[Pipeline]:
    """The whole pipeline on the real local stack: a Faust worker process plus the vision-model simulator
    (tests/integration, tests/browser and tests/security use it).

    The stack itself (Kafka, Redis, S3 server, CDN edge, simulator) is started by ``make test`` before pytest.
    Each session uses its own app id (consumer group, tables) and starts at the end of the topics.
    """
    session = uuid.uuid4().hex[:8]
    settings = Settings(
        app_env="development",
        rate_limit_analyze=0,
        rate_limit_upload_complete=0,
        app_id=f"waste-test-{session}",
        # A prompt version of its own makes every cached result of earlier runs a miss for this session.
        prompt_version=f"test-{session}",
        worker_web_port=free_port(),
        vision_backoff_base_seconds=0.05,
        inflight_timeout_seconds=60,
        content_digest_cache=True,
        # The session's tests use mirror images and crops of the sample photos as photos pHash cannot match (and
        # count their calls): the reframed tier would rightly answer them from the cache. It is tested on a worker
        # of its own (tests/integration/test_reframed_stack.py).
        reframed_match=False,
    )
    simulator = Simulator()  # the stack's
    simulator.call("POST", "/_sim/reset")
    simulator.call("POST", "/_sim/config", {"latency_ms": 300, "jitter_ms": 50})
    with running_pipeline(settings, simulator=simulator) as running:
        yield running

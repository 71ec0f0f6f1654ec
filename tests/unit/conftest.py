"""Fixtures of the unit tests that several modules share."""

from __future__ import annotations

from typing import Any

import pytest_asyncio
from aiohttp.test_utils import TestServer

from simulator.faults import SimConfig
from simulator.server import create_app


@pytest_asyncio.fixture
async def sim(aiohttp_server: Any) -> TestServer:
    """The vision-model simulator in process, on a test server."""
    # Latency 0 keeps the suites fast; tests that need latency or faults set them over /_sim/config.
    return await aiohttp_server(create_app(SimConfig(latency_ms=0, jitter_ms=0)))

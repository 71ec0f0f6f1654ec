"""The vision-model simulator: the stack's shared one, or a private one on a free port; its control API.

The stack's simulator (port 8090) and its fault script are shared by every test and every engineer's worker on
the machine: whoever scripts faults, counts calls or times requests starts a private one instead, with a worker
whose ``OPENAI_BASE_URL`` is :attr:`Simulator.openai_base_url`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from typing import Any

import aiohttp

from tools.kit.processes import LOG_DIR, Proc, free_port, spawn

SHARED_URL = f"http://127.0.0.1:{os.environ.get('SIMULATOR_PORT', '8090')}"


class Simulator:
    """Control of one simulator: ``/_sim/stats`` (call counts), ``/_sim/config`` (latency, fault rates, scripts)."""

    def __init__(self, url: str = SHARED_URL, proc: Proc | None = None) -> None:
        self.url = url.rstrip("/")
        self.proc = proc

    @classmethod
    def of(cls, openai_base_url: str | None) -> Simulator:
        """The simulator behind a worker's ``OPENAI_BASE_URL``."""
        return cls((openai_base_url or "").removesuffix("/v1"))

    @classmethod
    def start(cls, name: str = "simulator", **env: str) -> Simulator:
        """``python -m simulator`` on a free port (``SIM_*`` settings in ``env``); returns once it answers."""
        port = free_port()
        log_path = LOG_DIR / f"{name}-{port}.log"
        env = {"SIM_LATENCY_MS": "50", "SIM_LATENCY_JITTER_MS": "0", **env}
        process = spawn([sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(port)], log_path, env)
        sim = cls(f"http://127.0.0.1:{port}", Proc(name, process, log_path))
        deadline = time.monotonic() + 30
        while True:
            try:
                sim.call("GET", "/_sim/stats")
                return sim
            except (aiohttp.ClientError, OSError):
                if time.monotonic() > deadline or process.poll() is not None:
                    sim.stop()
                    raise RuntimeError(f"the simulator did not start:\n{sim.proc.log_tail(30)}") from None  # type: ignore[union-attr]
                time.sleep(0.2)  # polling for the process to listen, within the deadline above

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    async def request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, \
                http.request(method, self.url + path, json=payload) as r:
            r.raise_for_status()
            return await r.json()

    def call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        """:meth:`request` from synchronous code (also from inside a running event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.request(method, path, payload))
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = asyncio.run(self.request(method, path, payload))
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]

    async def stats(self) -> dict[str, Any]:
        return await self.request("GET", "/_sim/stats")  # type: ignore[no-any-return]

    async def calls(self) -> int:
        return int((await self.stats())["calls"])

    async def calls_or_none(self) -> int | None:
        """The call count, or None when the endpoint is no simulator (a real model has no counter)."""
        try:
            return await self.calls()
        except (aiohttp.ClientError, KeyError, ValueError, TypeError):
            return None

    async def configure(self, **config: Any) -> dict[str, Any]:
        return await self.request("POST", "/_sim/config", config)  # type: ignore[no-any-return]

    async def set_latency(self, latency_ms: int, jitter_ms: int = 0) -> None:
        await self.configure(latency_ms=latency_ms, jitter_ms=jitter_ms)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(10)

"""Pieces a real-stack test owns alone: a private vision-model simulator and a misbehaving origin.

The stack's simulator (port 8090) and its fault script are shared by every test and every engineer's worker on
the machine; a test that scripts faults, counts calls or times requests starts a simulator of its own instead,
with a worker whose ``OPENAI_BASE_URL`` points at it. ``BrokenOrigin`` stands in for a CDN edge and an S3
endpoint that fail on purpose for chosen keys and forward everything else to the real ones.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
from aiohttp import web

from models.errors import ErrorCode
from models.records import AnalysisResult, JobStatus
from models.settings import Settings
from tests.pipeline_harness import ROOT, STACK_DIR, ResultWatcher, free_port, stop_process


class PrivateSimulator:
    """``python -m simulator`` on a free port, for one test module."""

    def __init__(self, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log_dir = STACK_DIR / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"simulator-{self.port}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "simulator", "--port", str(self.port)], cwd=ROOT,
                env={**os.environ, "SIM_LATENCY_MS": "50", "SIM_LATENCY_JITTER_MS": "0", **env},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.call("GET", "/_sim/stats")
                return
            except (aiohttp.ClientError, OSError):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"private simulator did not start: {self.log_path.read_text()[-2000:]}")
                time.sleep(0.2)  # polling for the process to listen, within the deadline above

    def call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            async with aiohttp.ClientSession() as http, http.request(method, self.url + path, json=payload) as r:
                r.raise_for_status()
                return await r.json()  # type: ignore[no-any-return]

        return asyncio.run(go()) if not _in_loop() else _run_in_thread(go())

    async def acall(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.request(method, self.url + path, json=payload) as r:
            r.raise_for_status()
            return await r.json()  # type: ignore[no-any-return]

    def stop(self) -> None:
        stop_process(self.process, 10)


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run_in_thread(coro: Any) -> Any:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


# --- a misbehaving CDN edge and S3 endpoint --------------------------------------------------------------------

# What the broken origin does to a key, by the word the key starts with (tests/{word}-{uuid}.jpg).
CDN_FAULTS = ("cdn500", "cdn403", "cdnslow", "cdntrunc", "s3fail")


class BrokenOrigin:
    """An HTTP server on a free port: ``/cdn/...`` plays the CDN edge, ``/s3/...`` the S3 endpoint.

    Keys ``tests/cdn500-*`` get HTTP 500 from the CDN, ``cdn403-*`` 403, ``cdnslow-*`` an answer that never
    comes in time, ``cdntrunc-*`` a body cut short of its Content-Length; ``s3fail-*`` 500 from the CDN and an
    S3 InternalError. Everything else is forwarded to the real edge and S3 server (S3 with the client's own
    signed headers, Host included, so the signature still verifies).
    """

    def __init__(self, edge_base: str, s3_endpoint: str, slow_seconds: float) -> None:
        self.port = free_port()
        self.edge_base = edge_base.rstrip("/")  # e.g. http://127.0.0.1:6081 (the bucket is in the path)
        self.s3_endpoint = s3_endpoint.rstrip("/")
        self.slow_seconds = slow_seconds
        self.requests: list[tuple[str, str]] = []  # (role, path) in arrival order
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def cdn_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cdn/waste-images"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BrokenOrigin:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the broken origin did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def _serve(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/cdn/{path:.*}", self._cdn)
        app.router.add_route("*", "/{path:.*}", self._s3)
        self._runner = web.AppRunner(app)
        loop.run_until_complete(self._runner.setup())
        loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._http = loop.run_until_complete(self._session())
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._http.close())
            loop.close()

    @staticmethod
    async def _session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(auto_decompress=False)

    @staticmethod
    def _fault(path: str) -> str | None:
        name = path.rsplit("/", 1)[-1]
        return next((f for f in CDN_FAULTS if name.startswith(f + "-")), None)

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.requests.append(("cdn", path))
        fault = self._fault(path)
        if fault in ("cdn500", "s3fail"):
            return web.Response(status=500, text="edge error")
        if fault == "cdn403":
            return web.Response(status=403, text="forbidden")
        if fault == "cdnslow":
            await asyncio.sleep(self.slow_seconds)  # the edge that does not answer in time
            return web.Response(status=504)
        async with self._http.get(f"{self.edge_base}/{path}") as upstream:
            body = await upstream.read()
            headers = {k: v for k, v in upstream.headers.items()
                       if k.lower() in ("content-type", "x-cache", "age", "etag")}
            status = upstream.status
        if fault == "cdntrunc" and status == 200:
            response = web.StreamResponse(status=200, headers=headers)
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            request.transport.close()  # type: ignore[union-attr]  # the connection drops mid-body
            return response
        return web.Response(status=status, body=body, headers=headers)

    async def _s3(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.requests.append(("s3", path))
        if self._fault(path) == "s3fail" and request.method == "GET":
            xml = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code>"
                   "<Message>We encountered an internal error. Please try again.</Message></Error>")
            return web.Response(status=500, text=xml, content_type="application/xml")
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("content-length", "transfer-encoding")}
        async with self._http.request(request.method, f"{self.s3_endpoint}{request.path_qs}", headers=headers,
                                      data=body) as upstream:
            data = await upstream.read()
            out = {k: v for k, v in upstream.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding")}
            return web.Response(status=upstream.status, body=data, headers=out)


@contextmanager
def broken_origin(settings: Settings, slow_seconds: float) -> Iterator[BrokenOrigin]:
    edge = settings.cdn_base_url.rsplit("/", 1)[0]
    origin = BrokenOrigin(edge, settings.s3_endpoint_url or "", slow_seconds).start()
    try:
        yield origin
    finally:
        origin.stop()


def fault_key(fault: str, suffix: str = ".jpg") -> str:
    return f"tests/{fault}-{uuid.uuid4()}{suffix}"


# --- results of one worker group -------------------------------------------------------------------------------


async def own_result(watcher: ResultWatcher, job_id: str, settings: Settings, *, timeout: float = 60.0,
                     expect: ErrorCode | None = None) -> AnalysisResult:
    """The result a worker of ``settings``' group gave ``job_id``.

    Every worker group on the broker answers every event; a done result is told apart by its model version
    (each test group has a prompt version of its own). A failed result carries no version: the first one with
    the ``expect``-ed code counts (the tests that expect a failure make it one only this group's settings cause).
    """
    deadline = time.monotonic() + timeout
    while True:
        for r in watcher.received.get(job_id, []):
            if r.cache is not None and r.cache.model_version == settings.model_version:
                return r
            if expect is not None and r.status is JobStatus.FAILED and r.error is not None and r.error.code is expect:
                return r
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no result of group {settings.app_id} for {job_id}: {watcher.received.get(job_id)}")
        await watcher.drain(min(remaining, 0.5))

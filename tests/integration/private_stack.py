"""Pieces a real-stack test owns alone: a misbehaving origin, and the results of one worker group.

(A private vision-model simulator is ``tools.kit.Simulator.start()``.) ``BrokenOrigin`` stands in for a CDN edge
and an S3 endpoint that fail on purpose for chosen keys and forward everything else to the real ones.
"""

from __future__ import annotations

import asyncio
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
from tools.kit import ResultWatcher, Simulator, free_port
from tools.kit.results import of_group

# --- a misbehaving CDN edge and S3 endpoint --------------------------------------------------------------------

# What the broken origin does to a key, by the word the key starts with (tests/{word}-{uuid}.jpg).
CDN_FAULTS = ("cdn500", "cdn403", "cdnslow", "cdntrunc", "s3fail", "s3blip")
# How many GETs of an ``s3blip-*`` key fail on S3 before it serves it (the CDN stays down for such keys): a short
# outage of both sources. More than the S3 client's own attempts per fetch (2), so only the fetch's retry gets it.
S3_BLIP_FAILURES = 3


class BrokenOrigin:
    """An HTTP server on a free port: ``/cdn/...`` plays the CDN edge, ``/s3/...`` the S3 endpoint.

    Keys ``tests/cdn500-*`` get HTTP 500 from the CDN, ``cdn403-*`` 403, ``cdnslow-*`` an answer that never
    comes in time, ``cdntrunc-*`` a body cut short of its Content-Length; ``s3fail-*`` 500 from the CDN and an
    S3 InternalError; ``s3blip-*`` 500 from the CDN always and an S3 InternalError for its first S3_BLIP_FAILURES
    reads, then S3 works (the source is then always S3: which source ends a retried fetch never depends on timing).
    Everything else is forwarded to the real edge and S3 server (S3 with the client's own
    signed headers, Host included, so the signature still verifies).
    """

    def __init__(self, edge_base: str, s3_endpoint: str, slow_seconds: float) -> None:
        self.port = free_port()
        self.s3_url = f"http://127.0.0.1:{self.port}"  # what the worker takes for its S3 endpoint
        self.cdn_base_url = f"{self.s3_url}/cdn/waste-images"  # and for its CDN edge
        self.edge_base = edge_base.rstrip("/")  # e.g. http://127.0.0.1:6081 (the bucket is in the path)
        self.s3_endpoint = s3_endpoint.rstrip("/")
        self.slow_seconds = slow_seconds
        self.requests: list[tuple[str, str]] = []  # (role, path) in arrival order
        self._blip_failures: dict[str, int] = {}  # s3blip path -> S3 GETs failed so far
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

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
        if fault in ("cdn500", "s3fail", "s3blip"):
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
        fault = self._fault(path)
        if request.method == "GET" and (fault == "s3fail" or (fault == "s3blip" and self._blip(path))):
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


    def _blip(self, path: str) -> bool:
        """Count one failed S3 read of an s3blip key; False once it has failed S3_BLIP_FAILURES times."""
        key = path.rsplit("/", 1)[-1]
        failed = self._blip_failures.get(key, 0)
        if failed >= S3_BLIP_FAILURES:
            return False
        self._blip_failures[key] = failed + 1
        return True


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


async def own_results(watcher: ResultWatcher, job_ids: list[str], settings: Settings, *,
                      timeout: float = 60.0) -> dict[str, AnalysisResult]:
    """The first result of every job that the worker group of ``settings`` can have given (``of_group``: its model
    version, or a failure other than another group's refusal of a test key).

    ``watcher.wait_for`` returns the first result on the topic, whichever group wrote it: with a second group on
    the broker (a chaos or bench run's workers refuse every ``tests/`` key at once) that first result is often
    another group's, and a test of this group's behaviour would judge the wrong answer.
    """
    deadline = time.monotonic() + timeout
    while True:
        own = {j: [r for r in watcher.received.get(j, []) if of_group(r, settings.model_version)] for j in job_ids}
        if all(own.values()):
            return {j: results[0] for j, results in own.items()}
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            missing = sorted(j for j, results in own.items() if not results)
            seen = [watcher.received.get(j) for j in missing[:3]]
            raise TimeoutError(f"{len(missing)} of {len(set(job_ids))} jobs have no result of group "
                               f"{settings.app_id}, e.g. {missing[:3]}: {seen}")
        await watcher.drain(min(remaining, 0.2))


def isolated_group(name: str, sim: Simulator, **overrides: Any) -> Settings:
    """A worker group of a test's own: its prompt version tells its results apart, its private simulator makes the
    model calls counted the test's alone, and no call is re-issued as lost while the test runs."""
    session = uuid.uuid4().hex[:8]
    return Settings(_env_file=None, app_id=f"waste-{name}-{session}",  # type: ignore[call-arg]
                    prompt_version=f"{name}-{session}", worker_web_port=free_port(),
                    openai_base_url=f"{sim.url}/v1", vision_backoff_base_seconds=0.05,
                    inflight_timeout_seconds=300, **overrides)

"""The app's side of the WebSocket: ask the API for a job, open the socket, note when the result arrives.

Flow per event, as the app does it: ``POST /api/v1/waste/analyze`` (job id and token), open
``/api/v1/waste/ws?job_id=..&token=..`` and wait for its first ``state`` message (the subscription is then
registered), and only then is the upload-complete event published (by the load generator, which times it).
The API closes the socket with 1000 once the result is delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from tools.kit.api import analyze, ws_url


@dataclass
class WsJob:
    job_id: str
    ws: aiohttp.ClientWebSocketResponse
    reader: asyncio.Task[None] | None = None
    result_at: float | None = None  # perf_counter when the result message was read
    status: str | None = None
    errors: list[str] = field(default_factory=list)


class WsProbe:
    def __init__(self, api_base: str, connect_timeout: float = 10.0) -> None:
        self.api_base = api_base.rstrip("/")
        self._timeout = connect_timeout
        self._http: aiohttp.ClientSession | None = None
        self.failures = 0

    async def __aenter__(self) -> WsProbe:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256), timeout=aiohttp.ClientTimeout(total=self._timeout)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._http is not None
        await self._http.close()

    async def prepare(self) -> WsJob:
        assert self._http is not None
        try:
            job = await analyze(self._http, self.api_base, content_type="image/jpeg")
            ws = await self._http.ws_connect(ws_url(self.api_base, job), heartbeat=None, autoping=True)
            first = await ws.receive_json(timeout=self._timeout)
            if first.get("type") not in ("state", "result"):
                raise RuntimeError(f"unexpected first message {first!r}")
        except Exception:
            self.failures += 1
            raise
        wsjob = WsJob(job["job_id"], ws)
        wsjob.reader = asyncio.create_task(self._read(wsjob))
        return wsjob

    async def _read(self, job: WsJob) -> None:
        async for msg in job.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if data.get("type") == "result" and data.get("job_id") == job.job_id:
                job.result_at = time.perf_counter()
                job.status = (data.get("result") or {}).get("status")
                break
            if data.get("type") == "error":
                job.errors.append(str(data.get("error") or data))
        await job.ws.close()

    async def finish(self, jobs: Sequence[WsJob], timeout: float) -> None:
        """Wait for the outstanding results (bounded), then close whatever is still open."""
        readers = [j.reader for j in jobs if j.reader is not None and not j.reader.done()]
        if readers:
            await asyncio.wait(readers, timeout=timeout)
        for job in jobs:
            if job.reader is not None and not job.reader.done():
                job.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await job.reader
            if not job.ws.closed:
                with contextlib.suppress(Exception):
                    await job.ws.close()

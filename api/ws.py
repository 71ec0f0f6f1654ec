"""``GET /api/v1/waste/ws``: live state changes and results for one or more jobs.

Protocol (JSON text frames; see api/README.md):
  client -> server  {"type": "subscribe", "job_id", "token"} | {"type": "unsubscribe", "job_id"} | {"type": "ping"}
  server -> client  {"type": "state", "job_id", "state"} | {"type": "result", "job_id", "result"}
                    | {"type": "error", "job_id", "error": {"code", "message"}}
                    | {"type": "pong"} | {"type": "unsubscribed", "job_id"}
The server closes with 1000 once every followed job has had its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from aiohttp import WSCloseCode, WSMsgType, web

from api.auth import JOB_ID_RE, authorize, job_token_refusal
from api.context import BACKENDS, HUB, METRICS, SETTINGS
from api.errors import ApiError
from api.hub import Connection
from api.limits import client_id
from api.store import JobState
from models.records import utcnow

log = logging.getLogger("api.ws")

MAX_JOBS_PER_SOCKET = 100
MAX_MESSAGE_BYTES = 4096
HEARTBEAT_S = 30.0
CLOSE_WAIT_S = 2.0  # a client that does not answer our close frame in time is cut off
POLICY = WSCloseCode.POLICY_VIOLATION  # 1008: unauthenticated, idle, or not reading


async def websocket(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    hub, metrics, settings = app[HUB], app[METRICS], app[SETTINGS]
    client = client_id(request, settings.api_trusted_proxy_hops)
    first_job = request.query.get("job_id")
    if first_job is not None:
        # Refuse before the upgrade, so a bad token is a plain 401/403/404 with a JSON body.
        authorize(request, first_job, request.query.get("token"))
        if not await _job_known(request, first_job):
            raise ApiError(404, "JOB_NOT_FOUND", "no such job (or it expired)")
    if hub.sockets_of(client) >= settings.ws_max_sockets_per_client:
        raise ApiError(429, "TOO_MANY_SOCKETS",
                       f"at most {settings.ws_max_sockets_per_client} open WebSockets per client",
                       headers={"Retry-After": "5"})

    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_MESSAGE_BYTES)
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "WEBSOCKET_REQUIRED", "this endpoint needs a WebSocket upgrade")
    await ws.prepare(request)
    conn = Connection(ws, client=client, outbox_max=settings.ws_outbox_max_messages)
    hub.add(conn)
    metrics.open_sockets.inc()
    reader = asyncio.create_task(_read(request, conn, first_job))
    writer = asyncio.create_task(_write(conn, request))
    watchdog = asyncio.create_task(_watch(conn, request))
    try:
        await asyncio.wait((reader, writer, watchdog), return_when=asyncio.FIRST_COMPLETED)
        if (watchdog.done() or conn.overflowed.is_set()) and not ws.closed:
            code, reason = watchdog.result() if watchdog.done() else (POLICY, b"too many unread messages")
            reader.cancel()
            writer.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
            await _close(request, ws, code, reason)
        elif writer.done() and (close_code := writer.result()) is not None and not ws.closed:
            # Stop reading first: close() from this task then waits for the client's close frame (a clean
            # handshake); closing while another task reads would drop the connection instead.
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            reason = b"all results delivered" if close_code == WSCloseCode.OK else b"server shutdown"
            await _close(request, ws, close_code, reason)
        elif reader.done() and reader.exception() is not None:
            log.warning("socket reader failed: %s", type(reader.exception()).__name__)
            await _close(request, ws, WSCloseCode.INTERNAL_ERROR, b"internal error")
    finally:
        hub.remove(conn)
        metrics.open_sockets.dec()
        for task in (reader, writer, watchdog):
            task.cancel()
        await asyncio.gather(reader, writer, watchdog, return_exceptions=True)
    return ws


async def _close(request: web.Request, ws: web.WebSocketResponse, code: int, reason: bytes) -> None:
    """Close with ``code``; a client that does not read (so the close frame cannot get out) is cut off."""
    try:
        async with asyncio.timeout(CLOSE_WAIT_S):
            await ws.close(code=code, message=reason)
    except (TimeoutError, ConnectionError, RuntimeError):
        if request.transport is not None:
            request.transport.abort()


async def _watch(conn: Connection, request: web.Request) -> tuple[int, bytes]:
    """The socket's deadlines: follow a job within WS_AUTH_TIMEOUT_SECONDS, never stay silent for
    WS_IDLE_TIMEOUT_SECONDS, never let the outbox overflow. Returns the close code and reason."""
    settings = request.app[SETTINGS]
    opened = time.monotonic()
    while True:
        if conn.overflowed.is_set():
            log.info("closing a socket of %s: its outbox overflowed (the client does not read)", conn.client)
            return POLICY, b"too many unread messages"
        now = time.monotonic()
        if not conn.authenticated and now - opened >= settings.ws_auth_timeout_seconds:
            return POLICY, b"no job subscribed in time"
        if now - conn.last_activity >= settings.ws_idle_timeout_seconds:
            return POLICY, b"idle"
        next_check = min(
            conn.last_activity + settings.ws_idle_timeout_seconds,
            opened + settings.ws_auth_timeout_seconds if not conn.authenticated else float("inf"),
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(next_check - now, 0.05)):
                await conn.overflowed.wait()


async def _read(request: web.Request, conn: Connection, first_job: str | None) -> None:
    if first_job is not None:
        await _follow(request, conn, first_job)
    async for msg in conn.ws:
        conn.touch()
        if msg.type == WSMsgType.TEXT:
            await _on_client_message(request, conn, msg.data)
        elif msg.type == WSMsgType.BINARY:
            conn.send_error("BAD_MESSAGE", "send JSON text frames")


async def _job_known(request: web.Request, job_id: str) -> bool:
    store = request.app[BACKENDS].store
    return await store.get_job(job_id) is not None or await store.get_result(job_id) is not None


async def _follow(request: web.Request, conn: Connection, job_id: str) -> None:
    store = request.app[BACKENDS].store
    # Register first, then read: a result landing in between reaches us through the hub; the connection
    # sends it only once either way.
    request.app[HUB].follow(conn, job_id)
    result = await store.get_result(job_id)
    if result is not None:
        conn.offer_result(result)
        return
    job = await store.get_job(job_id)
    conn.offer_state(job_id, job.state if job is not None else JobState.QUEUED)


async def _on_client_message(request: web.Request, conn: Connection, data: str) -> None:
    try:
        msg = json.loads(data)
        kind = msg["type"]
    except (ValueError, KeyError, TypeError):
        conn.send_error("BAD_MESSAGE", 'expected a JSON object with a "type"')
        return
    job_id = msg.get("job_id")
    if kind == "ping":
        conn.send({"type": "pong"})
    elif kind == "subscribe":
        await _subscribe(request, conn, job_id, msg.get("token"))
    elif kind == "unsubscribe" and isinstance(job_id, str) and JOB_ID_RE.match(job_id):
        request.app[HUB].unfollow(conn, job_id)
        conn.send({"type": "unsubscribed", "job_id": job_id})
    else:
        # Never echo what the client sent: only our own words go back.
        conn.send_error("BAD_MESSAGE", "unknown message type, or a missing or invalid job_id")


async def _subscribe(request: web.Request, conn: Connection, job_id: object, token: object) -> None:
    if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        conn.send_error("BAD_MESSAGE", "subscribe needs a valid job_id")
        return
    if conn.follows(job_id):
        return
    refusal = job_token_refusal(request, job_id, token if isinstance(token, str) else None)
    if refusal is not None:
        conn.send_error(refusal.code, refusal.message, job_id)
        return
    if len(conn.jobs) >= MAX_JOBS_PER_SOCKET:
        conn.send_error("TOO_MANY_JOBS", f"at most {MAX_JOBS_PER_SOCKET} jobs per connection", job_id)
        return
    if not await _job_known(request, job_id):
        conn.send_error("JOB_NOT_FOUND", "no such job (or it expired)", job_id)
        return
    await _follow(request, conn, job_id)


async def _write(conn: Connection, request: web.Request) -> int | None:
    """The only task that writes to the socket. Returns the close code once the socket should close:
    1000 when every followed job has had its result, or the code asked for by ``close_soon``."""
    metrics = request.app[METRICS]
    ws = conn.ws
    send_timeout = request.app[SETTINGS].ws_send_timeout_seconds
    try:
        while not ws.closed:
            item = await conn.outbox.get()
            if item.close_code is not None:
                return item.close_code
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands as the send
                # completes, leaving this task waiting on an outbox nobody fills.
                async with asyncio.timeout(send_timeout):
                    await ws.send_json(item.message)
            except TimeoutError:
                conn.overflowed.set()  # the client stopped reading: the watchdog closes the socket
                return None
            conn.touch()
            if item.completed_at is not None:
                metrics.result_delivery.observe(max((utcnow() - item.completed_at).total_seconds(), 0.0))
            if conn.finished and conn.outbox.empty():
                return WSCloseCode.OK
    except (ConnectionError, RuntimeError) as exc:  # the client went away mid-send
        log.debug("socket write failed: %s", exc)
    return None

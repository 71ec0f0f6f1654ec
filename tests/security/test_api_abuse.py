"""Abuse: per-client rate limits shared by API instances (Redis), and WebSocket limits (socket cap, bounded
outbox, auth and idle deadlines, no echo). Clients are told apart by X-Forwarded-For with one trusted hop,
so each test is a client of its own; honest clients in the same burst are served."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from typing import Any

import aiohttp
import pytest

from tests.security.api_support import TIMEOUT, as_client, fake_ip, live_api
from tools.kit import wait_until
from tools.kit.api import analyze, ws_url

pytestmark = [pytest.mark.stack]

PROXIED = {"api_trusted_proxy_hops": 1}


async def post_analyze(http: aiohttp.ClientSession, base: str, ip: str) -> tuple[int, str | None]:
    async with http.post(f"{base}/api/v1/waste/analyze", headers=as_client(ip)) as resp:
        await resp.read()
        return resp.status, resp.headers.get("Retry-After")


async def test_analyze_is_rate_limited_per_client_and_honest_clients_are_served() -> None:
    attacker, honest = fake_ip(), fake_ip()
    async with live_api(rate_limit_analyze=5, **PROXIED) as base, aiohttp.ClientSession() as http:
        burst = await asyncio.gather(*(post_analyze(http, base, attacker) for _ in range(12)),
                                     post_analyze(http, base, honest), post_analyze(http, base, honest))
    attacks, honest_answers = burst[:12], burst[12:]
    assert sorted(status for status, _ in attacks) == [200] * 5 + [429] * 7
    assert all(retry is not None and 1 <= int(retry) <= 60 for status, retry in attacks if status == 429)
    assert [status for status, _ in honest_answers] == [200, 200]


async def test_the_limit_is_shared_by_every_api_instance() -> None:
    attacker = fake_ip()
    async with (live_api(rate_limit_analyze=4, **PROXIED) as a, live_api(rate_limit_analyze=4, **PROXIED) as b,
                aiohttp.ClientSession() as http):
        answers = [await post_analyze(http, base, attacker) for base in (a, b) * 4]
    assert [status for status, _ in answers].count(200) == 4  # 4 in all, not 4 per instance
    assert [status for status, _ in answers][4:] == [429] * 4


async def test_spoofed_forwarded_for_entries_do_not_escape_the_limit() -> None:
    attacker = fake_ip()
    async with live_api(rate_limit_analyze=3, **PROXIED) as base, aiohttp.ClientSession() as http:
        statuses = []
        for i in range(6):  # the client writes its own entries first; the trusted proxy appends the real one
            headers = {"X-Forwarded-For": f"10.0.0.{i}, 192.0.2.{i}, {attacker}"}
            async with http.post(f"{base}/api/v1/waste/analyze", headers=headers) as resp:
                statuses.append(resp.status)
    assert statuses == [200] * 3 + [429] * 3


async def test_upload_complete_is_rate_limited_before_the_token_is_checked() -> None:
    attacker, honest = fake_ip(), fake_ip()
    async with (live_api(rate_limit_upload_complete=3, **PROXIED) as base, aiohttp.ClientSession() as http):
        job = await analyze(http, base, headers=as_client(honest))
        statuses = []
        for _ in range(6):  # guessing tokens
            async with http.post(f"{base}/api/v1/waste/upload-complete/{job['job_id']}",
                                 headers=as_client(attacker, {"Authorization": "Bearer 1.guess"})) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    assert int(resp.headers["Retry-After"]) >= 1
        async with http.post(f"{base}/api/v1/waste/upload-complete/{job['job_id']}",
                             headers=as_client(honest, {"Authorization": f"Bearer {job['token']}"})) as resp:
            honest_status = resp.status
    assert statuses == [403] * 3 + [429] * 3
    assert honest_status == 409  # served (nothing uploaded yet), not limited


async def test_a_limited_client_is_served_again_after_retry_after() -> None:
    attacker = fake_ip()
    async with (live_api(rate_limit_analyze=1, rate_limit_window_seconds=2, **PROXIED) as base,
                aiohttp.ClientSession() as http):
        assert (await post_analyze(http, base, attacker))[0] == 200
        status, retry = await post_analyze(http, base, attacker)
        assert status == 429 and retry is not None and int(retry) <= 2

        async def served() -> bool:
            return (await post_analyze(http, base, attacker))[0] == 200

        await wait_until(served, timeout=int(retry) + 3, interval=0.05, what="the window to end")


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return msg.json()  # type: ignore[no-any-return]


async def closed_with(ws: aiohttp.ClientWebSocketResponse, timeout: float = TIMEOUT) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = await asyncio.wait_for(ws.receive(), deadline - time.monotonic())
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return ws.close_code
    raise AssertionError("the server did not close the socket")


async def test_sockets_per_client_are_capped() -> None:
    attacker, honest = fake_ip(), fake_ip()
    async with (live_api(ws_max_sockets_per_client=3, ws_auth_timeout_seconds=60, **PROXIED) as base,
                aiohttp.ClientSession() as http):
        held = [await http.ws_connect(ws_url(base), headers=as_client(attacker)) for _ in range(3)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url(base), headers=as_client(attacker))
        assert refused.value.status == 429
        other = await http.ws_connect(ws_url(base), headers=as_client(honest))  # another client is served
        await other.send_json({"type": "ping"})
        assert await next_json(other) == {"type": "pong"}
        await held[0].close()

        async def admitted_again() -> bool:
            try:
                held[0] = await http.ws_connect(ws_url(base), headers=as_client(attacker))
            except aiohttp.WSServerHandshakeError:
                return False
            return True

        await wait_until(admitted_again, timeout=TIMEOUT, interval=0.05, what="a freed slot")
        for ws in [*held, other]:
            await ws.close()


async def test_an_unauthenticated_socket_is_closed_and_a_subscribed_one_stays() -> None:
    async with (live_api(ws_auth_timeout_seconds=1.0) as base, aiohttp.ClientSession() as http):
        job = await analyze(http, base)
        idle_attacker = await http.ws_connect(ws_url(base))
        late = await http.ws_connect(ws_url(base))
        honest = await http.ws_connect(ws_url(base, job))
        assert (await next_json(honest))["type"] == "state"
        await late.send_json({"type": "subscribe", "job_id": job["job_id"], "token": "1.wrong"})
        assert (await next_json(late))["error"]["code"] == "TOKEN_INVALID"  # a failed subscribe is no login
        assert await closed_with(idle_attacker) == 1008
        assert await closed_with(late) == 1008
        await honest.send_json({"type": "ping"})
        assert await next_json(honest) == {"type": "pong"}
        await honest.close()


async def test_an_idle_socket_is_closed() -> None:
    async with (live_api(ws_idle_timeout_seconds=1.5) as base, aiohttp.ClientSession() as http):
        job = await analyze(http, base)
        # Taken before the socket opens: the server's idle clock starts at the state message it sends, which is
        # after this on the same machine's monotonic clock. Taken after that message was read (as it was), a test
        # process that reads it late on a busy machine would see the close come "early".
        started = time.monotonic()
        async with http.ws_connect(ws_url(base, job)) as ws:
            assert (await next_json(ws))["type"] == "state"
            assert await closed_with(ws) == 1008
            assert time.monotonic() - started >= 1.5


async def test_nothing_the_client_sent_is_echoed_back_at_length() -> None:
    marker = "Z" * 1500  # two of them still fit in one frame (MAX_MESSAGE_BYTES 4096)
    async with live_api() as base, aiohttp.ClientSession() as http:
        job = await analyze(http, base)
        async with http.ws_connect(ws_url(base, job)) as ws:
            await next_json(ws)
            for message in ({"type": marker}, {"type": "unsubscribe", "job_id": marker},
                            {"type": "subscribe", "job_id": marker, "token": marker}, {"type": ["x"] * 500}):
                await ws.send_str(json.dumps(message))
                answer = await ws.receive()
                assert answer.type == aiohttp.WSMsgType.TEXT
                assert len(answer.data) < 300 and "ZZZZ" not in answer.data, answer.data
                assert json.loads(answer.data)["error"]["code"] == "BAD_MESSAGE"
            await ws.send_json({"type": "ping"})
            assert await next_json(ws) == {"type": "pong"}


async def test_an_oversized_frame_closes_the_socket() -> None:
    async with live_api() as base, aiohttp.ClientSession() as http:
        job = await analyze(http, base)
        async with http.ws_connect(ws_url(base, job)) as ws:
            await next_json(ws)
            await ws.send_str(json.dumps({"type": "ping", "pad": "x" * 10_000}))
            assert await closed_with(ws) == 1009  # message too big


def _frame(payload: bytes) -> bytes:
    """A masked client text frame."""
    mask = os.urandom(4)
    header = bytes([0x81, 0x80 | len(payload)]) if len(payload) < 126 else \
        bytes([0x81, 0x80 | 126]) + struct.pack("!H", len(payload))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _flood_without_reading(host: str, port: int, seconds: float) -> tuple[int, str]:
    """Open a WebSocket, then send pings and never read a byte. Returns (pings sent, how it ended)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /api/v1/waste/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    batch = _frame(b'{"type":"ping"}') * 1000
    sent, deadline = 0, time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            sock.sendall(batch)
            sent += 1000
    except (BrokenPipeError, ConnectionResetError, TimeoutError) as exc:
        return sent, type(exc).__name__
    finally:
        sock.close()
    return sent, "still open"


async def test_a_client_that_does_not_read_is_cut_off_and_others_are_served() -> None:
    async with (live_api(ws_outbox_max_messages=16, ws_send_timeout_seconds=1.0, ws_auth_timeout_seconds=60) as base,
                aiohttp.ClientSession() as http):
        host, port = base.removeprefix("http://").split(":")
        flood = asyncio.create_task(asyncio.to_thread(_flood_without_reading, host, int(port), 60.0))
        job = await analyze(http, base)
        async with http.ws_connect(ws_url(base, job)) as honest:
            await next_json(honest)
            while not flood.done():  # an honest client stays served while the flood runs
                await honest.send_json({"type": "ping"})
                assert await next_json(honest) == {"type": "pong"}
                await asyncio.wait({flood}, timeout=0.2)
        sent, ended = await flood
        assert ended in ("BrokenPipeError", "ConnectionResetError"), (sent, ended)

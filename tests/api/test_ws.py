"""The WebSocket protocol: states, results, late subscribers, several jobs per socket, errors."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from api.context import HUB
from tests.api.fakes import Fakes, auth, sample_result, token_for

TIMEOUT = 5.0


async def _analyze(client: TestClient) -> str:
    resp = await client.post("/api/v1/waste/analyze")
    return (await resp.json())["job_id"]  # type: ignore[no-any-return]


async def _next(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
    assert msg.type == WSMsgType.TEXT, msg
    return msg.json()  # type: ignore[no-any-return]


async def _closed(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING), msg
    return ws.close_code


async def _wait_followers(client: TestClient, job_id: str, n: int) -> None:
    async def poll() -> None:
        while client.app[HUB].followers(job_id) < n:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), TIMEOUT)


async def test_states_then_result_then_normal_close(client: TestClient, fakes: Fakes) -> None:
    job_id = await _analyze(client)
    ws = await client.ws_connect(f"/api/v1/waste/ws?job_id={job_id}&token={token_for(job_id)}")
    assert await _next(ws) == {"type": "state", "job_id": job_id, "state": "awaiting_upload"}

    fakes.upload(f"uploads/{job_id}")
    assert (await client.post(f"/api/v1/waste/upload-complete/{job_id}", headers=auth(job_id))).status == 202
    assert await _next(ws) == {"type": "state", "job_id": job_id, "state": "queued"}

    result = sample_result(job_id, hit=True)
    await fakes.results.queue.put(result)
    got = await _next(ws)
    assert got["type"] == "result" and got["job_id"] == job_id
    assert got["result"]["classification"]["item_name"] == "water bottle"
    assert got["result"]["cache"] == {**got["result"]["cache"], "hit": True, "source": "redis"}
    assert await _closed(ws) == 1000


async def test_late_subscriber_and_reconnect_get_the_result_at_once(client: TestClient, fakes: Fakes) -> None:
    job_id = await _analyze(client)
    await fakes.results.queue.put(sample_result(job_id))
    await asyncio.wait_for(_until(lambda: job_id in fakes.store.results), TIMEOUT)

    for _ in range(2):  # subscribe late, then reconnect: the result comes again each time
        ws = await client.ws_connect(f"/api/v1/waste/ws?job_id={job_id}&token={token_for(job_id)}")
        got = await _next(ws)
        assert (got["type"], got["job_id"]) == ("result", job_id)
        assert await _closed(ws) == 1000


async def test_one_socket_follows_several_jobs(client: TestClient, fakes: Fakes) -> None:
    a, b = await _analyze(client), await _analyze(client)
    ws = await client.ws_connect("/api/v1/waste/ws")
    for job_id in (a, b):
        await ws.send_json({"type": "subscribe", "job_id": job_id, "token": token_for(job_id)})
        assert (await _next(ws))["state"] == "awaiting_upload"

    await fakes.results.queue.put(sample_result(a))
    assert (await _next(ws))["job_id"] == a
    await ws.send_json({"type": "ping"})
    assert await _next(ws) == {"type": "pong"}  # still open: b has no result yet
    await fakes.results.queue.put(sample_result(b))
    await fakes.results.queue.put(sample_result(b))  # a duplicate on the topic is not sent twice
    assert (await _next(ws))["job_id"] == b
    assert await _closed(ws) == 1000


async def test_unsubscribing_the_last_pending_job_closes(client: TestClient, fakes: Fakes) -> None:
    a, b = await _analyze(client), await _analyze(client)
    ws = await client.ws_connect(f"/api/v1/waste/ws?job_id={a}&token={token_for(a)}")
    await _next(ws)
    await ws.send_json({"type": "subscribe", "job_id": b, "token": token_for(b)})
    await _next(ws)
    await fakes.results.queue.put(sample_result(a))
    assert (await _next(ws))["type"] == "result"
    await ws.send_json({"type": "unsubscribe", "job_id": b})
    assert await _next(ws) == {"type": "unsubscribed", "job_id": b}
    assert await _closed(ws) == 1000


async def test_bad_token_in_query_is_refused_before_upgrade(client: TestClient) -> None:
    job_id = await _analyze(client)
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await client.ws_connect(f"/api/v1/waste/ws?job_id={job_id}&token={token_for('other')}")
    assert err.value.status == 403
    resp = await client.get(f"/api/v1/waste/ws?job_id={job_id}&token=nope")  # plain GET shows the JSON body
    assert (await resp.json())["error"]["code"] == "TOKEN_INVALID"


async def test_plain_get_is_a_json_400(client: TestClient) -> None:
    resp = await client.get("/api/v1/waste/ws")
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "WEBSOCKET_REQUIRED"


async def test_unknown_job_in_query_is_404(client: TestClient) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await client.ws_connect(f"/api/v1/waste/ws?job_id=nojob&token={token_for('nojob')}")
    assert err.value.status == 404


async def test_protocol_errors_keep_the_socket_open(client: TestClient, fakes: Fakes) -> None:
    job_id = await _analyze(client)
    ws = await client.ws_connect("/api/v1/waste/ws")
    await ws.send_str("not json")
    assert (await _next(ws))["error"]["code"] == "BAD_MESSAGE"
    await ws.send_json({"type": "subscribe", "job_id": job_id, "token": token_for("x")})
    assert await _next(ws) == {
        "type": "error",
        "job_id": job_id,
        "error": {"code": "TOKEN_INVALID", "message": "the token is not valid for this job"},
    }
    await ws.send_json({"type": "subscribe", "job_id": "nojob", "token": token_for("nojob")})
    assert (await _next(ws))["error"]["code"] == "JOB_NOT_FOUND"
    await ws.send_json({"type": "dance"})
    assert (await _next(ws))["error"]["code"] == "BAD_MESSAGE"
    await ws.send_json({"type": "subscribe", "job_id": job_id, "token": token_for(job_id)})
    assert (await _next(ws))["state"] == "awaiting_upload"
    await ws.close()


async def test_open_socket_gauge_and_unregister_on_disconnect(client: TestClient) -> None:
    job_id = await _analyze(client)
    ws = await client.ws_connect(f"/api/v1/waste/ws?job_id={job_id}&token={token_for(job_id)}")
    await _next(ws)
    assert "api_websockets_open 1.0" in await (await client.get("/metrics")).text()
    await ws.close()
    await _wait_followers(client, job_id, 0)
    await asyncio.wait_for(_until(lambda: not client.app[HUB].connections), TIMEOUT)
    assert "api_websockets_open 0.0" in await (await client.get("/metrics")).text()


async def test_delivery_latency_is_recorded(client: TestClient, fakes: Fakes) -> None:
    job_id = await _analyze(client)
    ws = await client.ws_connect(f"/api/v1/waste/ws?job_id={job_id}&token={token_for(job_id)}")
    await _next(ws)
    await fakes.results.queue.put(sample_result(job_id))
    await _next(ws)
    text = await (await client.get("/metrics")).text()
    assert "api_result_delivery_seconds_count 1.0" in text


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


async def test_shutdown_closes_sockets_with_going_away(client: TestClient) -> None:
    job_id = await _analyze(client)
    ws = await client.ws_connect(f"/api/v1/waste/ws?job_id={job_id}&token={token_for(job_id)}")
    await _next(ws)
    shutdown = asyncio.create_task(client.app.shutdown())  # it waits for the close handshake: read meanwhile
    assert await _closed(ws) == 1001
    await asyncio.wait_for(shutdown, TIMEOUT)
    assert not client.app[HUB].connections


async def test_an_expired_token_is_refused_with_its_own_code(client: TestClient) -> None:
    job_id = await _analyze(client)
    expired = token_for(job_id, expires_at=1000)
    resp = await client.get(f"/api/v1/waste/ws?job_id={job_id}&token={expired}")
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "TOKEN_EXPIRED"
    ws = await client.ws_connect("/api/v1/waste/ws")
    await ws.send_json({"type": "subscribe", "job_id": job_id, "token": expired})
    assert (await _next(ws))["error"]["code"] == "TOKEN_EXPIRED"
    await ws.close()

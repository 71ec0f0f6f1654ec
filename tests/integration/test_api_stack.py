"""The API on the real local stack (Kafka, Redis, S3 server, CDN edge), with real HTTP and WebSocket clients.

The tests play the worker's role by writing AnalysisResults to the results topic themselves. If a real worker
is running too (the browser tests start one), it may answer an uploaded job first: where that can happen the
tests compare with the first result on the topic, which is the one the API must deliver.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from yarl import URL

from api.privacy import client_result
from api.tokens import make_token
from models.classification import WasteCategory, WasteClassification
from models.records import AnalysisResult, CacheInfo, CacheSource, JobStatus, UploadCompleted
from models.settings import Settings
from streams.topics import ANALYSIS_RESULTS, UPLOADS_COMPLETED
from tests import samples
from tests.api.live import publish_results, results_writer, running_api, topic_reader
from tools.kit.api import analyze, post_upload, ws_url

pytestmark = pytest.mark.stack

TIMEOUT = 30.0
SECRET = "integration-secret"


@pytest.fixture
def api_settings(settings_factory: Callable[..., Settings]) -> Settings:
    # Every test client is 127.0.0.1: 200 subscribers from "one client" need a socket cap to match.
    return settings_factory(api_token_secret=SecretStr(SECRET), upload_max_bytes=2 * 1024 * 1024,
                            ws_max_sockets_per_client=1000)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No connection limit: the load test opens hundreds of sockets at once.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


@pytest.fixture
async def api(api_settings: Settings) -> AsyncIterator[str]:
    async with running_api(api_settings) as base:
        yield base


async def s3_post(http: aiohttp.ClientSession, job: dict[str, Any], data: bytes, content_type: str) -> int:
    """The browser's upload of ``data`` declared as ``content_type``; returns the status."""
    return (await post_upload(http, job, data, content_type=content_type))[0]


def fake_result(job_id: str, item: str = "test bottle") -> AnalysisResult:
    return AnalysisResult(
        job_id=job_id,
        status=JobStatus.DONE,
        classification=WasteClassification(
            category=WasteCategory.PET_BOTTLE,
            item_name=item,
            disposal_instructions="Rinse and recycle.",
            recyclable=True,
            confidence=0.9,
        ),
        cache=CacheInfo(hit=False, source=CacheSource.MODEL, phash="f" * 64),
        fetch=None,
    )


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return msg.json()  # type: ignore[no-any-return]


async def result_of(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """Skip state messages; return the result message and check the socket then closes normally."""
    while (msg := await next_json(ws))["type"] != "result":
        assert msg["type"] == "state", msg
    closing = await asyncio.wait_for(ws.receive(), TIMEOUT)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and ws.close_code == 1000
    return msg


async def test_health_on_the_real_stack(http: aiohttp.ClientSession, api: str) -> None:
    async with http.get(f"{api}/healthz") as resp:
        body = await resp.json()
    assert resp.status == 200, body
    assert body["checks"] == {"kafka": "ok", "redis": "ok", "results_consumer": "ok"}


async def test_analyze_upload_complete_and_live_result(
    http: aiohttp.ClientSession, api: str, api_settings: Settings
) -> None:
    photo = samples.photo_bytes(3)
    job = await analyze(http, api)
    job_id = job["job_id"]

    # The readers and the socket first: the upload itself is a trigger too (a storage notification, which a
    # running worker turns into the job), so the job may be queued before upload-complete is called.
    async with (
        topic_reader(api_settings, UPLOADS_COMPLETED) as uploads,
        topic_reader(api_settings, ANALYSIS_RESULTS) as results,
        http.ws_connect(ws_url(api, job)) as ws,
    ):
        assert await next_json(ws) == {"type": "state", "job_id": job_id, "state": "awaiting_upload"}
        assert await s3_post(http, job, photo, "image/jpeg") == 204
        async with http.post(
            f"{api}/api/v1/waste/upload-complete/{job_id}", headers={"Authorization": f"Bearer {job['token']}"}
        ) as resp:
            assert resp.status == 202, await resp.text()

        event = UploadCompleted.model_validate_json(await uploads.wait_for_key(job_id))
        assert (event.job_id, event.bucket, event.key) == (job_id, api_settings.s3_bucket_name, f"uploads/{job_id}")
        assert (event.size, event.content_type) == (len(photo), "image/jpeg")

        async with results_writer(api_settings) as producer:  # the worker's role
            await publish_results(producer, [fake_result(job_id)])
        delivered = (await result_of(ws))["result"]  # after the state "queued" (unless the result came first)
        first_on_topic = AnalysisResult.model_validate_json(await results.wait_for_key(job_id))
        assert delivered == client_result(first_on_topic)  # the client view: no pHash, no other job's id
        assert "phash" not in delivered["cache"]

    async with http.get(f"{api}/api/v1/waste/results/{job_id}", params={"token": job["token"]}) as resp:
        stored = await resp.json()
    assert stored["state"] == "done" and stored["result"] == delivered
    async with http.get(job["image_url"]) as resp:  # the photo, through the CDN
        assert resp.status == 200 and await resp.read() == photo
    async with http.get(f"{api}/metrics") as resp:
        assert "api_result_delivery_seconds_count 1.0" in await resp.text()


async def test_two_instances_each_deliver_to_their_own_subscribers(
    http: aiohttp.ClientSession, api_settings: Settings
) -> None:
    async with running_api(api_settings) as a, running_api(api_settings) as b:
        job1, job2 = await analyze(http, a), await analyze(http, b)  # job state is shared through Redis
        sockets = [await http.ws_connect(ws_url(base, job)) for base in (a, b) for job in (job1, job2)]
        for ws in sockets:
            assert (await next_json(ws))["state"] == "awaiting_upload"
        async with results_writer(api_settings) as producer:
            await publish_results(producer, [fake_result(job1["job_id"]), fake_result(job2["job_id"])])
        got = [await result_of(ws) for ws in sockets]
        assert [m["job_id"] for m in got] == [job1["job_id"], job2["job_id"]] * 2
        for ws in sockets:
            await ws.close()


async def test_late_subscriber_gets_the_result_at_once(
    http: aiohttp.ClientSession, api: str, api_settings: Settings
) -> None:
    job = await analyze(http, api)
    async with results_writer(api_settings) as producer:
        await publish_results(producer, [fake_result(job["job_id"], item="late")])

    async def stored() -> None:
        while True:
            async with http.get(f"{api}/api/v1/waste/results/{job['job_id']}", params={"token": job["token"]}) as resp:
                if (await resp.json())["state"] == "done":
                    return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(stored(), TIMEOUT)
    async with running_api(api_settings) as newcomer:  # even an instance started after the result
        for base in (api, api, newcomer):  # and a reconnect gets it again
            async with http.ws_connect(ws_url(base, job)) as ws:
                assert (await result_of(ws))["result"]["classification"]["item_name"] == "late"


async def test_an_instance_started_later_replays_results_it_missed(
    http: aiohttp.ClientSession, settings_factory: Callable[..., Settings]
) -> None:
    # A Redis database of its own: an API instance running elsewhere on this stack must not store the result.
    own_db = str(URL(settings_factory().redis_url).with_path("/14"))
    api_settings = settings_factory(api_token_secret=SecretStr(SECRET), redis_url=own_db)
    async with running_api(api_settings) as first:
        job = await analyze(http, first)
    async with results_writer(api_settings) as producer:  # no API instance is running now
        await publish_results(producer, [fake_result(job["job_id"], item="missed")])
    async with running_api(api_settings) as later, http.ws_connect(ws_url(later, job)) as ws:
        assert (await result_of(ws))["result"]["classification"]["item_name"] == "missed"


async def test_wrong_token_is_403(http: aiohttp.ClientSession, api: str) -> None:
    job = await analyze(http, api)
    other = make_token(SecretStr(SECRET), "someone-else", expires_at=int(time.time()) + 3600)
    bad = {"Authorization": f"Bearer {other}"}
    async with http.post(f"{api}/api/v1/waste/upload-complete/{job['job_id']}", headers=bad) as resp:
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "TOKEN_INVALID"
    async with http.get(f"{api}/api/v1/waste/results/{job['job_id']}", headers=bad) as resp:
        assert resp.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await http.ws_connect(ws_url(api, {**job, "token": other}))
    assert err.value.status == 403


async def test_upload_complete_twice_publishes_once(http: aiohttp.ClientSession, api_settings: Settings) -> None:
    async with running_api(api_settings) as a, running_api(api_settings) as b:
        job = await analyze(http, a)
        headers = {"Authorization": f"Bearer {job['token']}"}
        # Read from before the upload: its storage notification may queue the job before the calls below.
        async with topic_reader(api_settings, UPLOADS_COMPLETED) as uploads:
            assert await s3_post(http, job, samples.photo_bytes(5), "image/jpeg") == 204

            async def complete(base: str) -> int:
                async with http.post(f"{base}/api/v1/waste/upload-complete/{job['job_id']}", headers=headers) as r:
                    return r.status

            # At once on both instances, then once more.
            assert await asyncio.gather(complete(a), complete(b), complete(a)) == [202, 202, 202]
            assert await complete(b) == 202
            await uploads.read_to_end()
            assert len(uploads.by_key(job["job_id"])) == 1


async def test_s3_enforces_the_upload_policy(
    http: aiohttp.ClientSession, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(api_token_secret=SecretStr(SECRET), upload_max_bytes=10_000)
    async with running_api(settings) as base:
        too_big = await analyze(http, base)
        assert await s3_post(http, too_big, b"\xff" * 20_000, "image/jpeg") in (400, 403)
        not_image = await analyze(http, base)
        assert await s3_post(http, not_image, b"hello", "text/plain") in (400, 403)
        for job in (too_big, not_image):  # nothing arrived, so nothing is queued
            async with http.post(
                f"{base}/api/v1/waste/upload-complete/{job['job_id']}", params={"token": job["token"]}
            ) as resp:
                assert resp.status == 409 and (await resp.json())["error"]["code"] == "UPLOAD_MISSING"

        fits = await analyze(http, base)
        assert await s3_post(http, fits, b"\xff" * 9_000, "image/jpeg") == 204

        # There is no pre-signed PUT any more (it could not limit the size).
        assert "put_url" not in fits


async def test_200_concurrent_subscribers_all_get_their_results(
    http: aiohttp.ClientSession, api: str, api_settings: Settings
) -> None:
    n = 200
    jobs = await asyncio.gather(*(analyze(http, api) for _ in range(n)))
    sockets = await asyncio.gather(*(http.ws_connect(ws_url(api, job)) for job in jobs))
    await asyncio.gather(*(next_json(ws) for ws in sockets))  # each is subscribed (initial state received)
    async with http.get(f"{api}/metrics") as resp:
        assert f"api_websockets_open {float(n)}" in await resp.text()

    async with results_writer(api_settings) as producer:
        await publish_results(producer, [fake_result(job["job_id"], item=job["job_id"]) for job in jobs])
    got = await asyncio.gather(*(result_of(ws) for ws in sockets))  # each waits with its own deadline
    assert [m["result"]["classification"]["item_name"] for m in got] == [job["job_id"] for job in jobs]
    for ws in sockets:
        await ws.close()

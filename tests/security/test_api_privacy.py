"""Privacy: a result that reuses another user's model call reaches its client without naming that user's job,
object key or pHash (HTTP and WebSocket); the provenance stays on the results topic and in the admin view."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from typing import Any

import aiohttp
import pytest

from models.classification import WasteCategory, WasteClassification
from models.records import AnalysisResult, CacheInfo, CacheSource, FetchInfo, FetchSource, JobStatus
from tests.api.live import publish_results, results_writer
from tests.security.api_support import TIMEOUT, live_api, settings_for
from tools.kit.api import analyze

pytestmark = [pytest.mark.stack]


def reused_result(job_id: str, other_job: str, phash: str, other_phash: str) -> AnalysisResult:
    return AnalysisResult(
        job_id=job_id,
        status=JobStatus.DONE,
        classification=WasteClassification(category=WasteCategory.GLASS, item_name="jar", disposal_instructions="Rinse",
                                           recyclable=True, confidence=0.9),
        cache=CacheInfo(hit=True, source=CacheSource.NEAR, phash=phash, distance=3, reused_job_id=other_job,
                        matched_phash=other_phash),
        fetch=FetchInfo(source=FetchSource.S3, cdn_error="ClientConnectorError: 10.1.2.3:6081 refused"),
        image_key=f"uploads/{job_id}",
    )


async def ws_result(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    while True:
        msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        data = msg.json()
        if data["type"] == "result":
            return data  # type: ignore[no-any-return]


async def test_clients_never_see_another_users_job_key_or_phash() -> None:
    admin = secrets.token_urlsafe(32)
    async with live_api(api_admin_token=admin) as base, aiohttp.ClientSession() as http:
        job = await analyze(http, base)
        other_job, phash, other_phash = uuid.uuid4().hex, secrets.token_hex(32), secrets.token_hex(32)
        ws_url = f"{base.replace('http', 'ws', 1)}/api/v1/waste/ws?job_id={job['job_id']}&token={job['token']}"
        async with http.ws_connect(ws_url) as ws:
            await asyncio.wait_for(ws.receive(), TIMEOUT)  # the initial state: subscribed
            async with results_writer(settings_for()) as producer:
                await publish_results(producer, [reused_result(job["job_id"], other_job, phash, other_phash)])
            over_ws = await ws_result(ws)
        async with http.get(f"{base}/api/v1/waste/results/{job['job_id']}",
                            headers={"Authorization": f"Bearer {job['token']}"}) as resp:
            over_http = await resp.json()
        for seen in (over_ws, over_http):
            text = json.dumps(seen)
            for secret in (other_job, phash, other_phash, "10.1.2.3", "reused_job_id", "matched_phash"):
                assert secret not in text, (secret, text)
            assert seen["result"]["classification"]["category"] == "glass"  # the honest answer is all there
            assert seen["result"]["cache"]["hit"] is True
        # Operators still see where the answer came from.
        async with http.get(f"{base}/api/v1/waste/admin/results/{job['job_id']}",
                            headers={"Authorization": f"Bearer {admin}"}) as resp:
            full = await resp.json()
        assert full["cache"]["reused_job_id"] == other_job and full["cache"]["phash"] == phash


async def test_object_keys_are_not_derivable_from_anything_a_client_sees() -> None:
    async with live_api() as base, aiohttp.ClientSession() as http:
        jobs = [await analyze(http, base) for _ in range(20)]
    ids = [job["job_id"] for job in jobs]
    assert len(set(ids)) == 20 and all(len(i) == 32 and int(i, 16) for i in ids)  # 128-bit random (uuid4)
    assert all(job["upload_fields"]["key"] == f"uploads/{job['job_id']}" for job in jobs)
    assert len({i[:8] for i in ids}) == 20  # no shared, sequential or time-based prefix

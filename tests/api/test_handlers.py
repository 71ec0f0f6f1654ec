"""analyze, upload-complete and results, with fake Redis/Kafka/S3."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp.test_utils import TestClient

from api.store import JobState
from api.tokens import check_token
from models.records import JobStatus
from models.settings import Settings
from tests.api.fakes import Fakes, auth, sample_result, token_for


async def _analyze(client: TestClient, **kw: object) -> dict:  # type: ignore[type-arg]
    resp = await client.post("/api/v1/waste/analyze", **kw)  # type: ignore[arg-type]
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def test_analyze_issues_job_with_server_generated_key(
    client: TestClient, fakes: Fakes, settings: Settings
) -> None:
    smuggled = await client.post("/api/v1/waste/analyze", json={"key": "../../etc/passwd", "content_type": "image/png"})
    assert smuggled.status == 400  # off-spec fields are refused, never used
    body = await _analyze(client, json={"content_type": "image/png"})
    job_id = body["job_id"]
    job = fakes.store.jobs[job_id]
    assert job.key == f"uploads/{job_id}"  # the client's "key" is ignored
    assert body["image_url"] == f"http://cdn.test/waste-images/uploads/{job_id}"
    assert check_token(settings.api_token_secret, job_id, body["token"])
    lifetime = datetime.fromisoformat(body["token_expires_at"]) - datetime.now(UTC)
    assert abs(lifetime.total_seconds() - settings.api_token_ttl_seconds) < 60
    assert body["upload_url"] and body["upload_fields"]["key"] == job.key and "put_url" not in body
    assert body["content_type"] == body["upload_fields"]["Content-Type"] == "image/png"
    assert datetime.fromisoformat(body["expires_at"]).tzinfo is not None
    assert body["max_bytes"] == settings.upload_max_bytes
    assert fakes.storage.presigned == [(job.key, "image/png")]
    assert job.state == JobState.AWAITING_UPLOAD


async def test_analyze_without_body(client: TestClient, fakes: Fakes) -> None:
    body = await _analyze(client)
    assert fakes.storage.presigned == [(f"uploads/{body['job_id']}", "image/jpeg")]  # the first allowed type


async def test_analyze_rejects_non_image_content_type(client: TestClient) -> None:
    for content_type in ("text/html", "image/svg+xml", "image/"):
        resp = await client.post("/api/v1/waste/analyze", json={"content_type": content_type})
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "CONTENT_TYPE_NOT_ALLOWED"


async def test_analyze_rejects_malformed_json(client: TestClient) -> None:
    resp = await client.post("/api/v1/waste/analyze", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "VALIDATION_ERROR"


async def test_body_over_client_max_size_is_a_json_413(client: TestClient) -> None:
    resp = await client.post("/api/v1/waste/analyze", data=b"x" * (200 * 1024))
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "REQUEST_TOO_LARGE"


async def test_upload_complete_publishes_once(client: TestClient, fakes: Fakes) -> None:
    body = await _analyze(client)
    job_id = body["job_id"]
    fakes.upload(f"uploads/{job_id}", size=5000)

    first = await client.post(f"/api/v1/waste/upload-complete/{job_id}", headers=auth(job_id))
    again = await client.post(f"/api/v1/waste/upload-complete/{job_id}?token={body['token']}")
    assert (first.status, again.status) == (202, 202)
    assert (await again.json()) == {"job_id": job_id, "state": "queued"}
    assert len(fakes.publisher.events) == 1
    event = fakes.publisher.events[0]
    assert (event.job_id, event.key, event.size, event.content_type) == (
        job_id,
        f"uploads/{job_id}",
        5000,
        "image/jpeg",
    )
    assert fakes.store.jobs[job_id].state == JobState.QUEUED

    fakes.store.results[job_id] = sample_result(job_id)
    late = await client.post(f"/api/v1/waste/upload-complete/{job_id}", headers=auth(job_id))
    assert (late.status, (await late.json())["state"]) == (202, "done")
    assert len(fakes.publisher.events) == 1


async def test_upload_complete_token_checks(client: TestClient, fakes: Fakes) -> None:
    job_id = (await _analyze(client))["job_id"]
    fakes.upload(f"uploads/{job_id}")
    url = f"/api/v1/waste/upload-complete/{job_id}"

    missing = await client.post(url)
    wrong = await client.post(url, headers={"Authorization": f"Bearer {token_for('another-job')}"})
    assert (missing.status, wrong.status) == (401, 403)
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await missing.json())["error"]["code"] == "TOKEN_MISSING"
    assert (await wrong.json())["error"]["code"] == "TOKEN_INVALID"
    expired = await client.post(url, headers={"Authorization": f"Bearer {token_for(job_id, expires_at=1000)}"})
    assert expired.status == 403 and (await expired.json())["error"]["code"] == "TOKEN_EXPIRED"
    assert fakes.publisher.events == []


async def test_upload_complete_unknown_job_is_404(client: TestClient) -> None:
    resp = await client.post("/api/v1/waste/upload-complete/nosuchjob", headers=auth("nosuchjob"))
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "JOB_NOT_FOUND"


async def test_upload_complete_before_upload_is_409_and_can_be_retried(client: TestClient, fakes: Fakes) -> None:
    job_id = (await _analyze(client))["job_id"]
    url = f"/api/v1/waste/upload-complete/{job_id}"
    early = await client.post(url, headers=auth(job_id))
    assert early.status == 409
    assert (await early.json())["error"]["code"] == "UPLOAD_MISSING"
    fakes.upload(f"uploads/{job_id}")
    assert (await client.post(url, headers=auth(job_id))).status == 202
    assert len(fakes.publisher.events) == 1


async def test_upload_complete_refuses_too_large_and_non_images(
    client: TestClient, fakes: Fakes, settings: Settings
) -> None:
    big = (await _analyze(client))["job_id"]
    fakes.upload(f"uploads/{big}", size=settings.upload_max_bytes + 1)
    text = (await _analyze(client))["job_id"]
    fakes.upload(f"uploads/{text}", content_type="text/plain")

    r_big = await client.post(f"/api/v1/waste/upload-complete/{big}", headers=auth(big))
    r_text = await client.post(f"/api/v1/waste/upload-complete/{text}", headers=auth(text))
    assert (r_big.status, (await r_big.json())["error"]["code"]) == (413, "UPLOAD_TOO_LARGE")
    assert (r_text.status, (await r_text.json())["error"]["code"]) == (415, "UPLOAD_NOT_IMAGE")
    assert fakes.publisher.events == []


async def test_publish_failure_is_503_and_a_retry_publishes(client: TestClient, fakes: Fakes) -> None:
    job_id = (await _analyze(client))["job_id"]
    fakes.upload(f"uploads/{job_id}")
    fakes.publisher.fail_next = True
    url = f"/api/v1/waste/upload-complete/{job_id}"
    failed = await client.post(url, headers=auth(job_id))
    assert (failed.status, (await failed.json())["error"]["code"]) == (503, "QUEUE_UNAVAILABLE")
    assert fakes.store.jobs[job_id].state == JobState.AWAITING_UPLOAD
    assert (await client.post(url, headers=auth(job_id))).status == 202
    assert len(fakes.publisher.events) == 1


async def test_results_state_then_result(client: TestClient, fakes: Fakes) -> None:
    job_id = (await _analyze(client))["job_id"]
    url = f"/api/v1/waste/results/{job_id}"
    pending = await client.get(url, headers=auth(job_id))
    assert (await pending.json()) == {"job_id": job_id, "state": "awaiting_upload", "result": None}

    result = sample_result(job_id, status=JobStatus.FAILED)
    fakes.store.results[job_id] = result
    done = await client.get(url, params={"token": token_for(job_id)})
    body = await done.json()
    assert done.status == 200
    assert body["state"] == "failed"
    assert body["result"]["error"]["code"] == "IMAGE_UNDECODABLE"


async def test_results_needs_the_right_token(client: TestClient) -> None:
    job_id = (await _analyze(client))["job_id"]
    resp = await client.get(f"/api/v1/waste/results/{job_id}", headers=auth("someone-else"))
    assert resp.status == 403
    assert (await client.get("/api/v1/waste/results/gone", headers=auth("gone"))).status == 404


async def test_redis_outage_is_a_json_503(client: TestClient, fakes: Fakes) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    fakes.store.fail_with = RedisConnectionError("down")
    resp = await client.get("/api/v1/waste/results/abc", headers=auth("abc"))
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "SERVICE_UNAVAILABLE"


async def test_unexpected_error_is_a_json_500(client: TestClient, fakes: Fakes) -> None:
    fakes.store.fail_with = ValueError("bug")
    resp = await client.get("/api/v1/waste/results/abc", headers=auth("abc"))
    assert resp.status == 500
    assert await resp.json() == {"error": {"code": "INTERNAL_ERROR", "message": "internal server error"}}

"""Routing errors, CORS, health, metrics, OpenAPI and the web page."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from tests.api.fakes import ALLOWED_ORIGIN, Fakes, auth


async def test_unknown_route_and_wrong_method_are_json(client: TestClient) -> None:
    missing = await client.get("/nope")
    assert missing.status == 404
    assert missing.content_type == "application/json"
    assert (await missing.json())["error"]["code"] == "NOT_FOUND"
    wrong = await client.get("/api/v1/waste/analyze")
    assert wrong.status == 405
    assert (await wrong.json())["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert "POST" in wrong.headers["Allow"]


async def test_cors_preflight_for_allowed_origin(client: TestClient) -> None:
    resp = await client.options(
        "/api/v1/waste/analyze",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]


async def test_cors_preflight_for_other_origin_is_refused(client: TestClient) -> None:
    resp = await client.options(
        "/api/v1/waste/analyze", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert resp.status == 403
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_cors_headers_on_responses_and_errors(client: TestClient) -> None:
    ok = await client.post("/api/v1/waste/analyze", headers={"Origin": ALLOWED_ORIGIN})
    denied = await client.get("/api/v1/waste/results/x", headers={"Origin": ALLOWED_ORIGIN})
    other = await client.post("/api/v1/waste/analyze", headers={"Origin": "http://evil.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert denied.status == 401 and denied.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "Access-Control-Allow-Origin" not in other.headers


async def test_healthz(client: TestClient, fakes: Fakes) -> None:
    ok = await client.get("/healthz")
    assert ok.status == 200
    assert (await ok.json())["checks"] == {"kafka": "ok", "redis": "ok", "results_consumer": "ok"}
    fakes.publisher.healthy = False
    bad = await client.get("/healthz")
    body = await bad.json()
    assert bad.status == 503
    assert body["checks"]["kafka"].startswith("fail")
    assert body["error"]["code"] == "UNHEALTHY"


async def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    await client.get("/api/v1/waste/results/job-a", headers=auth("job-a"))
    await client.get("/api/v1/waste/results/job-b", headers=auth("job-b"))
    text = await (await client.get("/metrics")).text()
    assert 'api_http_requests_total{method="GET",route="/api/v1/waste/results/{job_id}",status="404"} 2.0' in text
    assert "job-a" not in text
    assert "api_websockets_open 0.0" in text
    assert "api_result_delivery_seconds_bucket" in text


async def test_openapi_documents_every_http_route(client: TestClient) -> None:
    resp = await client.get("/api/v1/openapi.json")
    doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    routes = {
        r.resource.canonical
        for r in client.app.router.routes()
        if r.resource is not None and r.method in ("GET", "POST") and r.resource.canonical.startswith(("/api", "/h"))
    }
    documented = set(doc["paths"]) | {"/api/v1/waste/ws", "/api/v1/openapi.json"}
    assert routes <= documented
    assert "AnalysisResult" in doc["components"]["schemas"]


async def test_web_page_is_served(client: TestClient) -> None:
    page = await client.get("/")
    html = await page.text()
    assert page.status == 200 and 'id="error"' in html
    assert (await client.get("/static/app.js")).status == 200

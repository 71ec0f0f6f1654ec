"""The vision model simulator, driven through a real socket by the real ``openai`` client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openai import AsyncOpenAI
from PIL import Image
from pydantic import ValidationError

from models.classification import WasteCategory, WasteClassification, classification_json_schema
from simulator.answers import classify
from simulator.faults import (
    ConfigUpdate,
    Fault,
    FaultRates,
    SimConfig,
    apply_update,
    config_from_env,
    latency_seconds,
    pick_fault,
)

RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "waste_classification", "strict": True, "schema": classification_json_schema()},
}


def photo(tag: bytes, size: tuple[int, int] = (32, 24), fmt: str = "JPEG") -> bytes:
    """A real little image, different for every tag (the simulator, like the real endpoint, refuses non-images)."""
    seed = hashlib.sha256(tag).digest()
    image = Image.new("RGB", size, tuple(seed[:3]))
    image.putpixel((0, 0), tuple(seed[3:6]))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def data_url(tag: bytes, media_type: str = "image/jpeg") -> str:
    return f"data:{media_type};base64," + base64.b64encode(photo(tag)).decode()


def image_messages(url: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "Classify the waste item in the photo."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this and how do I dispose of it?"},
                {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
            ],
        },
    ]


async def complete(client: AsyncOpenAI, url: str, **kwargs: Any) -> Any:
    return await client.chat.completions.create(
        model="gpt-4o",
        messages=image_messages(url),  # type: ignore[arg-type]
        response_format=RESPONSE_FORMAT,  # type: ignore[arg-type]
        **kwargs,
    )


@pytest_asyncio.fixture
async def control(aiohttp_client: Any, sim: TestServer) -> TestClient:
    return await aiohttp_client(sim)


@pytest_asyncio.fixture
async def client(sim: TestServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=str(sim.make_url("/v1")), api_key="x", max_retries=0) as c:
        yield c


async def configure(control: TestClient, **body: Any) -> dict[str, Any]:
    resp = await control.post("/_sim/config", json=body)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def stats(control: TestClient) -> dict[str, Any]:
    resp = await control.get("/_sim/stats")
    return await resp.json()


async def wait_until_in_flight(control: TestClient, expected: int) -> None:
    async with asyncio.timeout(5):
        while (await stats(control))["in_flight"] != expected:
            await asyncio.sleep(0.01)


# --- answers


async def test_valid_classification_from_data_url(client: AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-2024-08-06",
        messages=image_messages(data_url(b"photo-1")),  # type: ignore[arg-type]
        response_format=RESPONSE_FORMAT,  # type: ignore[arg-type]
    )
    assert raw.headers["x-simulator"] == "true"
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-2024-08-06"
    assert completion.system_fingerprint == "simulator"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    result = WasteClassification.model_validate_json(choice.message.content or "")
    assert 0.6 <= result.confidence <= 0.99
    assert completion.usage is not None
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens > 0


async def test_same_image_same_answer_and_images_spread_over_categories(client: AsyncOpenAI) -> None:
    payload = b"same-photo"
    first, second = [await complete(client, data_url(payload)) for _ in range(2)]
    assert first.choices[0].message.content == second.choices[0].message.content
    # The answer is a function of the decoded bytes, not of the request.
    expected = classify(hashlib.sha256(photo(payload)).hexdigest())
    assert WasteClassification.model_validate_json(first.choices[0].message.content) == expected

    categories = {classify(hashlib.sha256(str(i).encode()).hexdigest()).category for i in range(400)}
    assert categories == set(WasteCategory)


async def test_http_image_url_is_downloaded_and_classified_by_its_bytes(
    client: AsyncOpenAI, aiohttp_server: Any
) -> None:
    image = photo(b"from-the-cdn")
    app = web.Application()
    app.router.add_get("/abc.jpg", lambda _: web.Response(body=image, content_type="image/jpeg"))
    app.router.add_get("/page.html", lambda _: web.Response(text="<html></html>", content_type="text/html"))
    origin = await aiohttp_server(app)
    completion = await complete(client, str(origin.make_url("/abc.jpg")))
    expected = classify(hashlib.sha256(image).hexdigest())  # the same answer as for the same bytes inline
    assert WasteClassification.model_validate_json(completion.choices[0].message.content or "") == expected
    for url, code in ((origin.make_url("/missing.jpg"), "invalid_image_url"),
                      (origin.make_url("/page.html"), "invalid_image_format")):
        with pytest.raises(openai.BadRequestError) as err:
            await complete(client, str(url))
        assert isinstance(err.value.body, dict) and err.value.body["code"] == code


async def test_models_and_health(client: AsyncOpenAI, control: TestClient) -> None:
    ids = [m.id async for m in client.models.list()]
    assert "gpt-4o" in ids
    resp = await control.get("/healthz")
    assert resp.status == 200 and (await resp.json())["simulator"] is True


# --- request validation


async def test_missing_auth_is_401(client: AsyncOpenAI, control: TestClient) -> None:
    with pytest.raises(openai.AuthenticationError) as err:
        await complete(client, data_url(b"x"), extra_headers={"Authorization": openai.Omit()})
    assert err.value.status_code == 401
    resp = await control.post("/v1/chat/completions", json={}, headers={"Authorization": "Bearer "})
    assert resp.status == 401
    assert resp.headers["x-simulator"] == "true"
    assert (await resp.json())["error"]["code"] == "invalid_api_key"


async def test_no_image_is_400(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hello"}])
    assert err.value.status_code == 400
    assert isinstance(err.value.body, dict) and err.value.body["param"] == "messages"


async def test_bad_requests_are_400(control: TestClient) -> None:
    auth = {"Authorization": "Bearer x"}
    image = image_messages(data_url(b"x"))
    bad_base64 = image_messages("data:image/jpeg;base64,@@")
    bad_bodies: list[Any] = [
        [],
        {"messages": image},  # no model
        {"model": "gpt-4o", "messages": []},
        {"model": "gpt-4o", "messages": bad_base64},
        {"model": "gpt-4o", "messages": image, "response_format": {"type": "xml"}},
        {"model": "gpt-4o", "messages": image, "stream": True},
    ]
    for body in bad_bodies:
        resp = await control.post("/v1/chat/completions", json=body, headers=auth)
        assert resp.status == 400, body
        assert (await resp.json())["error"]["type"] == "invalid_request_error"
    resp = await control.post("/v1/chat/completions", data=b"{not json", headers=auth)
    assert resp.status == 400


# --- injected faults


async def test_scripted_429_carries_retry_after(client: AsyncOpenAI, control: TestClient) -> None:
    await configure(control, script=["429", "429"], retry_after_s=2)
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as err:
            await complete(client, data_url(b"x"))
        assert err.value.response.headers["retry-after"] == "2"
        assert err.value.response.headers["x-simulator"] == "true"
        assert isinstance(err.value.body, dict) and err.value.body["code"] == "rate_limit_exceeded"
        assert int(err.value.response.headers["x-ratelimit-limit-requests"]) > 0
    await complete(client, data_url(b"x"))  # the script is used up: back to normal
    assert (await stats(control))["faults"]["429"] == 2


async def test_scripted_500(client: AsyncOpenAI, control: TestClient) -> None:
    await configure(control, script=["500", "ok"])
    with pytest.raises(openai.InternalServerError) as err:
        await complete(client, data_url(b"x"))
    assert err.value.status_code == 500
    await complete(client, data_url(b"x"))


async def test_malformed_output_fails_schema_both_ways(client: AsyncOpenAI, control: TestClient) -> None:
    await configure(control, script=["malformed", "malformed"])
    contents = [(await complete(client, data_url(b"x"))).choices[0].message.content or "" for _ in range(2)]
    for content in contents:
        with pytest.raises(ValidationError):
            WasteClassification.model_validate_json(content)
    with pytest.raises(json.JSONDecodeError):
        json.loads(contents[0])  # first: not JSON at all
    assert isinstance(json.loads(contents[1]), dict)  # second: JSON, but off the schema


async def test_hang_times_the_client_out(sim: TestServer, control: TestClient) -> None:
    await configure(control, script=["hang"])
    async with AsyncOpenAI(base_url=str(sim.make_url("/v1")), api_key="x", max_retries=0, timeout=0.3) as client:
        with pytest.raises(openai.APITimeoutError):  # the client's 0.3 s timeout ends it, not the hang
            await complete(client, data_url(b"x"))
    counts = await stats(control)
    assert counts["faults"]["hang"] == 1 and counts["ok"] == 0
    await wait_until_in_flight(control, 0)  # the client went away, so its hung handler was cancelled


async def test_shutdown_releases_hung_requests(sim: TestServer, control: TestClient) -> None:
    await configure(control, script=["hang"], hang_s=600)
    async with AsyncOpenAI(base_url=str(sim.make_url("/v1")), api_key="x", max_retries=0, timeout=30) as client:
        pending = asyncio.create_task(complete(client, data_url(b"x")))
        await wait_until_in_flight(control, 1)
        await sim.close()
        with pytest.raises(openai.InternalServerError) as err:
            await pending
        # 503 "shutting down", not the 504 a hang that ran out its 600 s would give: shutdown released it.
        assert err.value.status_code == 503


async def test_rates_apply_when_no_script(client: AsyncOpenAI, control: TestClient) -> None:
    await configure(control, rates={"500": 1.0})
    with pytest.raises(openai.InternalServerError):
        await complete(client, data_url(b"x"))
    await configure(control, rates={"500": 0.0})
    await complete(client, data_url(b"x"))


# --- control endpoints


async def test_stats_count_every_call(client: AsyncOpenAI, control: TestClient) -> None:
    await configure(control, script=["429", "500", "malformed", "ok"])
    for payload in (b"a", b"b", b"a", b"c"):
        try:
            await complete(client, data_url(payload))
        except openai.APIStatusError:
            pass
    with pytest.raises(openai.AuthenticationError):
        await complete(client, data_url(b"d"), extra_headers={"Authorization": openai.Omit()})
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "no image"}])
    assert await stats(control) == {
        "simulator": True,
        "calls": 6,
        "ok": 1,
        "rejected": 2,
        "faults": {"429": 1, "500": 1, "hang": 0, "malformed": 1, "503": 0, "refusal": 0, "truncated": 0},
        "distinct_images": 3,
        "in_flight": 0,
        "max_in_flight": 1,
        "image_tokens": 4 * 85,  # detail "low": the base cost per image, for the four calls that got through
        "last_rejection": "No image found: the simulator classifies photos, send an 'image_url' content part.",
    }


async def test_config_roundtrip_and_reset(client: AsyncOpenAI, control: TestClient) -> None:
    startup = await (await control.get("/_sim/config")).json()
    assert startup["script"] == [] and startup["latency_ms"] == 0
    updated = await configure(control, latency_ms=5, rates={"429": 0.25}, script=["500", "ok"])
    assert updated["latency_ms"] == 5 and updated["rates"]["429"] == 0.25 and updated["rates"]["500"] == 0.0
    assert updated["script"] == ["500", "ok"]
    with pytest.raises(openai.InternalServerError):
        await complete(client, data_url(b"x"))
    assert (await (await control.get("/_sim/config")).json())["script"] == ["ok"]

    resp = await control.post("/_sim/reset")
    assert resp.status == 200
    assert await (await control.get("/_sim/config")).json() == startup
    counts = await stats(control)
    assert counts["calls"] == 0 and counts["faults"]["500"] == 0 and counts["distinct_images"] == 0
    await complete(client, data_url(b"x"))  # the script was cleared with the rest
    assert (await stats(control))["ok"] == 1


async def test_invalid_config_is_rejected(control: TestClient) -> None:
    for body in (
        {"latency": 5},  # typo
        {"latency_ms": -1},
        {"rates": {"429": 0.7, "500": 0.7}},  # more than one unit of probability
        {"rates": {"ok": 0.5}},
        {"script": ["404"]},
    ):
        resp = await control.post("/_sim/config", json=body)
        assert resp.status == 400, body
    assert (await (await control.get("/_sim/config")).json())["rates"]["429"] == 0.0


async def test_latency_is_honoured(client: AsyncOpenAI, control: TestClient) -> None:
    await configure(control, latency_ms=200, jitter_ms=0)
    started = time.monotonic()
    await complete(client, data_url(b"x"))
    assert time.monotonic() - started >= 0.2


async def test_concurrent_calls_are_tracked(client: AsyncOpenAI, control: TestClient) -> None:
    # A latency far longer than the test: the five calls can only be in flight together if the latency sleep
    # does not block the simulator's loop. Waited on as a condition, then the clients go away.
    await configure(control, latency_ms=600_000, jitter_ms=0)
    calls = [asyncio.create_task(complete(client, data_url(bytes([i])))) for i in range(5)]
    try:
        await wait_until_in_flight(control, 5)
    finally:
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
    await wait_until_in_flight(control, 0)
    counts = await stats(control)
    assert counts["max_in_flight"] == 5 and counts["distinct_images"] == 5


# --- pure decision logic


def test_pick_fault_walks_cumulative_rates() -> None:
    rates = FaultRates.model_validate({"429": 0.1, "500": 0.2, "hang": 0.0, "malformed": 0.3})
    assert pick_fault(rates, 0.05) is Fault.RATE_LIMIT
    assert pick_fault(rates, 0.25) is Fault.SERVER_ERROR
    assert pick_fault(rates, 0.35) is Fault.MALFORMED
    assert pick_fault(rates, 0.61) is Fault.OK
    assert pick_fault(FaultRates(), 0.0) is Fault.OK


def test_latency_jitter_bounds() -> None:
    config = SimConfig(latency_ms=3000, jitter_ms=300)
    assert latency_seconds(config, 0.0) == pytest.approx(2.7)
    assert latency_seconds(config, 0.5) == pytest.approx(3.0)
    assert latency_seconds(config, 0.999999) == pytest.approx(3.3, abs=1e-3)
    assert latency_seconds(SimConfig(latency_ms=0, jitter_ms=300), 0.0) == 0.0


def test_config_from_env_and_partial_update() -> None:
    config = config_from_env({"SIM_LATENCY_MS": "250", "SIM_RATE_429": "0.1", "SIM_HANG_S": "2", "OTHER": "x"})
    assert config.latency_ms == 250 and config.jitter_ms == 300 and config.rates.rate_limit == 0.1
    assert config.hang_s == 2.0
    assert config_from_env({}) == SimConfig()
    with pytest.raises(ValueError, match="SIM_LATENCY_MS"):
        config_from_env({"SIM_LATENCY_MS": "fast"})
    updated = apply_update(config, ConfigUpdate.model_validate({"rates": {"500": 0.2}}))
    assert updated.rates.rate_limit == 0.1 and updated.rates.server_error == 0.2 and updated.latency_ms == 250


async def test_the_vision_client_marks_the_simulators_answers_as_simulated(client: AsyncOpenAI) -> None:
    from models.settings import Settings
    from streams.vision import VisionClient

    vision = VisionClient(Settings(_env_file=None, vision_model="gpt-4o"), client=client)  # type: ignore[call-arg]
    answer = await vision.classify(data_url(b"any image bytes"))
    assert answer.answered_by is not None
    assert answer.answered_by.model == "gpt-4o" and answer.answered_by.system_fingerprint == "simulator"
    assert answer.answered_by.simulated

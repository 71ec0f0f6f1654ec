"""The simulator refuses what OpenAI's Chat Completions endpoint refuses: one test per rule (sources in
simulator/protocol.py and models/strict_schema.py), and the service's own request passes in both modes."""

from __future__ import annotations

import base64
import copy
import io
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from openai import AsyncOpenAI
from PIL import Image

from models.classification import classification_json_schema
from models.errors import ErrorCode, PipelineError
from models.settings import Settings
from simulator import protocol
from simulator.faults import SimConfig, SimMode
from simulator.server import create_app
from streams.vision import VisionClient, check_request_contract


def image_bytes(size: tuple[int, int] = (64, 48), fmt: str = "JPEG", frames: int = 1) -> bytes:
    out = io.BytesIO()
    images = [Image.new("RGB", size, (10 * i, 200, 30)) for i in range(frames)]
    if frames > 1:
        images[0].save(out, fmt, save_all=True, append_images=images[1:])
    else:
        images[0].save(out, fmt)
    return out.getvalue()


def data_url(data: bytes | None = None, media_type: str = "image/jpeg") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data if data is not None else image_bytes()).decode()


def user_image(url: str | None = None, detail: str = "low") -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": "Classify this waste item."},
                                        {"type": "image_url", "image_url": {"url": url or data_url(),
                                                                            "detail": detail}}]}


def schema_format(schema: dict[str, Any], name: str = "waste_classification") -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


def body(**overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "You classify waste."}, user_image()],
        "response_format": schema_format(classification_json_schema()),
        "max_completion_tokens": 400,
    }
    request.update(overrides)
    return request


def our_schema() -> dict[str, Any]:
    return copy.deepcopy(classification_json_schema())


@pytest_asyncio.fixture
async def http(aiohttp_client: Any, sim: TestServer) -> TestClient:
    return await aiohttp_client(sim)


async def post(http: TestClient, request: Any, key: str = "sk-test") -> tuple[int, dict[str, Any], Any]:
    resp = await http.post("/v1/chat/completions", json=request, headers={"Authorization": f"Bearer {key}"})
    return resp.status, await resp.json(), resp.headers


async def refused(http: TestClient, request: Any, status: int = 400) -> dict[str, Any]:
    got, answer, _ = await post(http, request)
    assert got == status, answer
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


async def set_mode(http: TestClient, mode: SimMode) -> None:
    resp = await http.post("/_sim/config", json={"mode": mode.value})
    assert resp.status == 200


# --- the strict schema subset [SO]

def with_property(name: str, **keywords: Any) -> dict[str, Any]:
    schema = our_schema()
    schema["properties"][name] = {**schema["properties"][name], **keywords}
    return schema


async def test_a_length_bound_is_refused_as_the_real_endpoint_does(http: TestClient) -> None:
    error = await refused(http, body(response_format=schema_format(with_property("item_name", minLength=1))))
    assert error["message"] == ("Invalid schema for response_format 'waste_classification': In context=('properties',"
                                " 'item_name'), 'minLength' is not permitted.")
    assert error["type"] == "invalid_request_error" and error["param"] == "response_format"


async def test_max_length_is_refused(http: TestClient) -> None:
    error = await refused(http, body(response_format=schema_format(with_property("item_name", maxLength=9))))
    assert "'maxLength' is not permitted" in error["message"]


async def test_a_property_missing_from_required_is_refused(http: TestClient) -> None:
    schema = our_schema()
    schema["required"].remove("confidence")
    error = await refused(http, body(response_format=schema_format(schema)))
    assert "'required' is required to be supplied and to be an array including every key in properties. " \
           "Missing 'confidence'." in error["message"]


@pytest.mark.parametrize("closed", [None, True])
async def test_an_open_object_is_refused(http: TestClient, closed: bool | None) -> None:
    schema = our_schema()
    if closed is None:
        del schema["additionalProperties"]
    else:
        schema["additionalProperties"] = closed
    error = await refused(http, body(response_format=schema_format(schema)))
    assert "'additionalProperties' is required to be supplied and to be false" in error["message"]


async def test_a_nested_open_object_is_refused(http: TestClient) -> None:
    schema = our_schema()
    schema["properties"]["extra"] = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    schema["required"].append("extra")
    error = await refused(http, body(response_format=schema_format(schema)))
    assert "context=('properties', 'extra'), 'additionalProperties' is required" in error["message"]


@pytest.mark.parametrize("keyword,value", [("default", "x"), ("allOf", [{"type": "string"}]),
                                           ("not", {"type": "number"}), ("patternProperties", {})])
async def test_keywords_outside_the_allow_list_are_refused(http: TestClient, keyword: str, value: Any) -> None:
    error = await refused(http, body(response_format=schema_format(with_property("item_name", **{keyword: value}))))
    assert f"'{keyword}' is not permitted" in error["message"]


async def test_numeric_bounds_and_a_pattern_are_allowed(http: TestClient) -> None:
    schema = with_property("item_name", pattern="^[a-z ]+$")
    schema["properties"]["confidence"].update(minimum=0, maximum=1)
    status, answer, _ = await post(http, body(response_format=schema_format(schema)))
    assert status == 200, answer


async def test_an_unsupported_string_format_is_refused(http: TestClient) -> None:
    error = await refused(http, body(response_format=schema_format(with_property("item_name", format="color"))))
    assert "format 'color' is not supported" in error["message"]


async def test_the_root_must_be_an_object_not_any_of(http: TestClient) -> None:
    error = await refused(http, body(response_format=schema_format({"type": "array", "items": {"type": "string"}})))
    assert "schema must be a JSON Schema of 'type: \"object\"'" in error["message"]
    error = await refused(http, body(response_format=schema_format({"anyOf": [our_schema()]})))
    assert "'type: \"object\"'" in error["message"]


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        node = {"type": "object", "properties": {"n": node}, "required": ["n"], "additionalProperties": False}
    return node


async def test_nesting_deeper_than_ten_levels_is_refused(http: TestClient) -> None:
    status, answer, _ = await post(http, body(response_format=schema_format(nested(10))))
    assert status == 200, answer
    error = await refused(http, body(response_format=schema_format(nested(11))))
    assert "11 levels of nesting, at most 10" in error["message"]


async def test_more_than_5000_properties_are_refused(http: TestClient) -> None:
    props = {f"p{i}": {"type": "boolean"} for i in range(5001)}
    schema = {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}
    error = await refused(http, body(response_format=schema_format(schema)))
    assert "5001 object properties, at most 5000" in error["message"]


async def test_more_than_1000_enum_values_are_refused(http: TestClient) -> None:
    error = await refused(http, body(response_format=schema_format(
        with_property("category", enum=[f"c{i}" for i in range(1001)]))))
    assert "1001 enum values, at most 1000" in error["message"]


async def test_a_large_enum_with_too_many_characters_is_refused(http: TestClient) -> None:
    values = [f"{i:04d}" + "x" * 56 for i in range(251)]  # 251 values of 60 characters: 15,060
    error = await refused(http, body(response_format=schema_format(with_property("category", enum=values))))
    assert "at most 15000 characters" in error["message"]


async def test_names_and_values_over_120000_characters_are_refused(http: TestClient) -> None:
    props = {("k" * 60) + f"{i:04d}": {"type": "boolean"} for i in range(2000)}  # 128,000 characters of names
    schema = {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}
    error = await refused(http, body(response_format=schema_format(schema)))
    assert "at most 120000 are allowed" in error["message"]


@pytest.mark.parametrize("name", ["has space", "x" * 65, ""])
async def test_a_bad_schema_name_is_refused(http: TestClient, name: str) -> None:
    error = await refused(http, body(response_format=schema_format(our_schema(), name=name)))
    assert error["param"] == "response_format.json_schema.name"


async def test_a_schema_without_strict_is_not_checked(http: TestClient) -> None:
    fmt = schema_format(with_property("item_name", minLength=1))
    fmt["json_schema"]["strict"] = False
    status, answer, _ = await post(http, body(response_format=fmt))
    assert status == 200, answer


async def test_compat_mode_accepts_what_strict_mode_refuses(http: TestClient) -> None:
    loose = body(response_format=schema_format(with_property("item_name", minLength=1)), model="my-llava",
                 top_k=40)
    assert (await post(http, loose))[0] == 400
    await set_mode(http, SimMode.COMPAT)
    status, answer, _ = await post(http, loose)
    assert status == 200, answer


# --- messages and content parts [API]

async def test_an_unknown_role_is_refused(http: TestClient) -> None:
    error = await refused(http, body(messages=[{"role": "robot", "content": "hi"}, user_image()]))
    assert error["param"] == "messages[0].role" and error["code"] == "invalid_value"


async def test_a_message_without_content_is_refused(http: TestClient) -> None:
    error = await refused(http, body(messages=[{"role": "system"}, user_image()]))
    assert error["param"] == "messages[0].content" and error["code"] == "missing_required_parameter"


async def test_an_image_in_a_system_message_is_refused(http: TestClient) -> None:
    system = {"role": "system", "content": [{"type": "image_url", "image_url": {"url": data_url()}}]}
    error = await refused(http, body(messages=[system, user_image()]))
    assert error["param"] == "messages[0].content[0]"


async def test_an_unknown_content_part_type_is_refused(http: TestClient) -> None:
    user = {"role": "user", "content": [{"type": "video_url", "video_url": {"url": "x"}}]}
    error = await refused(http, body(messages=[user_image(), user]))
    assert error["param"] == "messages[1].content[0].type"


async def test_a_text_part_without_text_is_refused(http: TestClient) -> None:
    user = {"role": "user", "content": [{"type": "text"}]}
    error = await refused(http, body(messages=[user, user_image()]))
    assert error["param"] == "messages[0].content[0].text"


async def test_a_tool_message_needs_its_call_id(http: TestClient) -> None:
    error = await refused(http, body(messages=[user_image(), {"role": "tool", "content": "42"}]))
    assert error["param"] == "messages[1].tool_call_id"


async def test_empty_messages_are_refused(http: TestClient) -> None:
    error = await refused(http, body(messages=[]))
    assert error["param"] == "messages" and error["code"] == "empty_array"


async def test_json_object_mode_needs_the_word_json(http: TestClient) -> None:
    error = await refused(http, body(response_format={"type": "json_object"}))
    assert "must contain the word 'json'" in error["message"]
    system = {"role": "system", "content": "Answer in JSON."}
    status, answer, _ = await post(http, body(response_format={"type": "json_object"},
                                              messages=[system, user_image()]))
    assert status == 200, answer


# --- image inputs [VIS]

async def test_a_detail_value_outside_low_high_auto_is_refused(http: TestClient) -> None:
    error = await refused(http, body(messages=[user_image(detail="medium")]))
    assert error["param"] == "messages[0].content[1].image_url.detail"


@pytest.mark.parametrize("media_type", ["image/svg+xml", "image/bmp", "text/html"])
async def test_an_unsupported_media_type_is_refused(http: TestClient, media_type: str) -> None:
    error = await refused(http, body(messages=[user_image(data_url(media_type=media_type))]))
    assert error["code"] == "invalid_image_format"


@pytest.mark.parametrize("payload", [b"", b"not an image at all", image_bytes(fmt="BMP"), image_bytes()[:40]])
async def test_bytes_that_are_not_a_supported_image_are_refused(http: TestClient, payload: bytes) -> None:
    error = await refused(http, body(messages=[user_image(data_url(payload))]))
    assert error["code"] == "invalid_image_format"


async def test_an_animated_gif_is_refused(http: TestClient) -> None:
    gif = image_bytes(fmt="GIF", frames=3)
    error = await refused(http, body(messages=[user_image(data_url(gif, "image/gif"))]))
    assert error["code"] == "invalid_image_format"
    still = image_bytes(fmt="GIF")
    assert (await post(http, body(messages=[user_image(data_url(still, "image/gif"))])))[0] == 200


async def test_invalid_base64_is_refused(http: TestClient) -> None:
    error = await refused(http, body(messages=[user_image("data:image/jpeg;base64,@@@")]))
    assert error["code"] == "invalid_image_format"


def test_more_than_50_mb_of_images_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # The rule, with the limit scaled down so the test does not build a 50 MB body.
    monkeypatch.setattr(protocol, "MAX_IMAGE_PAYLOAD_BYTES", 1000)
    with pytest.raises(protocol.RequestError, match="over the limit"):
        protocol.parse_chat_request(body(messages=[user_image(data_url(image_bytes((300, 300))))]))


# --- tokens, parameters, model ids [API] [MODELS]

async def test_max_tokens_over_the_models_limit_is_refused(http: TestClient) -> None:
    error = await refused(http, body(max_completion_tokens=20_000))
    assert error["message"].startswith("max_completion_tokens is too large: 20000. This model supports at most 16384")
    assert error["code"] == "invalid_value"


async def test_a_prompt_over_the_context_window_is_refused(http: TestClient) -> None:
    long_text = {"role": "system", "content": "word " * 110_000}  # ~137,500 tokens
    error = await refused(http, body(messages=[long_text, user_image()]))
    assert error["code"] == "context_length_exceeded"


async def test_an_unknown_parameter_is_refused(http: TestClient) -> None:
    error = await refused(http, body(top_k=40))
    assert error["message"] == "Unrecognized request argument supplied: top_k"


async def test_temperature_out_of_range_is_refused(http: TestClient) -> None:
    error = await refused(http, body(temperature=3))
    assert error["param"] == "temperature" and error["code"] == "decimal_above_max_value"


async def test_an_unknown_model_is_404(http: TestClient) -> None:
    error = await refused(http, body(model="gpt-5-vision-ultra"), status=404)
    assert error["code"] == "model_not_found"


async def test_a_wrong_api_key_is_401_when_the_key_is_set(aiohttp_client: Any) -> None:
    http = await aiohttp_client(create_app(SimConfig(latency_ms=0, jitter_ms=0, api_key="sk-right-key")))
    got, answer, _ = await post(http, body(), key="sk-wrong-key-123")
    assert got == 401 and answer["error"]["code"] == "invalid_api_key"
    assert "sk-wrong-key-123" not in answer["error"]["message"]  # the key is masked, as the real endpoint does
    assert (await post(http, body(), key="sk-right-key"))[0] == 200


# --- answers: usage, refusals, truncation, rate-limit headers, 503

async def test_usage_counts_image_tokens_by_detail_and_model(http: TestClient) -> None:
    def image_tokens(answer: dict[str, Any], text_only: dict[str, Any]) -> int:
        return int(answer["usage"]["prompt_tokens"] - text_only["usage"]["prompt_tokens"])

    big = data_url(image_bytes((2048, 1024)))
    low = (await post(http, body(messages=[user_image(big, "low")])))[1]
    high = (await post(http, body(messages=[user_image(big, "high")])))[1]
    # high: 2048x1024 -> shortest side to 768 -> 1536x768 -> 3 x 2 tiles of 512: 85 + 6 * 170 = 1105
    assert image_tokens(high, low) == 1105 - 85
    mini = (await post(http, body(model="gpt-4o-mini", messages=[user_image(big, "low")])))[1]
    assert image_tokens(mini, low) == 2833 - 85
    assert low["usage"]["total_tokens"] == low["usage"]["prompt_tokens"] + low["usage"]["completion_tokens"]


async def test_refusal_and_truncation(http: TestClient) -> None:
    await http.post("/_sim/config", json={"script": ["refusal", "truncated"]})
    refusal = (await post(http, body()))[1]["choices"][0]
    assert refusal["message"]["content"] is None and refusal["message"]["refusal"]
    cut = (await post(http, body()))[1]["choices"][0]
    assert cut["finish_reason"] == "length"
    small = (await post(http, body(max_completion_tokens=5)))[1]["choices"][0]
    assert small["finish_reason"] == "length" and len(small["message"]["content"]) <= 20


async def test_answers_carry_rate_limit_headers_and_503_is_injected(http: TestClient) -> None:
    status, _, headers = await post(http, body())
    assert status == 200
    for name in ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
                 "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"):
        assert headers[name], name
    await http.post("/_sim/config", json={"script": ["503"]})
    error = await refused(http, body(), status=503)
    assert error["type"] == "server_error"


# --- the service's own request

@pytest_asyncio.fixture
async def openai_client(sim: TestServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=str(sim.make_url("/v1")), api_key="sk-x", max_retries=0) as client:
        yield client


def vision(client: AsyncOpenAI, **overrides: Any) -> VisionClient:
    settings = Settings(_env_file=None, vision_backoff_base_seconds=0.0, **overrides)  # type: ignore[call-arg]
    return VisionClient(settings, client=client)


@pytest.mark.parametrize("mode", list(SimMode))
async def test_the_services_request_passes_in_both_modes(http: TestClient, openai_client: AsyncOpenAI,
                                                         mode: SimMode) -> None:
    await set_mode(http, mode)
    answer = await vision(openai_client).classify(data_url())
    assert answer.attempts == 1
    stats = await (await http.get("/_sim/stats")).json()
    assert stats["rejected"] == 0 and stats["ok"] == 1


async def test_a_refusal_fails_the_job_without_a_second_call(http: TestClient, openai_client: AsyncOpenAI) -> None:
    await http.post("/_sim/config", json={"script": ["refusal"]})
    with pytest.raises(PipelineError) as err:
        await vision(openai_client).classify(data_url())
    assert err.value.code is ErrorCode.MODEL_REFUSED
    assert (await (await http.get("/_sim/stats")).json())["calls"] == 1


async def test_a_truncated_answer_is_retried(http: TestClient, openai_client: AsyncOpenAI) -> None:
    await http.post("/_sim/config", json={"script": ["truncated"]})
    answer = await vision(openai_client).classify(data_url())
    assert answer.attempts == 2


async def test_a_rejected_request_is_not_retried(http: TestClient, openai_client: AsyncOpenAI) -> None:
    with pytest.raises(PipelineError) as err:
        await vision(openai_client, vision_model="no-such-model").classify(data_url())
    assert err.value.code is ErrorCode.MODEL_REQUEST_REJECTED
    with pytest.raises(PipelineError) as err:
        await vision(openai_client).classify(data_url(b"not an image"))
    assert err.value.code is ErrorCode.MODEL_REQUEST_REJECTED
    stats = await (await http.get("/_sim/stats")).json()
    assert stats["calls"] == 2 and stats["rejected"] == 2


def test_the_worker_refuses_to_start_with_a_schema_outside_the_subset(monkeypatch: pytest.MonkeyPatch) -> None:
    check_request_contract()  # ours passes
    import streams.vision

    monkeypatch.setattr(streams.vision, "classification_json_schema", lambda: with_property("item_name", minLength=1))
    with pytest.raises(streams.vision.RequestContractError, match="'minLength' is not permitted"):
        check_request_contract()


async def test_openai_sdk_raises_the_right_error_types(openai_client: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await openai_client.chat.completions.create(**body(model="nope"))
    with pytest.raises(openai.BadRequestError):
        await openai_client.chat.completions.create(**body(max_completion_tokens=999_999))

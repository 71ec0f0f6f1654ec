"""The OpenAI Chat Completions wire format: request validation, usage and response/error bodies. Pure.

The simulator must refuse what the real endpoint refuses, or the project's tests pass requests that fail on the
first real call. Each rule names its source:

- ``[API]``: the API reference for ``POST /v1/chat/completions`` (platform.openai.com/docs/api-reference/chat):
  parameters, their types and ranges, message roles and content parts, ``image_url.detail`` values.
- ``[SO]``: the structured-outputs guide, "Supported schemas" (the strict subset, models/strict_schema.py).
- ``[VIS]``: the images-and-vision guide (platform.openai.com/docs/guides/images-vision): "Image input
  requirements" (PNG, JPEG, WEBP, non-animated GIF; up to 50 MB total payload and 500 images per request) and
  "Calculating costs" (image tokens per ``detail``).
- ``[MODELS]``: the model pages (context window and maximum output tokens per model).
- ``[ERR]``: the error codes guide and the error bodies the endpoint returns (type, param, code, message).

Mode ``compat`` (``SIM_MODE=compat``) behaves like a plain OpenAI-compatible server (as some self-hosted
servers do): the strict schema subset is not enforced and unknown parameters and model ids are accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError

from models import strict_schema

SYSTEM_FINGERPRINT = "simulator"


@dataclass(frozen=True)
class ModelSpec:
    context_window: int
    max_output_tokens: int
    image_base_tokens: int  # [VIS] "Calculating costs": a low-detail image costs the base
    image_tile_tokens: int  # ... and each 512 px tile of a high-detail image this much more


# [MODELS] gpt-4o and gpt-4o-mini: 128,000-token context, 16,384 output tokens. [VIS] the tile costs differ.
MODELS: dict[str, ModelSpec] = {
    "gpt-4o": ModelSpec(128_000, 16_384, 85, 170),
    "gpt-4o-2024-08-06": ModelSpec(128_000, 16_384, 85, 170),
    "gpt-4o-2024-11-20": ModelSpec(128_000, 16_384, 85, 170),
    "gpt-4o-mini": ModelSpec(128_000, 16_384, 2833, 5667),
    "gpt-4o-mini-2024-07-18": ModelSpec(128_000, 16_384, 2833, 5667),
}
MODEL_IDS: tuple[str, ...] = tuple(MODELS)
_COMPAT_MODEL = ModelSpec(128_000, 16_384, 85, 170)  # what a compat-mode server assumes for any model id

# [API] the request body's parameters. Anything else: "Unrecognized request argument supplied: x".
KNOWN_PARAMETERS = frozenset({
    "model", "messages", "response_format", "temperature", "top_p", "n", "stream", "stream_options", "stop",
    "max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
    "top_logprobs", "user", "seed", "tools", "tool_choice", "parallel_tool_calls", "service_tier", "store",
    "metadata", "modalities", "audio", "prediction", "reasoning_effort", "web_search_options", "functions",
    "function_call", "prompt_cache_key", "safety_identifier", "verbosity",
})
ROLES = ("system", "assistant", "user", "function", "tool", "developer")  # [API] messages[].role
PART_TYPES = ("text", "image_url", "input_audio", "refusal", "audio", "file")  # [API] content part types
TEXT_ONLY_ROLES = frozenset({"system", "developer"})  # [API] their content parts are text only
DETAILS = ("auto", "low", "high")  # [API] image_url.detail
RESPONSE_FORMATS = ("text", "json_object", "json_schema")  # [API] response_format.type
# [VIS] "Image input requirements".
IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}
MAX_IMAGES = 500
MAX_IMAGE_PAYLOAD_BYTES = 50 * 1024 * 1024


class RequestError(ValueError):
    """A request the real endpoint refuses: ``status`` (400 unless said), OpenAI's ``param`` and ``code``."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400,
                 error_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status
        self.error_type = error_type


@dataclass(frozen=True)
class ImageRef:
    """One ``image_url`` part: inline bytes (a data URL) or a URL the endpoint downloads."""

    detail: str
    where: str  # its param path, for errors
    data: bytes | None = None
    url: str | None = None


@dataclass(frozen=True)
class ImageInfo:
    digest: str  # sha256 of the bytes: the same image always gets the same answer
    width: int
    height: int
    detail: str


@dataclass
class ChatRequest:
    model: str
    spec: ModelSpec
    images: list[ImageRef]
    text_chars: int
    messages: int
    max_output_tokens: int | None
    choices: int = 1
    schema_name: str | None = None
    image_infos: list[ImageInfo] = field(default_factory=list)  # filled once the images are inspected


def parse_chat_request(body: Any, *, strict: bool = True) -> ChatRequest:
    """Validate a decoded ``/v1/chat/completions`` body; raises :class:`RequestError` as the endpoint would."""
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.")
    if strict:
        for name in body:
            if name not in KNOWN_PARAMETERS:
                raise RequestError(f"Unrecognized request argument supplied: {name}")  # [ERR]
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise RequestError("you must provide a model parameter")  # [ERR]
    spec = MODELS.get(model) or (None if strict else _COMPAT_MODEL)
    if spec is None:  # [ERR] 404 model_not_found
        raise RequestError(f"The model `{model}` does not exist or you do not have access to it.",
                           code="model_not_found", status=404)
    if body.get("stream"):
        raise RequestError("Streaming is not supported by the simulator.", "stream")
    _check_number(body, "temperature", 0, 2)  # [API] temperature: 0 to 2
    _check_number(body, "top_p", 0, 1)  # [API] top_p: 0 to 1
    _check_number(body, "presence_penalty", -2, 2)
    _check_number(body, "frequency_penalty", -2, 2)
    choices = _check_integer(body, "n", 1, 128) or 1
    max_output = _max_output_tokens(body, spec)
    schema_name = _check_response_format(body.get("response_format"), strict=strict)
    messages = body.get("messages")
    if messages is None:
        raise RequestError("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise RequestError("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
                           "empty array instead.", "messages", "empty_array")
    text_chars = 0
    images: list[ImageRef] = []
    for i, message in enumerate(messages):
        chars, refs = _parse_message(message, f"messages[{i}]")
        text_chars += chars
        images.extend(refs)
    if (body.get("response_format") or {}).get("type") == "json_object" and not _mentions_json(messages):
        raise RequestError("'messages' must contain the word 'json' in some form, to use 'response_format' of "
                           "type 'json_object'.", "messages")  # [API] response_format: json_object
    if not images:  # the simulator's own rule: it classifies photos
        raise RequestError("No image found: the simulator classifies photos, send an 'image_url' content part.",
                           "messages")
    if len(images) > MAX_IMAGES:  # [VIS]
        raise RequestError(f"Too many images: at most {MAX_IMAGES} per request.", "messages")
    inline = sum(len(ref.data) for ref in images if ref.data is not None)
    if inline > MAX_IMAGE_PAYLOAD_BYTES:  # [VIS]
        raise RequestError(f"The images in this request add up to {inline} bytes, over the limit of "
                           f"{MAX_IMAGE_PAYLOAD_BYTES}.", "messages")
    return ChatRequest(model=model, spec=spec, images=images, text_chars=text_chars, messages=len(messages),
                       max_output_tokens=max_output, choices=choices, schema_name=schema_name)


def _check_number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"Invalid type for '{name}': expected a decimal, but got {type(value).__name__} "
                           "instead.", name, "invalid_type")
    if value > high:
        raise RequestError(f"Invalid '{name}': decimal above maximum value. Expected a value <= {high:g}, but "
                           f"got {value:g} instead.", name, "decimal_above_max_value")
    if value < low:
        raise RequestError(f"Invalid '{name}': decimal below minimum value. Expected a value >= {low:g}, but "
                           f"got {value:g} instead.", name, "decimal_below_min_value")


def _check_integer(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"Invalid type for '{name}': expected an integer, but got {type(value).__name__} "
                           "instead.", name, "invalid_type")
    if not low <= value <= high:
        raise RequestError(f"Invalid '{name}': integer out of range. Expected a value between {low} and {high}, "
                           f"but got {value} instead.", name, "integer_out_of_range")
    return value


def _max_output_tokens(body: dict[str, Any], spec: ModelSpec) -> int | None:
    """[API] max_tokens (deprecated) or max_completion_tokens; [MODELS] at most the model's output limit."""
    found = None
    for name in ("max_tokens", "max_completion_tokens"):
        value = _check_integer(body, name, 1, 2**31 - 1)
        if value is None:
            continue
        if value > spec.max_output_tokens:
            raise RequestError(f"{name} is too large: {value}. This model supports at most "
                               f"{spec.max_output_tokens} completion tokens, whereas you provided {value}.",
                               name, "invalid_value")
        found = value if found is None else min(found, value)
    return found


def _check_response_format(value: Any, *, strict: bool) -> str | None:
    if value is None:
        return None
    kinds = ", ".join(f"'{k}'" for k in RESPONSE_FORMATS)
    if not isinstance(value, dict) or value.get("type") not in RESPONSE_FORMATS:
        got = value.get("type") if isinstance(value, dict) else value
        raise RequestError(f"Invalid value: '{got}'. Supported values are: {kinds}.", "response_format.type",
                           "invalid_value")
    if value["type"] != "json_schema":
        return None
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise RequestError("Missing required parameter: 'response_format.json_schema'.",
                           "response_format.json_schema", "missing_required_parameter")
    name = spec.get("name")
    if not isinstance(name, str):
        raise RequestError("Missing required parameter: 'response_format.json_schema.name'.",
                           "response_format.json_schema.name", "missing_required_parameter")
    if not strict_schema.SCHEMA_NAME.match(name):
        raise RequestError(f"Invalid 'response_format.json_schema.name': string does not match pattern. Expected "
                           f"a string that matches the pattern '{strict_schema.SCHEMA_NAME.pattern}'.",
                           "response_format.json_schema.name", "invalid_value")
    if strict and spec.get("strict") is True:  # [SO] only a subset of JSON Schema in strict mode
        found = strict_schema.violations(spec.get("schema"))
        if found:
            raise RequestError(found[0].describe(name), "response_format")
    return name


def _parse_message(message: Any, where: str) -> tuple[int, list[ImageRef]]:
    if not isinstance(message, dict):
        raise RequestError(f"Invalid type for '{where}': expected an object, but got {type(message).__name__} "
                           "instead.", where, "invalid_type")
    role = message.get("role")
    if role is None:
        raise RequestError(f"Missing required parameter: '{where}.role'.", f"{where}.role",
                           "missing_required_parameter")
    if role not in ROLES:
        supported = ", ".join(f"'{r}'" for r in ROLES[:-1]) + f", and '{ROLES[-1]}'"
        raise RequestError(f"Invalid value: '{role}'. Supported values are: {supported}.", f"{where}.role",
                           "invalid_value")
    content = message.get("content")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise RequestError(f"Missing required parameter: '{where}.tool_call_id'.", f"{where}.tool_call_id",
                           "missing_required_parameter")
    if content is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("refusal")):
            return 0, []
        raise RequestError(f"Missing required parameter: '{where}.content'.", f"{where}.content",
                           "missing_required_parameter")
    if isinstance(content, str):
        return len(content), []
    if not isinstance(content, list):
        raise RequestError(f"Invalid type for '{where}.content': expected one of a string or array of objects, "
                           f"but got {type(content).__name__} instead.", f"{where}.content", "invalid_type")
    chars = 0
    images: list[ImageRef] = []
    for j, part in enumerate(content):
        part_where = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in PART_TYPES:
            supported = ", ".join(f"'{t}'" for t in PART_TYPES[:-1]) + f", and '{PART_TYPES[-1]}'"
            raise RequestError(f"Invalid value: '{kind}'. Supported values are: {supported}.",
                               f"{part_where}.type", "invalid_value")
        if role in TEXT_ONLY_ROLES and kind != "text":
            raise RequestError(f"Invalid '{where}': content parts of a '{role}' message must be of type 'text', "
                               f"got '{kind}'.", part_where, "invalid_value")
        if kind == "image_url" and role != "user":
            raise RequestError(f"Invalid '{where}'. Image URLs are only allowed for messages with role 'user', "
                               f"but this message with role '{role}' contains an image URL.", where,
                               "invalid_value")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise RequestError(f"Missing required parameter: '{part_where}.text'.", f"{part_where}.text",
                                   "missing_required_parameter")
            chars += len(text)
        elif kind == "image_url":
            images.append(_parse_image_part(part, part_where))
        else:  # audio, files: nothing the simulator can classify
            raise RequestError(f"The simulator does not accept '{kind}' parts.", f"{part_where}.type")
    return chars, images


def _parse_image_part(part: dict[str, Any], where: str) -> ImageRef:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else None
    if not isinstance(url, str) or not url:
        raise RequestError(f"Missing required parameter: '{where}.image_url.url'.", f"{where}.image_url.url",
                           "missing_required_parameter")
    detail = image.get("detail", "auto") if isinstance(image, dict) else "auto"
    if detail not in DETAILS:
        raise RequestError(f"Invalid value: '{detail}'. Supported values are: 'auto', 'low', and 'high'.",
                           f"{where}.image_url.detail", "invalid_value")
    if url.startswith(("http://", "https://")):
        return ImageRef(detail=detail, where=where, url=url)
    if not url.startswith("data:"):
        raise RequestError("Invalid image URL: expected an http(s) URL or a base64 data URL.",
                           f"{where}.image_url.url", "invalid_image_url")
    header, sep, payload = url.partition(",")
    media_type, _, encoding = header[len("data:"):].partition(";")
    if not sep or encoding != "base64":
        raise RequestError("Invalid image data URL: expected 'data:image/<type>;base64,<data>'.",
                           f"{where}.image_url.url", "invalid_image_url")
    if media_type.lower() not in {"image/jpeg", "image/jpg", "image/png", "image/gif", "image/webp"}:
        raise _unsupported_image()
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid_image() from None
    return ImageRef(detail=detail, where=where, data=data)


def _unsupported_image() -> RequestError:
    return RequestError("You uploaded an unsupported image. Please make sure your image has of one the following "
                        "formats: ['png', 'jpeg', 'gif', 'webp'].", None, "invalid_image_format")


def _invalid_image() -> RequestError:
    return RequestError("The image data you provided does not represent a valid image. Please check your input "
                        "and try again with one of the supported image formats: ['image/jpeg', 'image/png', "
                        "'image/gif', 'image/webp'].", None, "invalid_image_format")


def inspect_image(data: bytes, detail: str) -> ImageInfo:
    """[VIS] the image must be PNG, JPEG, WEBP or a non-animated GIF. Reads the header only."""
    if not data:
        raise _invalid_image()
    try:
        with Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS)) as image:
            if getattr(image, "is_animated", False):
                raise _unsupported_image()
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise _invalid_image() from None
    return ImageInfo(digest=hashlib.sha256(data).hexdigest(), width=width, height=height, detail=detail)


def image_tokens(info: ImageInfo, spec: ModelSpec) -> int:
    """[VIS] "Calculating costs": low detail costs the base; high (and auto, taken as high) scales the image to
    fit 2048 x 2048, then its shortest side to 768, and adds the tile cost per 512 px tile."""
    if info.detail == "low":
        return spec.image_base_tokens
    width, height = float(info.width), float(info.height)
    if max(width, height) > 2048:
        scale = 2048 / max(width, height)
        width, height = width * scale, height * scale
    if min(width, height) > 768:
        scale = 768 / min(width, height)
        width, height = width * scale, height * scale
    tiles = math.ceil(width / 512) * math.ceil(height / 512)
    return spec.image_base_tokens + spec.image_tile_tokens * tiles


def prompt_tokens(request: ChatRequest) -> int:
    """About four characters a token, three tokens of framing per message and three to prime the reply (the
    cookbook's counting rule), plus each image's tokens."""
    text = math.ceil(request.text_chars / 4) + 3 * request.messages + 3
    return text + sum(image_tokens(info, request.spec) for info in request.image_infos)


def completion_tokens(content: str) -> int:
    return max(1, math.ceil(len(content) / 4))


def check_context(request: ChatRequest) -> None:
    """[MODELS] prompt plus requested completion must fit the context window."""
    prompt = prompt_tokens(request)
    wanted = request.max_output_tokens or 0
    if prompt + wanted > request.spec.context_window:
        raise RequestError(f"This model's maximum context length is {request.spec.context_window} tokens. "
                           f"However, you requested {prompt + wanted} tokens ({prompt} in the messages, {wanted} in "
                           "the completion). Please reduce the length of the messages or completion.",
                           "messages", "context_length_exceeded")


def _mentions_json(messages: list[Any]) -> bool:
    def texts(message: Any) -> list[str]:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            return [content]
        if isinstance(content, list):
            return [p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return []
    return any("json" in t.lower() for m in messages for t in texts(m))


def error_body(message: str, error_type: str, *, param: str | None = None, code: str | None = None
               ) -> dict[str, Any]:
    """The error envelope the openai client parses into ``APIStatusError.body``."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def chat_completion(request: ChatRequest, content: str | None, created: int, *, refusal: str | None = None,
                    truncate: bool = False) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` object; ``content`` is cut at ``max_output_tokens`` (and on
    ``truncate``) with ``finish_reason: "length"``, as the real endpoint does when it runs out of tokens."""
    finish_reason = "stop"
    if content is not None:
        limit = request.max_output_tokens
        if truncate:
            limit = min(limit or completion_tokens(content), max(1, completion_tokens(content) // 2))
        if limit is not None and completion_tokens(content) > limit:
            content = content[: limit * 4]
            finish_reason = "length"
    completion = completion_tokens(content if content is not None else refusal or "")
    prompt = prompt_tokens(request)
    message = {"role": "assistant", "content": content, "refusal": refusal, "annotations": []}
    return {
        "id": f"chatcmpl-sim{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "service_tier": "default",
        "choices": [{"index": i, "message": message, "logprobs": None, "finish_reason": finish_reason}
                    for i in range(request.choices)],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion * request.choices,
            "total_tokens": prompt + completion * request.choices,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        },
    }


def model_list(created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": created, "owned_by": "simulator"} for m in MODEL_IDS],
    }


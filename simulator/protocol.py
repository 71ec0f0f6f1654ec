"""The OpenAI Chat Completions wire format: request validation and response/error bodies. Pure.

Validation is as strict as the real endpoint where a client bug would otherwise pass unnoticed (no image,
malformed content parts, streaming, unknown ``response_format`` types) and lenient elsewhere: any model id
is accepted and echoed, unknown request fields are ignored.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

from simulator.answers import InvalidImageError, image_digest

SYSTEM_FINGERPRINT = "simulator"
MODEL_IDS: tuple[str, ...] = ("gpt-4o", "gpt-4o-mini")

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
# Roughly what GPT-4o bills for one image tile set; only needs to be plausible for usage accounting.
_TOKENS_PER_IMAGE = 255


class RequestError(ValueError):
    """A request the real endpoint would reject with 400 ``invalid_request_error``."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class ChatRequest:
    model: str
    image_digests: tuple[str, ...]  # sha256 of each image, in message order; the first one is classified
    text_chars: int  # for the prompt token estimate


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate a decoded ``/v1/chat/completions`` body; raises :class:`RequestError` like a 400 would."""
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise RequestError("You must provide a model parameter.", "model")
    if body.get("stream"):
        raise RequestError("Streaming is not supported by the simulator.", "stream")
    _check_response_format(body.get("response_format"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty array.", "messages")

    text_chars = 0
    digests: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise RequestError(f"messages[{i}] must be an object with a valid 'role'.", f"messages[{i}].role")
        content = message.get("content")
        if content is None or isinstance(content, str):
            text_chars += len(content or "")
            continue
        if not isinstance(content, list):
            raise RequestError(f"messages[{i}].content must be a string or an array.", f"messages[{i}].content")
        for j, part in enumerate(content):
            chars, digest = _parse_part(part, f"messages[{i}].content[{j}]")
            text_chars += chars
            if digest is not None:
                digests.append(digest)
    if not digests:
        raise RequestError(
            "No image found: the simulator classifies photos, send an 'image_url' content part.", "messages"
        )
    return ChatRequest(model=model, image_digests=tuple(digests), text_chars=text_chars)


def _check_response_format(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or value.get("type") not in _RESPONSE_FORMATS:
        raise RequestError(
            "response_format.type must be one of 'text', 'json_object', 'json_schema'.", "response_format"
        )
    if value["type"] == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
            raise RequestError("response_format.json_schema must be an object with a 'name'.", "response_format")


def _parse_part(part: Any, where: str) -> tuple[int, str | None]:
    """(text characters, image digest or None) of one content part."""
    if not isinstance(part, dict):
        raise RequestError(f"{where} must be an object.", where)
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise RequestError(f"{where}.text must be a string.", f"{where}.text")
        return len(text), None
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        if not isinstance(url, str) or not url:
            raise RequestError(f"{where}.image_url.url must be a non-empty string.", f"{where}.image_url.url")
        try:
            return 0, image_digest(url)
        except InvalidImageError as exc:
            raise RequestError(str(exc), f"{where}.image_url.url") from exc
    raise RequestError(f"{where}.type {kind!r} is not supported (use 'text' or 'image_url').", f"{where}.type")


def error_body(
    message: str, error_type: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The error envelope the openai client parses into ``APIStatusError.body``."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def chat_completion(request: ChatRequest, content: str, created: int) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` object with one choice."""
    prompt_tokens = math.ceil(request.text_chars / 4) + _TOKENS_PER_IMAGE * len(request.image_digests)
    completion_tokens = max(1, math.ceil(len(content) / 4))
    return {
        "id": f"chatcmpl-sim{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "service_tier": "default",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def model_list(created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": created, "owned_by": "simulator"} for m in MODEL_IDS],
    }

"""The vision model: any OpenAI-compatible Chat Completions endpoint, asked for schema-valid JSON.

Retries are ours, not the SDK's (``max_retries=0``): exponential backoff with full jitter, honouring
``Retry-After`` on 429 and 5xx, within a fixed number of attempts. Concurrency is bounded so a burst of misses
cannot open hundreds of paid calls at once. Output that fails the schema never leaves this module.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import openai
from openai import AsyncOpenAI
from pydantic import ValidationError

from models import strict_schema
from models.classification import WasteCategory, WasteClassification, classification_json_schema
from models.errors import ErrorCode, PipelineError
from models.records import AnsweredBy
from models.settings import Settings
from streams import cost, metrics

log = logging.getLogger(__name__)

# The system fingerprint the project's simulator answers with (simulator/protocol.py): its answers are marked.
SIMULATOR_FINGERPRINT = "simulator"

SYSTEM_PROMPT = (
    "You classify a photo of one piece of household waste for a recycling app. "
    "Choose exactly one category from: " + ", ".join(c.value for c in WasteCategory) + ". "
    "Name the item, say in one or two sentences how to dispose of it under household sorting rules "
    "(rinse, remove labels or caps, flatten, separate parts), whether it is recyclable, and your confidence "
    "from 0 to 1. Answer only with JSON matching the schema."
)


SCHEMA_NAME = "waste_classification"


class RequestContractError(RuntimeError):
    """The request this worker would send is one the real endpoint refuses: the worker must not start."""


def check_request_contract() -> dict[str, object]:
    """The ``response_format`` the worker sends, checked against OpenAI's strict subset (models/strict_schema.py).

    Raises :class:`RequestContractError` naming every violation: a schema the endpoint refuses would fail every
    miss with a 400 while the cache kept answering the hits, so it is caught before the first event instead.
    """
    schema = classification_json_schema()
    found = strict_schema.violations(schema)
    if not strict_schema.SCHEMA_NAME.match(SCHEMA_NAME):
        found.append(strict_schema.Violation((), f"schema name {SCHEMA_NAME!r} is not allowed."))
    if found:
        raise RequestContractError("the vision request's schema is outside OpenAI's strict subset: "
                                   + "; ".join(strict_schema.iter_contexts(found)))
    return {"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": schema}}


@dataclass(frozen=True, slots=True)
class VisionAnswer:
    classification: WasteClassification
    attempts: int
    latency_ms: float
    answered_by: AnsweredBy | None = None
    cost_usd: float = 0.0  # every billed attempt of this call, at the price table (streams/cost.py)


class _Bill:
    """What one classify() call has been billed so far, over its attempts."""

    __slots__ = ("dollars",)

    def __init__(self) -> None:
        self.dollars = 0.0


class VisionClient:
    def __init__(self, settings: Settings, client: AsyncOpenAI | None = None,
                 ledger: cost.CostLedger | None = None) -> None:
        self._settings = settings
        self.ledger = ledger or cost.CostLedger()
        self._client = client or AsyncOpenAI(
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url,
            timeout=settings.vision_timeout_seconds,
            max_retries=0,
        )
        self._slots = asyncio.Semaphore(settings.vision_concurrency)
        self._response_format = check_request_contract()
        cost.publish_prices(settings)

    async def close(self) -> None:
        await self._client.close()

    async def classify(self, image_url: str) -> VisionAnswer:
        """Classify the image at ``image_url`` (an https URL or a data URL). Raises PipelineError."""
        settings = self._settings
        started = time.monotonic()
        last_error: PipelineError | None = None
        bill = _Bill()
        for attempt in range(1, settings.vision_max_attempts + 1):
            try:
                async with self._slots:
                    classification, answered_by = await self._call_once(image_url, bill)
                self.ledger.record_answered_call(bill.dollars)
                return VisionAnswer(classification, attempt, (time.monotonic() - started) * 1000, answered_by,
                                    cost_usd=bill.dollars)
            except _Retryable as exc:
                last_error = exc.error
                if attempt == settings.vision_max_attempts:
                    break
                delay = self._backoff(attempt, exc.retry_after)
                log.warning(
                    "vision call failed (%s), attempt %d/%d, retrying in %.2fs",
                    exc.error.code, attempt, settings.vision_max_attempts, delay,
                )
                await asyncio.sleep(delay)
        assert last_error is not None
        raise last_error

    def request_body(self, image_url: str) -> dict[str, Any]:
        """The Chat Completions body of one call (also what ``python -m tools.model_check`` sends)."""
        return {
            "model": self._settings.vision_model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Classify this waste item."},
                        {"type": "image_url",
                         "image_url": {"url": image_url, "detail": self._settings.vision_image_detail}},
                    ],
                },
            ],
            "response_format": self._response_format,
            "max_completion_tokens": self._settings.vision_max_output_tokens,
            "temperature": 0,
        }

    async def _call_once(self, image_url: str, bill: _Bill | None = None) -> tuple[WasteClassification, AnsweredBy]:
        try:
            completion = await self._client.chat.completions.create(**self.request_body(image_url))
        except openai.APITimeoutError as exc:
            raise _Retryable(ErrorCode.MODEL_TIMEOUT, "the vision model did not answer in time") from exc
        except openai.APIConnectionError as exc:
            raise _Retryable(ErrorCode.MODEL_UNAVAILABLE, f"cannot reach the vision model: {exc}") from exc
        except openai.APIStatusError as exc:
            if exc.status_code == 429 or exc.status_code >= 500:
                raise _Retryable(
                    ErrorCode.MODEL_UNAVAILABLE,
                    f"vision model answered HTTP {exc.status_code}",
                    retry_after=_retry_after_seconds(exc.response.headers.get("retry-after")),
                ) from exc
            raise _refused(exc) from exc
        choice = completion.choices[0] if completion.choices else None
        fingerprint = getattr(completion, "system_fingerprint", None)
        answered_by = AnsweredBy(model=completion.model or self._settings.vision_model,
                                 system_fingerprint=fingerprint, simulated=fingerprint == SIMULATOR_FINGERPRINT)
        dollars = _record_usage(completion, self._settings)
        if bill is not None:
            bill.dollars += dollars
        if choice is not None and choice.message.refusal:
            # The model declined this photo; asking again at temperature 0 gets the same answer, and pays again.
            metrics.model_refusals_total.inc()
            raise PipelineError(ErrorCode.MODEL_REFUSED, "the vision model declined to classify this photo")
        if choice is not None and choice.finish_reason == "length":
            # Cut short at VISION_MAX_OUTPUT_TOKENS: a fluke for an answer this small, so it is retried.
            raise _Retryable(ErrorCode.MODEL_OUTPUT_INVALID, "the model's answer was cut short (finish_reason length)")
        content = choice.message.content if choice is not None else None
        try:
            return WasteClassification.model_validate(json.loads(content or "")), answered_by
        except (json.JSONDecodeError, ValidationError, TypeError) as exc:
            message = "the model's answer is not a valid classification"
            raise _Retryable(ErrorCode.MODEL_OUTPUT_INVALID, message) from exc

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = self._settings.vision_backoff_max_seconds
        if retry_after is not None:
            # The server knows best; a little jitter keeps many workers from retrying in lockstep.
            return min(cap, retry_after + random.uniform(0, 0.1 * max(retry_after, 0.1)))
        return random.uniform(0, min(cap, self._settings.vision_backoff_base_seconds * 2 ** (attempt - 1)))


class _Retryable(Exception):
    def __init__(self, code: ErrorCode, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.error = PipelineError(code, message)
        self.retry_after = retry_after


def _refused(exc: openai.APIStatusError) -> PipelineError:
    """A 4xx other than 429: the same request would be refused again, and each attempt may cost money."""
    body = exc.body if isinstance(exc.body, dict) else {}
    param, code = body.get("param"), body.get("code")
    metrics.model_request_rejected_total.labels(status=str(exc.status_code)).inc()
    if exc.status_code in (401, 403):
        log.error("VISION ENDPOINT REFUSED OUR CREDENTIALS: HTTP %s code=%s; check OPENAI_API_KEY and "
                  "OPENAI_BASE_URL", exc.status_code, code)
        return PipelineError(ErrorCode.MODEL_UNAVAILABLE, f"vision model refused: HTTP {exc.status_code}")
    # Loud: every miss fails the same way until the request (schema, model id, image) is fixed.
    log.error("VISION ENDPOINT REJECTED OUR REQUEST: HTTP %s param=%s code=%s: %s",
              exc.status_code, param, code, str(body.get("message", ""))[:500])
    return PipelineError(ErrorCode.MODEL_REQUEST_REJECTED,
                         f"the vision model rejected the request (HTTP {exc.status_code}, code {code})")


def _record_usage(completion: object, settings: Settings) -> float:
    """Count the answer's billed tokens and dollars; returns the dollars (0 when the endpoint sent no usage)."""
    usage = getattr(completion, "usage", None)
    if usage is None:
        return 0.0
    prompt, completion_tokens = usage.prompt_tokens or 0, usage.completion_tokens or 0
    metrics.model_tokens_total.labels(kind="prompt").inc(prompt)
    metrics.model_tokens_total.labels(kind="completion").inc(completion_tokens)
    return cost.record_billed(settings, prompt, completion_tokens)


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date: rare for APIs; fall back to our own backoff

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

import openai
from openai import AsyncOpenAI
from pydantic import ValidationError

from models.classification import WasteCategory, WasteClassification, classification_json_schema
from models.errors import ErrorCode, PipelineError
from models.records import AnsweredBy
from models.settings import Settings

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


@dataclass(frozen=True, slots=True)
class VisionAnswer:
    classification: WasteClassification
    attempts: int
    latency_ms: float
    answered_by: AnsweredBy | None = None


class VisionClient:
    def __init__(self, settings: Settings, client: AsyncOpenAI | None = None) -> None:
        self._settings = settings
        self._client = client or AsyncOpenAI(
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url,
            timeout=settings.vision_timeout_seconds,
            max_retries=0,
        )
        self._slots = asyncio.Semaphore(settings.vision_concurrency)
        self._schema = classification_json_schema()

    async def close(self) -> None:
        await self._client.close()

    async def classify(self, image_url: str) -> VisionAnswer:
        """Classify the image at ``image_url`` (an https URL or a data URL). Raises PipelineError."""
        settings = self._settings
        started = time.monotonic()
        last_error: PipelineError | None = None
        for attempt in range(1, settings.vision_max_attempts + 1):
            try:
                async with self._slots:
                    classification, answered_by = await self._call_once(image_url)
                return VisionAnswer(classification, attempt, (time.monotonic() - started) * 1000, answered_by)
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

    async def _call_once(self, image_url: str) -> tuple[WasteClassification, AnsweredBy]:
        try:
            completion = await self._client.chat.completions.create(
                model=self._settings.vision_model,
                messages=[
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Classify this waste item."},
                            {"type": "image_url", "image_url": {"url": image_url, "detail": "low"}},
                        ],
                    },
                ],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "waste_classification", "strict": True, "schema": self._schema},
                },
                temperature=0,
            )
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
            # 400/401/403/404: retrying will not help, and each attempt may cost money.
            raise PipelineError(ErrorCode.MODEL_UNAVAILABLE, f"vision model refused: HTTP {exc.status_code}") from exc
        content = completion.choices[0].message.content if completion.choices else None
        fingerprint = getattr(completion, "system_fingerprint", None)
        answered_by = AnsweredBy(model=completion.model or self._settings.vision_model,
                                 system_fingerprint=fingerprint, simulated=fingerprint == SIMULATOR_FINGERPRINT)
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


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date: rare for APIs; fall back to our own backoff

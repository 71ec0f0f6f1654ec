"""Latency and fault-injection configuration, and the decisions made from it. Pure: no I/O, no clock.

The server owns the mutable state (the script queue, the random generator); this module only says what a
configuration may contain, how a runtime update merges into it, and what one request gets given a roll.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_LATENCY_MS = 3000
DEFAULT_JITTER_MS = 300
DEFAULT_RETRY_AFTER_S = 1.0
DEFAULT_HANG_S = 600.0


class Fault(StrEnum):
    """What one chat-completion request gets. The values are the keys used over HTTP and in stats."""

    OK = "ok"
    RATE_LIMIT = "429"
    SERVER_ERROR = "500"
    HANG = "hang"
    MALFORMED = "malformed"
    OVERLOADED = "503"  # "The engine is currently overloaded, please try again later."
    REFUSAL = "refusal"  # the model declines: message.refusal set, content null
    TRUNCATED = "truncated"  # the answer is cut short: finish_reason "length"


# Every fault except OK, in the order the cumulative rate roll walks them.
INJECTED_FAULTS: tuple[Fault, ...] = (Fault.RATE_LIMIT, Fault.SERVER_ERROR, Fault.HANG, Fault.MALFORMED,
                                      Fault.OVERLOADED, Fault.REFUSAL, Fault.TRUNCATED)


class FaultRates(BaseModel):
    """Probability of each fault for a request the script does not decide. The rest of the mass is OK."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    rate_limit: float = Field(default=0.0, ge=0.0, le=1.0, alias="429")
    server_error: float = Field(default=0.0, ge=0.0, le=1.0, alias="500")
    hang: float = Field(default=0.0, ge=0.0, le=1.0)
    malformed: float = Field(default=0.0, ge=0.0, le=1.0)
    overloaded: float = Field(default=0.0, ge=0.0, le=1.0, alias="503")
    refusal: float = Field(default=0.0, ge=0.0, le=1.0)
    truncated: float = Field(default=0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _total_at_most_one(self) -> FaultRates:
        # The roll picks one outcome per request, so the faults must share a single unit of probability.
        if sum(self.as_dict().values()) > 1.0 + 1e-9:
            raise ValueError("fault rates must add up to at most 1.0")
        return self

    def as_dict(self) -> dict[Fault, float]:
        return {
            Fault.RATE_LIMIT: self.rate_limit,
            Fault.SERVER_ERROR: self.server_error,
            Fault.HANG: self.hang,
            Fault.MALFORMED: self.malformed,
            Fault.OVERLOADED: self.overloaded,
            Fault.REFUSAL: self.refusal,
            Fault.TRUNCATED: self.truncated,
        }


class SimMode(StrEnum):
    STRICT = "strict"  # refuses what OpenAI's endpoint refuses (simulator/protocol.py)
    COMPAT = "compat"  # a plain OpenAI-compatible server: no strict schema subset, any model id or parameter


class SimConfig(BaseModel):
    """The tunable behaviour. Immutable: an update builds a new one, so a request sees one consistent config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: SimMode = SimMode.STRICT
    # Empty: any non-empty bearer key is accepted. Set: only this one (401 invalid_api_key otherwise).
    api_key: str = ""

    latency_ms: int = Field(default=DEFAULT_LATENCY_MS, ge=0)
    jitter_ms: int = Field(default=DEFAULT_JITTER_MS, ge=0)
    rates: FaultRates = Field(default_factory=FaultRates)
    retry_after_s: float = Field(default=DEFAULT_RETRY_AFTER_S, ge=0.0)
    hang_s: float = Field(default=DEFAULT_HANG_S, gt=0.0)
    seed: int | None = None  # start-up only: makes the rate rolls and jitter reproducible for a benchmark

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class ConfigUpdate(BaseModel):
    """Body of ``POST /_sim/config``: any subset of the fields. Unknown keys are an error, to catch typos."""

    model_config = ConfigDict(extra="forbid")

    mode: SimMode | None = None
    latency_ms: int | None = Field(default=None, ge=0)
    jitter_ms: int | None = Field(default=None, ge=0)
    # Partial: only the faults named here change, the others keep their current rate.
    rates: dict[Fault, float] | None = None
    retry_after_s: float | None = Field(default=None, ge=0.0)
    hang_s: float | None = Field(default=None, gt=0.0)
    # Replaces the queue (not appended) so a test states exactly what the next calls get.
    script: list[Fault] | None = None


def apply_update(config: SimConfig, update: ConfigUpdate) -> SimConfig:
    """The config after ``update``; raises ``pydantic.ValidationError`` if the result is invalid."""
    merged = config.to_json()
    changes = update.model_dump(exclude_unset=True, exclude={"script", "rates"})
    merged.update(changes)
    if update.rates is not None:
        if Fault.OK in update.rates:
            raise ValueError('"ok" has no rate: it is whatever probability the faults leave')
        merged["rates"] = {**merged["rates"], **{str(k): v for k, v in update.rates.items()}}
    return SimConfig.model_validate(merged)


def pick_fault(rates: FaultRates, roll: float) -> Fault:
    """Map a uniform roll in [0, 1) onto the faults' cumulative rates; OK takes what is left."""
    threshold = 0.0
    for fault, rate in rates.as_dict().items():
        threshold += rate
        if roll < threshold:
            return fault
    return Fault.OK


def latency_seconds(config: SimConfig, roll: float) -> float:
    """Latency for one request: ``latency_ms`` plus uniform jitter in ``±jitter_ms`` from a roll in [0, 1)."""
    jitter = (2.0 * roll - 1.0) * config.jitter_ms
    return max(0.0, config.latency_ms + jitter) / 1000.0


# Environment variable -> config field. Rates are nested, hence the tuple paths.
ENV_VARS: dict[str, tuple[str, ...]] = {
    "SIM_MODE": ("mode",),
    "SIM_API_KEY": ("api_key",),
    "SIM_LATENCY_MS": ("latency_ms",),
    "SIM_LATENCY_JITTER_MS": ("jitter_ms",),
    "SIM_RETRY_AFTER_S": ("retry_after_s",),
    "SIM_HANG_S": ("hang_s",),
    "SIM_SEED": ("seed",),
    "SIM_RATE_429": ("rates", "429"),
    "SIM_RATE_500": ("rates", "500"),
    "SIM_RATE_HANG": ("rates", "hang"),
    "SIM_RATE_MALFORMED": ("rates", "malformed"),
    "SIM_RATE_503": ("rates", "503"),
    "SIM_RATE_REFUSAL": ("rates", "refusal"),
    "SIM_RATE_TRUNCATED": ("rates", "truncated"),
}


def config_from_env(env: Mapping[str, str]) -> SimConfig:
    """The start-up config from environment variables (see ``ENV_VARS``); unset or empty ones keep defaults.

    Raises ``ValueError`` naming the variables when a value is invalid.
    """
    raw: dict[str, Any] = {}
    used: list[str] = []
    for name, path in ENV_VARS.items():
        value = env.get(name, "").strip()
        if not value:
            continue
        used.append(name)
        target = raw
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    try:
        return SimConfig.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"invalid simulator environment ({', '.join(used)}): {exc}") from exc

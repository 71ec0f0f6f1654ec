"""Dollars from real usage: each model answer's token counts times the price table in the settings.

A call's dollars are ``prompt_tokens x MODEL_PRICE_INPUT_PER_1M_TOKENS / 1e6 + completion_tokens x
MODEL_PRICE_OUTPUT_PER_1M_TOKENS / 1e6`` (defaults: gpt-4o's list prices). Every billed answer counts, also one
that is retried (a cut or invalid answer) or refused: the endpoint bills them all.

Savings: a result answered by a cache tier (table, redis, near, reframed, inflight) saved **the cost of the call being
reused** (``CachedClassification.cost_usd``, recorded when that call was made). An entry cached before costs were
recorded counts at the mean cost of the calls this worker has paid for so far (nothing before its first call).
The digest tier (SHA-256 -> pHash) saves a decode, not a model call: a byte-identical re-upload would find the
same pHash in the same tiers without it, so its model dollars are counted under the tier that answered.
"""

from __future__ import annotations

import threading

from models.records import CacheSource
from models.settings import Settings
from streams import metrics

# The tiers a result can come from without a model call: every CacheInfo.source but "model".
SAVING_TIERS = tuple(source.value for source in CacheSource if source is not CacheSource.MODEL)

def call_dollars(settings: Settings, prompt_tokens: int, completion_tokens: int) -> float:
    return (prompt_tokens * settings.model_price_input_per_1m_tokens
            + completion_tokens * settings.model_price_output_per_1m_tokens) / 1_000_000


def publish_prices(settings: Settings) -> None:
    """Export the price table and the budget (what the dashboard and the spend alert compare against)."""
    metrics.model_price_dollars_per_1m_tokens.labels(kind="input").set(settings.model_price_input_per_1m_tokens)
    metrics.model_price_dollars_per_1m_tokens.labels(kind="output").set(settings.model_price_output_per_1m_tokens)
    metrics.model_spend_budget_dollars_per_day.set(settings.model_spend_budget_dollars_per_day)
    for tier in SAVING_TIERS:  # present from the start, so rates and alerts see 0 rather than no series
        metrics.model_saved_dollars_total.labels(source=tier)


def record_billed(settings: Settings, prompt_tokens: int, completion_tokens: int) -> float:
    """One billed answer: add its dollars to the spend; returns them."""
    dollars = call_dollars(settings, prompt_tokens, completion_tokens)
    metrics.model_spent_dollars_total.inc(dollars)
    return dollars


class CostLedger:
    """What this worker paid per answered call: the mean prices a saving whose call's cost was not recorded.

    One per worker (its context owns it, and its vision client records into it); tests make their own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paid_calls = 0
        self._paid_dollars = 0.0

    def record_answered_call(self, dollars: float) -> None:
        """A model call that produced a classification, all its attempts together."""
        metrics.model_call_cost_dollars.observe(dollars)
        with self._lock:
            self._paid_calls += 1
            self._paid_dollars += dollars

    def mean_call_dollars(self) -> float | None:
        with self._lock:
            return self._paid_dollars / self._paid_calls if self._paid_calls else None

    def record_saved(self, source: str, reused_call_dollars: float | None) -> float | None:
        """A result from ``source`` reused a call that cost ``reused_call_dollars`` (None: not recorded)."""
        if source not in SAVING_TIERS:
            return None
        dollars = reused_call_dollars if reused_call_dollars is not None else self.mean_call_dollars()
        if dollars is None:
            return None
        metrics.model_saved_dollars_total.labels(source=source).inc(dollars)
        return dollars

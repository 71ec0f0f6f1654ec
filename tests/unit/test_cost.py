"""Dollars from real usage: the simulator's token counts (OpenAI's rules) times the price table."""

from __future__ import annotations

from typing import Any

import pytest
from openai import AsyncOpenAI
from prometheus_client import REGISTRY

from models.settings import Settings
from streams import cost
from streams.vision import VisionClient
from tests.unit.test_simulator import client, configure, control, data_url  # noqa: F401  (fixtures)


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_a_calls_dollars_are_its_tokens_at_the_price_table() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.model_price_input_per_1m_tokens, settings.model_price_output_per_1m_tokens) == (2.50, 10.00)
    assert cost.call_dollars(settings, 1_000_000, 0) == pytest.approx(2.50)
    assert cost.call_dollars(settings, 250, 100) == pytest.approx((250 * 2.50 + 100 * 10.00) / 1e6)


@pytest.mark.parametrize("prices", [(2.50, 10.00), (5.00, 15.00)])
async def test_the_answer_carries_what_its_usage_cost(client: AsyncOpenAI, prices: tuple[float, float]) -> None:  # noqa: F811
    settings = Settings(_env_file=None, model_price_input_per_1m_tokens=prices[0],  # type: ignore[call-arg]
                        model_price_output_per_1m_tokens=prices[1])
    vision = VisionClient(settings, client=client)
    prompt0, completion0 = (sample("waste_model_tokens_total", {"kind": k}) for k in ("prompt", "completion"))
    spent0 = sample("waste_model_spent_dollars_total")
    answer = await vision.classify(data_url(b"a bottle"))
    prompt = sample("waste_model_tokens_total", {"kind": "prompt"}) - prompt0
    completion = sample("waste_model_tokens_total", {"kind": "completion"}) - completion0
    assert prompt > 85 and completion > 0  # 85 image tokens at detail low, plus the text
    expected = (prompt * prices[0] + completion * prices[1]) / 1e6
    assert answer.cost_usd == pytest.approx(expected)
    assert sample("waste_model_spent_dollars_total") - spent0 == pytest.approx(expected)
    assert sample("waste_model_price_dollars_per_1m_tokens", {"kind": "output"}) == prices[1]


async def test_a_retried_cut_answer_is_billed_too(client: AsyncOpenAI, control: Any) -> None:  # noqa: F811
    settings = Settings(_env_file=None, vision_backoff_base_seconds=0)  # type: ignore[call-arg]
    vision = VisionClient(settings, client=client)
    clean = await vision.classify(data_url(b"same photo"))
    await configure(control, script=["truncated"])  # the next answer is cut short, then a whole one
    spent0 = sample("waste_model_spent_dollars_total")
    answer = await vision.classify(data_url(b"same photo"))
    assert answer.attempts == 2
    assert answer.cost_usd > clean.cost_usd  # the cut answer's tokens were billed as well
    assert sample("waste_model_spent_dollars_total") - spent0 == pytest.approx(answer.cost_usd)


def test_savings_are_the_reused_calls_cost_and_fall_back_to_the_mean() -> None:
    ledger = cost.CostLedger()
    before = sample("waste_model_saved_dollars_total", {"source": "redis"})
    assert ledger.record_saved("redis", None) is None  # no price known yet: nothing is made up
    assert ledger.record_saved("redis", 0.003) == 0.003
    ledger.record_answered_call(0.002)
    ledger.record_answered_call(0.004)
    assert ledger.record_saved("redis", None) == pytest.approx(0.003)
    assert ledger.record_saved("model", 0.5) is None  # a paid call saved nothing
    assert sample("waste_model_saved_dollars_total", {"source": "redis"}) - before == pytest.approx(0.006)

"""Dollars saved per cache tier: every result a tier answers counts the cost of the model call it reuses."""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client import REGISTRY

from agents.dedupe import deduplicate
from tests.agents.conftest import Harness
from tests.agents.test_dedupe_classify import hashed, run_requests

CALL_COST = 0.0042


def saved(source: str) -> float:
    return REGISTRY.get_sample_value("waste_model_saved_dollars_total", {"source": source}) or 0.0


async def test_each_tier_saves_the_cost_of_the_call_it_reuses(harness: Harness,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    original = harness.vision.classify

    async def billed(image_url: str):  # type: ignore[no-untyped-def]
        return dataclasses.replace(await original(image_url), cost_usd=CALL_COST)

    monkeypatch.setattr(harness.vision, "classify", billed)
    before = {s: saved(s) for s in ("inflight", "table", "redis", "model")}
    for i in range(3):  # one pays, two wait on its call
        await deduplicate(harness.ctx, hashed(f"burst-{i}"))
    await run_requests(harness)
    await deduplicate(harness.ctx, hashed("again"))  # this partition's table
    harness.results_table.clear()
    await deduplicate(harness.ctx, hashed("elsewhere"))  # the shared cache
    delta = {s: saved(s) - before[s] for s in before}
    assert delta["inflight"] == pytest.approx(2 * CALL_COST)
    assert delta["table"] == pytest.approx(CALL_COST)
    assert delta["redis"] == pytest.approx(CALL_COST)
    assert delta["model"] == 0
    (entry,) = harness.cache.entries.values()
    assert entry.cost_usd == CALL_COST  # cached with the entry, for whoever reuses it later

"""The model-spend guard on the real Redis (single and Cluster): shared windows, refusals per window, fail-open."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from streams import redis_client
from streams.budget import ModelBudget

NOW = 1_790_000_000.0  # a fixed instant: the windows are computed from it, not from the clock


@pytest.fixture
async def redis(stack_any_redis_url: str) -> Redis:
    client = await redis_client.open_client(stack_any_redis_url)
    yield client
    await client.aclose()


def budget(redis: Redis, per_minute: int, per_day: int) -> ModelBudget:
    return ModelBudget(redis, per_minute=per_minute, per_day=per_day, namespace=f"test-{uuid.uuid4().hex}")


async def test_calls_over_the_minute_limit_are_refused_until_the_next_minute(redis: Redis) -> None:
    guard = budget(redis, per_minute=3, per_day=0)
    verdicts = [await guard.try_spend(NOW) for _ in range(5)]
    assert [v.allowed for v in verdicts] == [True, True, True, False, False]
    assert verdicts[-1].window == "minute"
    assert (await guard.try_spend(NOW + 60)).allowed  # a new minute
    assert int(await redis.ttl(guard.keys(NOW)[0])) > 0  # windows expire on their own


async def test_the_day_limit_holds_across_minutes_and_instances(redis: Redis) -> None:
    first = budget(redis, per_minute=0, per_day=4)
    second = ModelBudget(redis, per_minute=0, per_day=4, namespace=first.keys(NOW)[0].split("{")[1].split("}")[0])
    allowed = [(await (first if i % 2 else second).try_spend(NOW + 60 * i)).allowed for i in range(6)]
    assert allowed == [True, True, True, True, False, False]  # two workers share one budget
    assert (await first.try_spend(NOW + 86_400)).allowed  # the next UTC day


async def test_both_keys_share_one_cluster_slot(redis: Redis) -> None:
    keys = budget(redis, 1, 1).keys(NOW)
    tags = {key.split("{")[1].split("}")[0] for key in keys}
    assert len(tags) == 1


async def test_no_limits_and_an_unreachable_redis_let_the_call_through() -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        assert (await budget(dead, per_minute=1, per_day=1).try_spend(NOW)).allowed
        assert not budget(dead, 0, 0).enabled and (await budget(dead, 0, 0).try_spend(NOW)).allowed
    finally:
        await dead.aclose()

"""Choosing the Redis client from the URL, and the retry budget of a lost connection."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis, RedisCluster

from streams import redis_client


@pytest.mark.parametrize(("url", "flag", "cluster"), [
    ("redis://127.0.0.1:6379/0", False, False),
    ("redis://127.0.0.1:7000/0", True, True),
    ("redis+cluster://127.0.0.1:7000/0", False, True),
    ("rediss+cluster://h:7000", False, True),
])
def test_the_scheme_or_the_flag_chooses_a_cluster(url: str, flag: bool, cluster: bool) -> None:
    assert redis_client.is_cluster(url, flag) is cluster


async def test_connect_builds_the_right_client_without_connecting() -> None:
    single = redis_client.connect("redis://127.0.0.1:1/0")
    many = redis_client.connect("redis+cluster://127.0.0.1:1/0")
    try:
        assert isinstance(single, Redis) and not isinstance(single, RedisCluster)
        assert isinstance(many, RedisCluster)
    finally:
        await single.aclose()
        await many.aclose()


@pytest.mark.parametrize("seconds", [0.5, 5.0, 20.0])
def test_the_retry_waits_about_as_long_as_asked(seconds: float) -> None:
    retry = redis_client.retry_for(seconds)
    waits = [retry._backoff.compute(n) for n in range(1, retry._retries + 1)]  # as redis-py's Retry waits
    assert seconds <= sum(waits) < seconds + 0.5

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


async def test_a_cluster_command_waits_out_a_failover_within_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead master refuses connections until its replica is promoted: the command is tried again, with pauses,
    for the retry budget (the redis-py client alone tries again at once, and the lookup counts as a miss)."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    refusals = {"left": 3}
    calls = []

    async def master_down_then_promoted(self: RedisCluster, *args: object, **kwargs: object) -> object:
        calls.append(args)
        if refusals["left"]:
            refusals["left"] -= 1
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:17302")
        return b"answer"

    monkeypatch.setattr(RedisCluster, "execute_command", master_down_then_promoted)
    patient = redis_client.connect("redis+cluster://127.0.0.1:1/0", retry_seconds=5.0)
    impatient = redis_client.connect("redis+cluster://127.0.0.1:1/0")
    try:
        assert await patient.get("cache:image:hash:x") == b"answer"
        assert len(calls) == 4
        refusals["left"] = 1
        with pytest.raises(RedisConnectionError):  # no budget: the caller decides at once
            await impatient.get("cache:image:hash:x")
    finally:
        await patient.aclose()
        await impatient.aclose()


def test_a_cluster_nobody_can_reach_is_a_connection_error_for_the_callers() -> None:
    """Every caller handles ``RedisError``; redis-py reports an unreachable cluster with an exception that is not
    one (it crashed the worker's agents when the whole cluster was restarted)."""
    from redis import exceptions as e

    try:
        raise e.RedisClusterException("Redis Cluster cannot be connected.") from e.ConnectionError("Error 111")
    except e.RedisClusterException as nobody:
        lost = redis_client.unreachable(nobody)
    assert isinstance(lost, e.ConnectionError) and "cannot be connected" in str(lost)
    assert isinstance(redis_client.unreachable(e.SlotNotCoveredError("slot 42")), e.ConnectionError)
    refused = e.ConnectionError("Error 111")
    assert redis_client.unreachable(refused) is refused
    race = AttributeError("'NoneType' object has no attribute 'writelines'")  # redis-py 8.1, reconnecting
    assert isinstance(redis_client.unreachable(race), e.ConnectionError)
    assert redis_client.unreachable(AttributeError("'Settings' object has no attribute 'x'")) is None
    assert redis_client.unreachable(e.RedisClusterException("CROSSSLOT: keys in different slots")) is None
    assert redis_client.unreachable(e.ResponseError("WRONGTYPE")) is None


async def test_a_cluster_pipeline_waits_out_a_failover_and_sends_every_command_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The reframed index's and the API's pipelines: redis-py empties a pipeline after a failed attempt, so the
    retry must queue the same commands again (an empty retry would 'succeed' and lose the writes)."""
    from redis.asyncio.cluster import ClusterPipeline
    from redis.exceptions import ConnectionError as RedisConnectionError

    refusals = {"left": 2}
    sent: list[int] = []  # commands in the pipeline at each attempt

    async def master_down_then_promoted(self: ClusterPipeline, raise_on_error: bool = True,
                                        allow_redirections: bool = True) -> list[object]:
        sent.append(len(self))
        try:
            if refusals["left"]:
                refusals["left"] -= 1
                raise RedisConnectionError("Error 111 connecting to 127.0.0.1:17302")
            return [True] * len(self)
        finally:
            await self.reset()  # as redis-py does after every attempt

    monkeypatch.setattr(ClusterPipeline, "execute", master_down_then_promoted)
    patient = redis_client.connect("redis+cluster://127.0.0.1:1/0", retry_seconds=5.0)
    impatient = redis_client.connect("redis+cluster://127.0.0.1:1/0")
    try:
        pipe = patient.pipeline(transaction=False)  # (not entered: that would connect to the nodes)
        pipe.set("reframed:features:x", b"f", ex=60)
        pipe.zadd("reframed:word:7", {"x": 1.0})
        pipe.expireat("reframed:word:7", 2_000_000_000)
        assert await pipe.execute() == [True, True, True]
        assert sent == [3, 3, 3]
        refusals["left"] = 1
        with pytest.raises(RedisConnectionError):  # no budget: the caller decides at once
            await impatient.pipeline(transaction=False).set("k", 1).execute()
    finally:
        await patient.aclose()
        await impatient.aclose()


async def test_a_cluster_nobody_answers_is_waited_out_before_any_command_and_the_waits_never_add_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's ``initialize`` (the first step of a pipeline and of a multi-key EXISTS) raises before any
    command is sent when no node answers: it waits too (make chaos redis_cluster_outage lost 2 jobs when it did
    not), and a command around it does not wait its own budget again."""
    from redis import exceptions as e

    outage = {"left": 2}
    attempts: list[int] = []

    async def nobody_answers(self: RedisCluster, *args: object, **kwargs: object) -> RedisCluster:
        attempts.append(1)
        if outage["left"]:
            outage["left"] -= 1
            raise e.RedisClusterException("Redis Cluster cannot be connected.") from e.ConnectionError("Error 111")
        return self

    monkeypatch.setattr(RedisCluster, "initialize", nobody_answers)
    patient = redis_client.connect("redis+cluster://127.0.0.1:1/0", retry_seconds=1.0)
    try:
        await patient.initialize()
        assert len(attempts) == 3
        attempts.clear()
        outage["left"] = 10_000  # down for good
        with pytest.raises(e.ConnectionError):
            await patient.initialize()
        inner = len(attempts)
        attempts.clear()
        with pytest.raises(e.ConnectionError):  # a wait around a wait that already gave up: no second budget
            await redis_client._waiting_out_failovers(patient.initialize, 30.0)
        assert len(attempts) == inner
    finally:
        await patient.aclose()

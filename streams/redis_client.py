"""One way to open Redis for every process: a single server (``redis://``) or a Redis Cluster.

A cluster is chosen by the URL's scheme, ``redis+cluster://host:port`` (``rediss+cluster://`` with TLS), or by
``REDIS_CLUSTER=true`` with a plain ``redis://`` URL naming any one node; the client discovers the others.

What runs on a cluster: every multi-key script names keys that share one hash tag (``{...}``), so each runs on
one slot (streams/budget.py, streams/near_index.py); pipelines are non-transactional, and the cluster client
splits them by slot; reads of several keys in other slots use one GET per key, never MGET (:func:`get_many`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis import exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterPipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

AnyRedis = Redis | RedisCluster


def is_cluster(url: str, cluster: bool = False) -> bool:
    return cluster or url.split("://", 1)[0] in CLUSTER_SCHEMES


def _plain(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{CLUSTER_SCHEMES.get(scheme, scheme)}://{rest}"


def retry_for(seconds: float) -> Retry:
    """Retries of a lost connection (refused, reset, timed out) spread over about ``seconds``: 100 ms doubling to
    500 ms between attempts (redis-py waits ``backoff.compute(n)`` after the n-th failure, n from 1)."""
    backoff = ExponentialBackoff(cap=0.5, base=0.05)
    retries, total = 0, 0.0
    while total < seconds:
        retries += 1
        total += backoff.compute(retries)
    return Retry(backoff, retries)


class PatientCluster(RedisCluster):
    """A ``RedisCluster`` whose commands and pipelines wait out a master's failover for ``wait_seconds``, as the
    single-server client waits out a lost connection: redis-py 8.1 retries a command that met a dead master at
    once (its Retry only counts the attempts), so every attempt meets the same dead node until a replica is
    promoted (cluster-node-timeout and an election, 3-5 s on the stack), and a lookup that fails counts as a miss:
    a paid call (``make chaos`` redis_master_failover). A cluster none of whose nodes answers is reported as a
    ``ConnectionError`` (redis-py raises ``RedisClusterException``, which is no ``RedisError``: it went past every
    caller's handler and crashed the worker's agents in ``make chaos`` redis_cluster_wipe), and so is redis-py's
    reconnect race once the nodes are back (:func:`unreachable`). A pipeline is sent again whole: every pipeline
    of the project is made of idempotent commands (SET, SET NX, GET, DEL, ZADD, ZREM, EXPIREAT, ...)."""

    wait_seconds: float = 0.0

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        return await _waiting_out_failovers(lambda: super(PatientCluster, self).execute_command(*args, **kwargs),
                                            self.wait_seconds)

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        # Also the first step of a pipeline (``async with``) and of a multi-key command split by slot (EXISTS, DEL):
        # when no node answers it raises before any command is sent (make chaos redis_cluster_outage lost 2 jobs so).
        await _waiting_out_failovers(lambda: super(PatientCluster, self).initialize(*args, **kwargs),
                                     self.wait_seconds)
        return self

    async def _execute_pipeline_by_slot(  # type: ignore[override]  # redis-py types its async one as sync
            self, command: str, slots_to_args: Any) -> list[Any]:
        # How redis-py sends a multi-key command across slots (the result markers' EXISTS): one internal pipeline.
        return cast(list[Any], await _waiting_out_failovers(
            lambda: super(PatientCluster, self)._execute_pipeline_by_slot(command, slots_to_args), self.wait_seconds))

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise redis_errors.RedisClusterException("shard_hint is deprecated in cluster mode")
        return PatientPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py's own pipeline()


class PatientPipeline(ClusterPipeline):
    """A cluster pipeline that, when a node cannot be reached, waits (the client's ``wait_seconds``) and sends
    the same commands again: redis-py empties the pipeline after every attempt, so it keeps its own copy."""

    def __init__(self, client: PatientCluster, transaction: bool | None = None) -> None:
        super().__init__(client, transaction)
        self._wait_seconds = client.wait_seconds
        self._queued: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        self._queued.append((args, kwargs))
        return super().execute_command(*args, **kwargs)

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        queued = list(self._queued)
        first = True

        async def attempt() -> list[Any]:
            nonlocal first
            if not first:  # the failed attempt emptied the pipeline: queue the same commands again
                for args, kwargs in queued:
                    super(PatientPipeline, self).execute_command(*args, **kwargs)
            first = False
            return await super(PatientPipeline, self).execute(raise_on_error, allow_redirections)

        return cast(list[Any], await _waiting_out_failovers(attempt, self._wait_seconds))

    async def reset(self) -> None:  # type: ignore[override]  # the name of RESET in the command mixins
        self._queued = []
        await super().reset()


async def _waiting_out_failovers(call: Callable[[], Awaitable[Any]], wait_seconds: float) -> Any:
    """``call()``, tried again with growing pauses while the cluster cannot be reached, for ``wait_seconds``.

    An error that already waited its budget out (a nested wait: the client's ``initialize`` inside a command or a
    pipeline) is raised at once, so the waits never add up."""
    backoff = ExponentialBackoff(cap=0.5, base=0.05)
    waited, attempt = 0.0, 0
    while True:
        try:
            return await call()
        except Exception as exc:
            lost = unreachable(exc)
            if lost is None or getattr(exc, _WAITED_OUT, False):
                raise
            attempt += 1
            pause = backoff.compute(attempt)
            if waited + pause > wait_seconds:
                setattr(lost, _WAITED_OUT, True)
                if lost is exc:
                    raise
                raise lost from exc
            await asyncio.sleep(pause)
            waited += pause


_WAITED_OUT = "_waited_out_by_patient_cluster"


def unreachable(exc: BaseException) -> redis_errors.RedisError | None:
    """``exc`` as the ``RedisError`` a caller handles when the cluster, or the master of a slot, cannot be reached
    (None: any other error, raised as it is)."""
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError | redis_errors.ClusterDownError):
        return exc
    if isinstance(exc, AttributeError) and "writelines" in str(exc):
        # redis-py 8.1: a command sent on a connection another task is reconnecting while the client rediscovers
        # the nodes (see open_client); seen when the whole cluster came back (make chaos redis_cluster_wipe).
        return redis_errors.ConnectionError(f"connection reset while the cluster was rediscovered ({exc})")
    lost_node = isinstance(exc.__cause__, redis_errors.ConnectionError | redis_errors.TimeoutError | OSError)
    if isinstance(exc, redis_errors.SlotNotCoveredError) or (
            isinstance(exc, redis_errors.RedisClusterException) and lost_node):
        return redis_errors.ConnectionError(str(exc))
    return None


def connect(url: str, *, cluster: bool = False, retry_seconds: float = 0.0, **kwargs: Any) -> Any:
    """A ``redis.asyncio.Redis`` for one server, a ``RedisCluster`` for a cluster (same commands).

    ``retry_seconds``: how long a command waits out a lost connection (on a cluster: a failover) before it raises.
    """
    if retry_seconds > 0:
        kwargs["retry"] = retry_for(retry_seconds)
    if is_cluster(url, cluster):
        kwargs.pop("timeout", None)  # a BlockingConnectionPool argument; the cluster client keeps its own pools
        client = cast(PatientCluster, PatientCluster.from_url(_plain(url), **kwargs))
        client.wait_seconds = retry_seconds
        return client
    return Redis.from_url(url, **kwargs)


async def open_client(url: str, *, cluster: bool = False, retry_seconds: float = 0.0, **kwargs: Any) -> Any:
    """:func:`connect`, and a cluster client initialized before first use: redis-py 8.1's RedisCluster fails
    commands issued concurrently while it is still discovering the nodes ('NoneType' object has no attribute
    'writelines'; tests/integration/test_redis_kinds_stack.py), which a worker's first burst does."""
    client = connect(url, cluster=cluster, retry_seconds=retry_seconds, **kwargs)
    if isinstance(client, RedisCluster):
        await client.initialize()
    return client


async def get_many(redis: Any, keys: list[str]) -> list[Any]:
    """GET of each key: one MGET on a single server, one GET per key (concurrently) on a cluster."""
    if not keys:
        return []
    if isinstance(redis, RedisCluster):
        return list(await asyncio.gather(*(redis.get(k) for k in keys)))
    return list(await redis.mget(keys))

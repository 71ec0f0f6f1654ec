"""One way to open Redis for every process: a single server (``redis://``) or a Redis Cluster.

A cluster is chosen by the URL's scheme, ``redis+cluster://host:port`` (``rediss+cluster://`` with TLS), or by
``REDIS_CLUSTER=true`` with a plain ``redis://`` URL naming any one node; the client discovers the others.

What runs on a cluster: every multi-key script names keys that share one hash tag (``{...}``), so each runs on
one slot (streams/budget.py, streams/near_index.py); pipelines are non-transactional, and the cluster client
splits them by slot; reads of several keys in other slots use one GET per key, never MGET (:func:`get_many`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis, RedisCluster
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


def connect(url: str, *, cluster: bool = False, retry_seconds: float = 0.0, **kwargs: Any) -> Any:
    """A ``redis.asyncio.Redis`` for one server, a ``RedisCluster`` for a cluster (same commands).

    ``retry_seconds``: how long a command waits out a lost connection before it raises.
    """
    if retry_seconds > 0:
        kwargs["retry"] = retry_for(retry_seconds)
    if is_cluster(url, cluster):
        kwargs.pop("timeout", None)  # a BlockingConnectionPool argument; the cluster client keeps its own pools
        return RedisCluster.from_url(_plain(url), **kwargs)
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

"""Fixtures for tests on the real local stack (see stack_helpers for the env variables).

Names start with ``stack_`` so they never shadow fixtures of other test modules in this folder.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.stack_helpers import StackEnv, require_service


@pytest.fixture(scope="session")
def stack_env() -> StackEnv:
    return StackEnv.from_env()


@pytest.fixture
def stack_kafka(stack_env: StackEnv) -> str:
    require_service("Kafka", stack_env.kafka_port)
    return stack_env.kafka_bootstrap


@pytest.fixture
def stack_redis_url(stack_env: StackEnv) -> str:
    require_service("Redis", stack_env.redis_port)
    return f"redis://127.0.0.1:{stack_env.redis_port}/0"


@pytest.fixture(scope="session")
def stack_redis_cluster_url() -> str:
    """The stack's Redis Cluster (``scripts/stack.sh redis-cluster-up``; scripts/test.sh starts it)."""
    port = int(os.environ.get("REDIS_CLUSTER_PORT", "7000"))
    require_service("Redis Cluster", port)
    return f"redis+cluster://127.0.0.1:{port}/0"


@pytest.fixture(params=["single", "cluster"])
def stack_redis_kind(request: pytest.FixtureRequest) -> str:
    """Run a Redis-backed test on the single Redis and on the Redis Cluster (use with :func:`stack_any_redis_url`)."""
    return str(request.param)


@pytest.fixture
def stack_any_redis_url(stack_redis_kind: str, stack_env: StackEnv, request: pytest.FixtureRequest) -> str:
    """The single Redis's URL, or the cluster's (``redis+cluster://``), as ``stack_redis_kind`` says."""
    if stack_redis_kind == "cluster":
        return str(request.getfixturevalue("stack_redis_cluster_url"))
    require_service("Redis", stack_env.redis_port)
    return f"redis://127.0.0.1:{stack_env.redis_port}/0"


@pytest.fixture
def stack_cdn_base(stack_env: StackEnv) -> str:
    require_service("CDN edge (Varnish)", stack_env.cdn_port)
    return stack_env.cdn_base


@pytest.fixture
async def stack_s3(stack_env: StackEnv) -> AsyncIterator[Any]:
    """An aiobotocore S3 client signed with the stack's root credentials."""
    require_service("S3 server (versitygw)", stack_env.s3_port)
    from aiobotocore.session import get_session
    from botocore.config import Config

    session = get_session()
    async with session.create_client(
        "s3",
        endpoint_url=stack_env.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=stack_env.s3_access_key,
        aws_secret_access_key=stack_env.s3_secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    ) as client:
        yield client


@pytest.fixture
async def stack_http() -> AsyncIterator[Any]:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
def stack_scratch_redis_url(stack_any_redis_url: str, stack_redis_kind: str) -> str:
    """Scratch space for tests of Redis code: database 15 of the single Redis, or the cluster (it has only db 0)."""
    return stack_any_redis_url if stack_redis_kind == "cluster" else stack_any_redis_url.rsplit("/", 1)[0] + "/15"


@pytest.fixture
async def stack_scratch_redis(stack_scratch_redis_url: str) -> AsyncIterator[Any]:
    from streams import redis_client

    client = await redis_client.open_client(stack_scratch_redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def stack_key_prefix(stack_scratch_redis: Any) -> AsyncIterator[str]:
    """A key prefix of the test's own; every key under it is deleted afterwards."""
    value = f"test-{uuid.uuid4().hex[:8]}:"
    yield value
    # A cluster's SCAN visits every master (redis-py fans it out); the keys live in other slots: one at a time.
    keys = [k async for k in stack_scratch_redis.scan_iter(match=value + "*", count=1000)]
    for key in keys:
        await stack_scratch_redis.delete(key)

"""RedisJobStore on the real Redis, single and Cluster: first result wins, TTLs, publish claims, state broadcast."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from api.store import Job, JobState, RedisJobStore
from models.records import utcnow
from streams import redis_client
from tests.api.fakes import sample_result

pytestmark = pytest.mark.stack


@pytest.fixture
async def redis(stack_any_redis_url: str) -> AsyncIterator[Redis]:
    client = await redis_client.open_client(stack_any_redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def store(redis: Redis) -> RedisJobStore:
    return RedisJobStore(redis, retention_s=600, job_ttl_s=900)


def new_id() -> str:
    return f"test-{uuid.uuid4().hex}"


async def test_first_result_wins_and_expires_with_retention(store: RedisJobStore, redis: Redis) -> None:
    job_id = new_id()
    first = sample_result(job_id)
    duplicate = first.model_copy(update={"timings_ms": {"total": 1.0}})
    await store.save_results([first])
    await store.save_results([duplicate])
    assert await store.get_result(job_id) == first
    assert 590 <= await redis.ttl(f"api:result:{job_id}") <= 600

    stale = sample_result(new_id()).model_copy(update={"completed_at": utcnow() - timedelta(seconds=700)})
    await store.save_results([stale])  # older than retention: a replay must not store it again
    assert await store.get_result(stale.job_id) is None


async def test_publish_claim_is_exclusive_until_released(store: RedisJobStore) -> None:
    job_id = new_id()
    claims = await asyncio.gather(*(store.claim_publish(job_id) for _ in range(10)))
    assert claims.count(True) == 1
    await store.release_publish(job_id)
    assert await store.claim_publish(job_id)


async def test_state_changes_reach_every_watcher(store: RedisJobStore, redis: Redis) -> None:
    job = Job(job_id=new_id(), bucket="b", key="k", created_at=utcnow())
    await store.create_job(job)
    seen: list[tuple[str, JobState]] = []
    ready = asyncio.Event()
    watcher = asyncio.create_task(store.watch_states(lambda j, s: seen.append((j, s)), ready))
    try:
        # Condition waits (a subscription, one broadcast): generous, for a busy CI machine; they end when it holds.
        await asyncio.wait_for(ready.wait(), 60)
        await store.set_state(job.job_id, JobState.QUEUED)

        async def arrived() -> None:
            while (job.job_id, JobState.QUEUED) not in seen:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(arrived(), 60)
        stored = await store.get_job(job.job_id)
        assert stored is not None and stored.state == JobState.QUEUED
        assert 0 < await redis.ttl(f"api:job:{job.job_id}") <= 900  # the update kept the TTL
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)

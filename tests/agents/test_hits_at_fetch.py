"""The fetch step answers a Redis hit for the job's own pHash itself; everything else still takes the hashed hop."""

from __future__ import annotations

import json
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from agents.dedupe import deduplicate
from agents.fetch_hash import process_upload
from models.records import ImageHashed, UploadCompleted
from streams.outcomes import PUBLISHED_PREFIX
from tests import samples
from tests.agents.conftest import Harness
from tests.agents.test_dedupe_classify import run_requests


def upload(job_id: str, key: str = "p.jpg") -> bytes:
    return UploadCompleted(job_id=job_id, bucket="waste-images", key=key).to_bytes()


async def through_dedupe(h: Harness) -> None:
    """Play the dedupe and classify agents over what the fetch step sent on."""
    while h.hashed.messages:
        _, value = h.hashed.messages.pop(0)
        await deduplicate(h.ctx, ImageHashed.model_validate_json(value))
    await run_requests(h)


@pytest.fixture
def classified(harness: Harness) -> Harness:
    """One photo under p.jpg, classified once (a model call), so Redis and the table hold its answer."""
    harness.fetcher.objects["p.jpg"] = samples.photo_bytes(9)
    return harness


async def paid_once(h: Harness) -> str:
    await process_upload(h.ctx, "first", upload("first"), 0, 1)
    assert len(h.hashed.messages) == 1  # a miss goes through the hashed hop, once
    await through_dedupe(h)
    assert h.results_by_job()["first"]["cache"]["source"] == "model" and len(h.vision.calls) == 1
    return str(h.results_by_job()["first"]["cache"]["phash"])


async def test_a_redis_hit_is_answered_without_the_hashed_hop(classified: Harness) -> None:
    h = classified
    phash = await paid_once(h)
    table_before = dict(h.results_table)
    await process_upload(h.ctx, "again", upload("again"), 0, 2)
    assert not h.hashed.messages
    result = h.results_by_job()["again"]
    assert result["status"] == "done" and result["classification"] == h.results_by_job()["first"]["classification"]
    assert result["cache"] == {**result["cache"], "hit": True, "source": "redis", "phash": phash,
                               "reused_job_id": "first", "matched_phash": None, "distance": 0}
    assert {"fetch", "hash", "dedupe", "total"} <= result["timings_ms"].keys()
    assert result["fetch"]["source"] == "cdn" and result["image_key"] == "p.jpg"
    assert h.results_table == table_before  # the pHash's table belongs to its partition's worker: not written here
    assert len(h.vision.calls) == 1


async def test_a_job_already_answered_is_not_answered_again_nor_sent_on(classified: Harness) -> None:
    """A redelivered upload whose job was answered before the crash: the result marker holds it back."""
    h = classified
    await paid_once(h)
    h.redis.values[f"{PUBLISHED_PREFIX}{h.settings.app_id}:again"] = b"1"
    await process_upload(h.ctx, "again", upload("again"), 0, 2)
    assert "again" not in h.results_by_job() and not h.hashed.messages


async def test_a_job_answered_before_the_hop_is_answered_once_when_redelivered(classified: Harness) -> None:
    h = classified
    await paid_once(h)
    for offset in (2, 2):
        await process_upload(h.ctx, "again", upload("again"), 0, offset)
    assert [json.loads(v)["job_id"] for _, v in h.results.messages].count("again") == 1
    assert not h.hashed.messages


async def test_an_answer_of_another_model_version_goes_on_to_dedupe(classified: Harness) -> None:
    h = classified
    await paid_once(h)
    h.reconfigure(prompt_version="p-next")  # a new prompt: every cached answer is stale
    await process_upload(h.ctx, "new", upload("new"), 0, 2)
    assert "new" not in h.results_by_job() and len(h.hashed.messages) == 1
    await through_dedupe(h)
    assert h.results_by_job()["new"]["cache"]["source"] == "model" and len(h.vision.calls) == 2


async def test_an_invalidated_answer_is_paid_again_though_the_table_kept_a_copy(classified: Harness) -> None:
    h = classified
    phash = await paid_once(h)
    del h.cache.entries[phash]  # tools.invalidate deletes the Redis entry and records the invalidation
    h.ctx.revocations.revoke(phash, time.time())  # which the maintenance poll mirrors for the table's copy
    await process_upload(h.ctx, "after", upload("after"), 0, 2)
    assert "after" not in h.results_by_job() and len(h.hashed.messages) == 1
    await through_dedupe(h)
    assert h.results_by_job()["after"]["cache"]["source"] == "model" and len(h.vision.calls) == 2


async def test_a_failing_redis_sends_the_job_on_instead_of_failing_it(classified: Harness, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    h = classified
    await paid_once(h)

    async def down(phash: str) -> None:
        raise RedisConnectionError("redis is down")

    monkeypatch.setattr(h.cache, "get", down)
    await process_upload(h.ctx, "during", upload("during"), 0, 2)
    assert "during" not in h.results_by_job() and len(h.hashed.messages) == 1
    await through_dedupe(h)  # the table answers it on the pHash's partition
    assert h.results_by_job()["during"]["cache"]["source"] == "table"


async def test_turned_off_every_job_takes_the_hashed_hop(classified: Harness) -> None:
    h = classified
    await paid_once(h)
    h.reconfigure(answer_hits_at_fetch=False)
    await process_upload(h.ctx, "again", upload("again"), 0, 2)
    assert "again" not in h.results_by_job() and len(h.hashed.messages) == 1
    await through_dedupe(h)
    assert h.results_by_job()["again"]["cache"]["source"] == "table"

"""The agent loops themselves, driven through Faust's ``test_context()`` (no broker)."""

from __future__ import annotations

import asyncio
import json

import pytest

from agents.dedupe import dedupe
from agents.fetch_hash import fetch_and_hash
from tests import samples
from tests.agents.conftest import Harness
from tests.agents.test_dedupe_classify import hashed


@pytest.fixture(autouse=True)
def memory_app():  # type: ignore[no-untyped-def]
    from streams.app import app

    app.conf.store = "memory://"
    app.flow_control.resume()
    yield app


async def test_fetch_and_hash_loop_turns_an_event_into_a_hashed_image(harness: Harness) -> None:
    harness.fetcher.objects["a.jpg"] = samples.photo_bytes(4)
    async with fetch_and_hash.test_context() as agent:
        await agent.put(key="job-a", value=json.dumps({"job_id": "job-a", "bucket": "waste-images", "key": "a.jpg"}).encode())
        await agent.put(key="job-b", value=json.dumps({"job_id": "job-b", "bucket": "waste-images"}).encode())
        await agent.put(key="job-c", value=b"not json")
        # The agent runs several actors (concurrency), so wait for every outcome, not only for the puts.
        async with asyncio.timeout(10):
            while not (harness.hashed.messages and harness.results.messages and len(harness.dead_letters.messages) == 2):
                await asyncio.sleep(0.01)
    assert [json.loads(v)["job_id"] for _, v in harness.hashed.messages] == ["job-a"]
    # job-b's body names job-b: it is answered; "not json" proves no job, so job-c is dead-lettered only.
    assert harness.results_by_job().keys() == {"job-b"}
    assert harness.results_by_job()["job-b"]["error"]["code"] == "INVALID_EVENT"


async def test_dedupe_loop_asks_for_one_call_per_hash(harness: Harness) -> None:
    async with dedupe.test_context() as agent:
        for job in ("x", "y", "z"):
            event = hashed(job)
            await agent.put(key=event.phash, value=event.to_bytes())
    assert len(harness.requests.messages) == 1


async def test_an_unexpected_error_in_dedupe_fails_that_job_and_the_agent_goes_on(harness: Harness,
                                                                                   monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import agents.dedupe

    real = agents.dedupe.deduplicate

    async def buggy(ctx, job):  # type: ignore[no-untyped-def]
        if job.job_id == "bad":
            raise KeyError("a bug")
        await real(ctx, job)

    monkeypatch.setattr(agents.dedupe, "deduplicate", buggy)
    async with dedupe.test_context() as agent:
        for job in ("bad", "good"):
            event = hashed(job)
            await agent.put(key=event.phash, value=event.to_bytes())
    assert harness.results_by_job()["bad"]["error"]["code"] == "INTERNAL_ERROR"
    assert len(harness.requests.messages) == 1  # "good" went on to its model call


async def test_a_job_whose_model_request_could_not_be_sent_is_not_failed_twice(harness: Harness,
                                                                                monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """It already owns the call in the table: the timer's recovery of lost calls answers it, once."""
    async def broker_down(*_: object, **__: object) -> None:
        raise TimeoutError("no metadata")

    monkeypatch.setattr(harness.requests, "send", broker_down)
    async with dedupe.test_context() as agent:
        event = hashed("owner")
        await agent.put(key=event.phash, value=event.to_bytes())
    assert harness.ctx.calls.entry(event.phash).owner.job_id == "owner"  # type: ignore[union-attr]
    assert not harness.results.messages


def test_a_worker_group_answers_only_the_internal_events_its_own_fetch_made() -> None:
    # The internal topics have fixed names: every group on a broker reads every group's hashed images and
    # vision requests. Answering another group's would publish a second result for that job, or pay twice.
    from datetime import UTC, datetime

    from models.records import FetchInfo, FetchSource, ImageHashed

    def hashed(origin: str | None) -> ImageHashed:
        return ImageHashed(job_id="j", bucket="b", key="k", phash="ab" * 32, image_url="u", origin=origin,
                           fetch=FetchInfo(source=FetchSource.CDN, bytes=1), received_at=datetime.now(UTC))

    assert hashed("waste-analysis").of_group("waste-analysis")
    assert not hashed("waste-canary").of_group("waste-analysis")
    assert hashed(None).of_group("waste-analysis")  # events written before the field

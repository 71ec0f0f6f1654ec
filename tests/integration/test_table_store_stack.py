"""A worker killed and restarted on its data dir still answers a cached photo from its table, without a model call.

The results table's changelog is seeded (tools/table_recovery.py) with a few hundred entries and one for a photo
made for this test, under this test's model version: Redis has no answer for that version, so only the table can
give one, and an answer from the table is one no model call produced (``cache.source`` table, reusing the seeded
entry's job). The worker uses the default store (``TABLE_STORE``); with RocksDB its restart reads the table from
disk, with memory from the changelog: either way it must answer the same.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import uuid
from pathlib import Path

import pytest

from models.records import CacheSource, JobStatus
from models.settings import Settings
from tools.table_recovery import (
    STACK_DIR,
    Uploader,
    changelog_topic,
    delete_app_topics,
    fill_changelog,
    free_port,
    probe_photo,
    probe_record,
    start_worker,
    synthetic_values,
    topic_config,
)

pytestmark = [pytest.mark.stack]

ENTRIES = 300


async def test_a_restarted_worker_answers_a_cached_photo_from_its_table(stack_kafka: str) -> None:
    session = uuid.uuid4().hex[:8]
    settings = Settings(_env_file=None, app_env="development",  # type: ignore[call-arg]
                        app_id=f"waste-tables-{session}", prompt_version=f"tables-{session}",
                        worker_web_port=free_port(), kafka_session_timeout_seconds=6)
    data, phash = probe_photo(session)
    seeded_job = json.loads(probe_record(settings, phash)[2])["entry"]["job_id"]
    await fill_changelog(settings, [*synthetic_values(ENTRIES, settings.model_version), probe_record(settings, phash)])
    datadir = Path(STACK_DIR) / "faust" / settings.app_id
    workers = []
    try:
        async with Uploader(settings, data) as uploads:
            workers.append(start_worker(settings, name="tables-first"))
            before = await uploads.result(await uploads.publish(), timeout=180)
            assert before.status is JobStatus.DONE
            assert before.cache is not None and before.cache.source is CacheSource.TABLE
            assert before.cache.reused_job_id == seeded_job
            # The changelog Faust created itself is compacted and rolled hourly, so the cleaner can compact it.
            inflight = await topic_config(settings, changelog_topic(settings, "inflight-by-phash"))
            assert (inflight["cleanup.policy"], inflight["segment.ms"]) == ("compact", "3600000")

            workers[0].process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(workers[0].process.wait, 10)
            if settings.table_store == "rocksdb":  # the table is on disk, in the worker's data dir
                assert list(datadir.glob("v*/tables-*/*results-by-phash*/*")), sorted(datadir.rglob("*"))[:20]
            workers.append(start_worker(settings, name="tables-restarted", new_group=False))
            after = await uploads.result(await uploads.publish(), timeout=240)
    finally:
        for worker in workers:
            worker.stop()
        await delete_app_topics(settings)
        shutil.rmtree(datadir, ignore_errors=True)

    assert after.status is JobStatus.DONE, after.error
    assert after.cache is not None and after.cache.source is CacheSource.TABLE, after.cache
    assert after.cache.reused_job_id == seeded_job  # the seeded answer: no model call made it
    assert after.classification == before.classification

"""Storage events as the trigger, on the real stack: API, versitygw's bucket notifications through the relay,
Kafka, Redis, a real Faust worker and the simulator (docs/STORAGE_EVENTS.md).

Uploads whose notification must not arrive (a lost one, or one the test sends itself later) go through a second
versitygw on the same data folder started without notifications: the object is there, nobody announced it.
Crafted notifications are posted to the relay, the way versitygw posts its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session
from botocore.config import Config
from pydantic import SecretStr

from api.privacy import client_result
from models.records import AnalysisResult, UploadCompleted
from models.settings import Settings
from streams.topics import ANALYSIS_RESULTS, DEAD_LETTER, UPLOADS_COMPLETED
from tests import samples
from tests.api.live import TopicReader, running_api, topic_reader
from tests.integration.stack_helpers import StackEnv, require_service
from tools.kit import Proc, free_port, port_open, running_pipeline, wait_until, worker_counter
from tools.kit import api as kit_api
from tools.kit.api import analyze, post_upload, ws_url

# The isolated session (scripts/test.sh) runs with the S3 server's notifications on; the main session runs without
# them, so that an upload's own notification does not race the tests that drive upload-complete themselves.
pytestmark = [pytest.mark.stack, pytest.mark.isolated]

TIMEOUT = 60.0
SECRET = "storage-events-secret"
RELAY_PORT = int(os.environ.get("STORAGE_EVENTS_PORT", "7071"))
RECONCILE_S = 2.0


@pytest.fixture(scope="module")
def events_settings() -> Settings:
    session = uuid.uuid4().hex[:8]
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        app_env="development", app_id=f"waste-test-events-{session}", prompt_version=f"test-events-{session}",
        worker_web_port=free_port(), api_token_secret=SecretStr(SECRET), rate_limit_analyze=0,
        rate_limit_upload_complete=0, vision_backoff_base_seconds=0.05,
        storage_reconcile_interval_seconds=RECONCILE_S, storage_reconcile_min_age_seconds=RECONCILE_S,
    )


@pytest.fixture(scope="module")
def events_worker(events_settings: Settings) -> Iterator[Proc]:
    env = StackEnv.from_env()
    for name, port in (("Kafka", env.kafka_port), ("S3 server", env.s3_port), ("storage-event relay", RELAY_PORT)):
        require_service(name, port)
    with running_pipeline(events_settings, "events-worker") as running:
        yield running.worker


@pytest.fixture
async def api(events_settings: Settings, events_worker: Proc) -> AsyncIterator[str]:
    async with running_api(events_settings) as base:
        yield base


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        yield session


@pytest.fixture(scope="module")
def silent_s3() -> Iterator[str]:
    """A second versitygw on the stack's data folder, without notifications: uploads nobody announces."""
    env = StackEnv.from_env()
    binary = env.stack_dir / "bin" / "versitygw"
    if not binary.exists():
        pytest.fail(f"{binary} missing: run scripts/stack.sh install", pytrace=False)
    port = free_port()
    sidecar = env.stack_dir / "s3-meta"
    backend = ["posix", *(["--sidecar", str(sidecar)] if sidecar.is_dir() else []), str(env.stack_dir / "s3-data")]
    log = (env.stack_dir / "logs" / "silent-s3.log").open("ab")
    process = subprocess.Popen(
        [str(binary), "--port", f"127.0.0.1:{port}", "--region", "us-east-1", "--quiet", *backend],
        env={**os.environ, "ROOT_ACCESS_KEY": env.s3_access_key, "ROOT_SECRET_KEY": env.s3_secret_key},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_open(port):
            assert process.poll() is None and time.monotonic() < deadline, "the silent S3 server did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        log.close()


async def put_silently(endpoint: str, key: str, data: bytes, content_type: str = "image/jpeg") -> str:
    """PUT through the notifier-less server; returns the object's ETag (unquoted)."""
    env = StackEnv.from_env()
    async with get_session().create_client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=env.s3_access_key,
        aws_secret_access_key=env.s3_secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    ) as s3:
        response = await s3.put_object(Bucket=env.bucket, Key=key, Body=data, ContentType=content_type)
    return str(response["ETag"]).strip('"')


def versitygw_notification(bucket: str, key: str, size: int, etag: str | None, name: str = "s3:ObjectCreated:Put",
                           marker: str = "") -> dict[str, Any]:
    """The record versitygw v1.7.0 posts (s3event/event.go createEventSchema)."""
    return {"Records": [{
        "eventVersion": "2.2", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "eventName": name,
        "userIdentity": {"PrincipalId": "test"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": marker, "x-amz-id-2": ""},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "webhook-global",
               "bucket": {"name": bucket, "ownerIdentity": {"PrincipalId": "test"}, "arn": f"arn:aws:s3:::/{bucket}"},
               "object": {"key": key, "size": size, "eTag": f'"{etag}"' if etag else None, "versionId": None,
                          "sequencer": "1"}}}]}


async def notify(http: aiohttp.ClientSession, body: dict[str, Any] | bytes) -> None:
    """Post to the relay, as versitygw does."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(f"http://127.0.0.1:{RELAY_PORT}/events", data=data,
                         headers={"Content-Type": "application/json"}) as resp:
        assert resp.status in (200, 400), await resp.text()


async def s3_post(http: aiohttp.ClientSession, job: dict[str, Any], data: bytes) -> None:
    status, text = await post_upload(http, job, data)
    assert status == 204, text


async def upload_complete(http: aiohttp.ClientSession, base: str, job: dict[str, Any]) -> dict[str, Any]:
    status, body = await kit_api.upload_complete(http, base, job)
    assert status == 202, body
    return body


async def state_of(http: aiohttp.ClientSession, base: str, job: dict[str, Any]) -> str:
    async with http.get(f"{base}/api/v1/waste/results/{job['job_id']}", params={"token": job["token"]}) as resp:
        return str((await resp.json())["state"])


async def ws_result(http: aiohttp.ClientSession, base: str, job: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Follow the job over the WebSocket until its result; returns the states seen and the result."""
    async with http.ws_connect(ws_url(base, job)) as ws:
        states, result = await kit_api.ws_result(ws, job["job_id"], TIMEOUT)
    assert result is not None, f"the socket closed before the result (states {states})"
    return states, result


async def published_events(reader: TopicReader, job_id: str) -> list[UploadCompleted]:
    await reader.read_to_end()
    return [UploadCompleted.model_validate_json(v) for v in reader.by_key(job_id)]


async def answered_once(reader: TopicReader, job_id: str, settings: Settings, delivered: dict[str, Any]) -> None:
    """The client got the first result on the topic, and this worker group paid for one model call for the job.

    Every worker group on the shared stack answers every job (each writes its own hashed event into the shared
    internal topics, so a group may also answer a job again from its table or an in-flight call: identical
    answers, no second call). A group's results carry the model version of its own prompt version.
    """
    def own_of(results: list[AnalysisResult]) -> list[AnalysisResult]:
        return [r for r in results if r.cache is not None and r.cache.model_version == settings.model_version]

    async def paid() -> list[AnalysisResult]:  # this group's answer may come after another group's
        await reader.read_to_end()
        results = [AnalysisResult.model_validate_json(v) for v in reader.by_key(job_id)]
        return results if any(r.cache and r.cache.source.value == "model" for r in own_of(results)) else []

    results = await wait_until(paid, timeout=TIMEOUT, interval=0.2, what="this worker group's result")
    assert delivered == client_result(results[0])
    own = own_of(results)
    assert all(r.status.value == "done" for r in own), own
    assert [r.cache.source.value for r in own if r.cache].count("model") == 1, own
    assert len({r.classification.model_dump_json() for r in own if r.classification}) == 1


def unique_photo(seed: int) -> bytes:
    """A photo no other test sends: a shipped one with bytes appended after the image's end (same pixels)."""
    return samples.photo_bytes(seed) + hashlib.sha256(uuid.uuid4().bytes).digest()


async def test_an_upload_without_upload_complete_gets_its_result_over_the_websocket(
    http: aiohttp.ClientSession, api: str, events_settings: Settings
) -> None:
    photo = unique_photo(41)
    job = await analyze(http, api)
    async with topic_reader(events_settings, UPLOADS_COMPLETED) as uploads, \
            topic_reader(events_settings, ANALYSIS_RESULTS) as results:
        watching = asyncio.create_task(ws_result(http, api, job))
        await s3_post(http, job, photo)  # and no upload-complete call
        states, result = await watching
        events = await published_events(uploads, job["job_id"])
        await answered_once(results, job["job_id"], events_settings, result)
    assert set(states) <= {"awaiting_upload", "queued"}
    assert [(e.bucket, e.key, e.size, e.content_type) for e in events] == \
        [(events_settings.s3_bucket_name, f"uploads/{job['job_id']}", len(photo), "image/jpeg")]
    assert await state_of(http, api, job) == result["status"]


async def test_notification_first_then_upload_complete_is_one_job(
    http: aiohttp.ClientSession, api: str, events_settings: Settings
) -> None:
    photo = unique_photo(42)
    job = await analyze(http, api)
    async with topic_reader(events_settings, UPLOADS_COMPLETED) as uploads, \
            topic_reader(events_settings, ANALYSIS_RESULTS) as results:
        await s3_post(http, job, photo)
        await wait_until(lambda: _is(state_of(http, api, job), {"queued", "done"}), timeout=TIMEOUT,
                       what="the notification to queue the job")
        answer = await upload_complete(http, api, job)  # the app's call comes second
        _, result = await ws_result(http, api, job)
        events = await published_events(uploads, job["job_id"])
        await answered_once(results, job["job_id"], events_settings, result)
    assert answer["state"] in ("queued", "done")
    assert len(events) == 1, events


async def test_upload_complete_first_then_notification_is_one_job(
    http: aiohttp.ClientSession, api: str, events_settings: Settings, silent_s3: str
) -> None:
    photo = unique_photo(43)
    skipped_before = await _skipped(events_settings)
    job = await analyze(http, api)
    key = f"uploads/{job['job_id']}"
    async with topic_reader(events_settings, UPLOADS_COMPLETED) as uploads, \
            topic_reader(events_settings, ANALYSIS_RESULTS) as results:
        etag = await put_silently(silent_s3, key, photo)
        assert (await upload_complete(http, api, job))["state"] == "queued"
        # The notification arrives late, once named and once without a key (versitygw's POST uploads).
        await notify(http, versitygw_notification(events_settings.s3_bucket_name, key, len(photo), etag))
        await notify(http, versitygw_notification(events_settings.s3_bucket_name, "", len(photo), etag,
                                                   name="s3:ObjectCreated:Post"))
        _, result = await ws_result(http, api, job)
        await wait_until(lambda: _grew(_skipped(events_settings), skipped_before + 2), timeout=TIMEOUT,
                       what="the worker to read both notifications")
        events = await published_events(uploads, job["job_id"])
        await answered_once(results, job["job_id"], events_settings, result)
    assert len(events) == 1, events


async def test_reconciliation_queues_an_upload_whose_notification_was_lost(
    http: aiohttp.ClientSession, api: str, events_settings: Settings, silent_s3: str
) -> None:
    photo = unique_photo(44)
    job = await analyze(http, api)
    async with topic_reader(events_settings, UPLOADS_COMPLETED) as uploads, \
            topic_reader(events_settings, ANALYSIS_RESULTS) as results:
        watching = asyncio.create_task(ws_result(http, api, job))
        await put_silently(silent_s3, f"uploads/{job['job_id']}", photo)  # no notification, no call
        states, result = await watching
        events = await published_events(uploads, job["job_id"])
        await answered_once(results, job["job_id"], events_settings, result)
    assert "queued" in states
    assert len(events) == 1 and events[0].size == len(photo) and events[0].content_type == "image/jpeg"


async def test_foreign_buckets_and_keys_are_dead_lettered_without_touching_s3(
    http: aiohttp.ClientSession, events_settings: Settings, events_worker: Proc
) -> None:
    marker = uuid.uuid4().hex
    port = events_settings.worker_web_port
    refused_before = await worker_counter(port, "waste_storage_events_total", outcome="refused")
    listed_before = await _listed(events_settings)
    bucket = events_settings.s3_bucket_name
    job_like = uuid.uuid4().hex
    refused = [
        versitygw_notification("someone-elses-bucket", f"uploads/{job_like}", 10, "ab", marker=f"{marker}-1"),
        versitygw_notification("someone-elses-bucket", "", 10, "ab", name="s3:ObjectCreated:Post",
                               marker=f"{marker}-2"),
        versitygw_notification(bucket, f"elsewhere/{job_like}.jpg", 10, "ab", marker=f"{marker}-3"),
        versitygw_notification(bucket, f"uploads/{job_like}/../../secret", 10, "ab", marker=f"{marker}-4"),
        {"not": "a notification", "marker": f"{marker}-5"},
    ]
    async with topic_reader(events_settings, DEAD_LETTER) as letters, \
            topic_reader(events_settings, UPLOADS_COMPLETED) as uploads:
        for body in refused:
            await notify(http, body)

        async def all_dead_lettered() -> list[dict[str, Any]]:
            await letters.read_to_end()
            found = [json.loads(r.value or b"{}") for r in letters.records if marker.encode() in (r.value or b"")]
            return found if len(found) >= len(refused) else []

        found = await wait_until(all_dead_lettered, timeout=TIMEOUT, interval=0.3, what="the dead letters")
        await uploads.read_to_end()
        queued = [r for r in uploads.records if job_like.encode() in (r.value or b"")]
    assert sorted(f"{marker}-{i}" for i in range(1, 6)) == sorted(
        next(m for m in (f"{marker}-{i}" for i in range(1, 6)) if m in letter["original"]) for letter in found)
    for letter in found:
        assert (letter["code"], letter["stage"], letter["job_id"]) == ("INVALID_EVENT", "storage_event", None)
        assert letter["topic"] == "waste.storage.events"
    assert queued == []
    # Refused before any I/O: counted as refused, and no listing of the bucket for the keyless one.
    assert await worker_counter(events_settings.worker_web_port, "waste_storage_events_total", outcome="refused") >= \
        refused_before + len(refused)
    assert await _listed(events_settings) == listed_before


async def _is(state: Any, wanted: set[str]) -> bool:
    return await state in wanted


async def _grew(value: Any, at_least: float) -> bool:
    return await value >= at_least


async def _listed(settings: Settings) -> float:
    return sum([await worker_counter(settings.worker_web_port, "waste_storage_events_total", outcome=o)
                for o in ("unmatched", "no_job", "empty")])


async def _skipped(settings: Settings) -> float:
    return (await worker_counter(settings.worker_web_port, "waste_storage_events_total", outcome="not_waiting")
            + await worker_counter(settings.worker_web_port, "waste_storage_events_total", outcome="duplicate"))



"""Kafka lets in only its own services (issue 10, item 8), on the real local stack.

The broker of ``scripts/stack.sh up`` authenticates every client (SASL/SCRAM-SHA-512) and authorizes every
request (StandardAuthorizer, nothing allowed without an ACL; tools/kafka_acls.py). Each test has a positive
control with the right credentials, so a refusal cannot come from a broker that is merely unreachable.
The worker principal's rights are proven by every pipeline test: the test workers run as ``worker``.
"""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from models.records import utcnow
from models.settings import Settings
from streams import kafka_security, topics
from tools.kit import port_open

pytestmark = pytest.mark.stack
DEADLINE = 30.0  # seconds any single client operation may take


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    s = settings_factory()
    port = s.kafka_bootstrap_servers.split(",")[0].rpartition(":")[2]
    if not port_open(int(port)):
        pytest.skip(f"no Kafka broker at {s.kafka_bootstrap_servers} (start the stack: make stack-up)")
    return s


def within(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.wait_for(coro, DEADLINE)


async def producer_starts(**kwargs: Any) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(request_timeout_ms=10_000, **kwargs)
    try:
        await within(producer.start())
    except BaseException:
        await producer.stop()
        raise
    return producer


def probe_event() -> tuple[bytes, bytes]:
    """An upload event the worker answers with a failed result (no bucket, no key) and never fetches for."""
    job_id = f"acl-probe-{uuid.uuid4()}"
    return job_id.encode(), (b'{"job_id": "%s", "probe": true, "uploaded_at": "%s"}'
                             % (job_id.encode(), utcnow().isoformat().encode()))


def test_the_stack_broker_requires_sasl(settings: Settings) -> None:
    ident = kafka_security.identity(settings, "api")
    assert ident.sasl, (f"the broker at {settings.kafka_bootstrap_servers} was reached without SASL: this stack was "
                        f"started before Kafka authentication; restart it (make stack-down && make stack-up)")


async def test_an_anonymous_producer_is_refused(settings: Settings) -> None:
    key, value = probe_event()
    # Positive control: the api principal publishes the same event.
    api = await producer_starts(**kafka_security.client_kwargs(settings, "api"))
    try:
        await within(api.send_and_wait(topics.UPLOADS_COMPLETED, value, key=key))
    finally:
        await api.stop()
    # A client without SASL (PLAINTEXT, as before) never gets past the handshake: nothing can be sent.
    with pytest.raises(KafkaConnectionError):
        anonymous = await producer_starts(bootstrap_servers=settings.kafka_bootstrap_servers,
                                          security_protocol="PLAINTEXT")
        await anonymous.stop()


async def test_an_anonymous_client_cannot_reach_the_controller(settings: Settings) -> None:
    # KRaft controllers answer admin requests themselves (KIP-919): their listener authenticates too.
    controller_port = os.environ.get("KAFKA_CONTROLLER_PORT", "9093")
    if not port_open(int(controller_port)):
        pytest.skip(f"no controller listener on 127.0.0.1:{controller_port}")
    admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{controller_port}", request_timeout_ms=10_000)
    try:
        with pytest.raises(KafkaConnectionError):
            await within(admin.start())
    finally:
        await admin.close()


async def test_a_wrong_password_is_refused(settings: Settings) -> None:
    right = kafka_security.client_kwargs(settings, "api")
    control = await producer_starts(**right)  # positive control: the right password gets in
    await control.stop()
    for username, password in (("api", "not-the-password-" + uuid.uuid4().hex), ("admin", uuid.uuid4().hex),
                               ("nobody", uuid.uuid4().hex)):
        with pytest.raises(KafkaConnectionError):
            producer = await producer_starts(**{**right, "sasl_plain_username": username,
                                                "sasl_plain_password": password})
            await producer.stop()


async def test_the_api_principal_cannot_forge_a_result(settings: Settings) -> None:
    producer = await producer_starts(**kafka_security.client_kwargs(settings, "api"))
    try:
        key, value = probe_event()
        await within(producer.send_and_wait(topics.UPLOADS_COMPLETED, value, key=key))  # allowed: its own topic
        forged = b'{"job_id": "someone-else", "status": "done", "classification": {"category": "glass"}}'
        for topic in (topics.ANALYSIS_RESULTS, topics.IMAGES_HASHED, topics.VISION_REQUESTS, topics.DEAD_LETTER,
                      topics.DEDUPE_MAINTENANCE):
            with pytest.raises(TopicAuthorizationFailedError):
                await within(producer.send_and_wait(topic, forged, key=b"someone-else"))
    finally:
        await producer.stop()


async def test_the_api_principal_reads_results_and_nothing_internal(settings: Settings) -> None:
    api = kafka_security.client_kwargs(settings, "api")
    # Positive control: it reads the results topic (what every API instance does, without a group).
    results = AIOKafkaConsumer(topics.ANALYSIS_RESULTS, **api, group_id=None, enable_auto_commit=False)
    try:
        await within(results.start())
        await within(results.getmany(timeout_ms=200))
    finally:
        await results.stop()
    async with _admin(settings) as admin:
        existing = await within(admin.list_topics())
    changelogs = sorted(t for t in existing if t.endswith("-changelog"))[:2]  # the worker tables' state
    forbidden = [topics.UPLOADS_COMPLETED, topics.IMAGES_HASHED, topics.VISION_REQUESTS, topics.DEAD_LETTER,
                 topics.DEDUPE_MAINTENANCE, *changelogs]
    for topic in forbidden:
        consumer = AIOKafkaConsumer(topic, **api, group_id=None, enable_auto_commit=False)
        try:
            with pytest.raises(TopicAuthorizationFailedError):
                await within(consumer.start())
                await within(consumer.getmany(timeout_ms=1000))
        finally:
            await consumer.stop()


async def test_the_api_principal_cannot_join_a_worker_group_or_create_topics(settings: Settings) -> None:
    api = kafka_security.client_kwargs(settings, "api")
    consumer = AIOKafkaConsumer(topics.ANALYSIS_RESULTS, **api, group_id=settings.app_id, enable_auto_commit=False)
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await within(consumer.start())
            await within(consumer.getmany(timeout_ms=5000))
    finally:
        await consumer.stop()
    admin = AIOKafkaAdminClient(**api, request_timeout_ms=10_000)
    await within(admin.start())
    try:
        name = f"waste-acl-test-{uuid.uuid4().hex[:8]}"
        response = await within(admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)]))
        codes = {topic: code for topic, code, *_ in response.topic_errors}
        assert codes[name] == TopicAuthorizationFailedError.errno, codes
        assert name not in await within(admin.list_topics())
    finally:
        await admin.close()


async def test_the_worker_principal_cannot_administer_the_cluster(settings: Settings) -> None:
    worker = kafka_security.client_kwargs(settings, "worker")
    admin = AIOKafkaAdminClient(**worker, request_timeout_ms=10_000)
    await within(admin.start())
    try:
        # Pipeline topics exist and are the worker's to read and write, but not to delete.
        response = await within(admin.delete_topics([topics.DEAD_LETTER], timeout_ms=10_000))
        codes = {topic: code for topic, code in response.topic_error_codes}
        assert codes[topics.DEAD_LETTER] == TopicAuthorizationFailedError.errno, codes
    finally:
        await admin.close()
    async with _admin(settings) as admin:
        assert topics.DEAD_LETTER in await within(admin.list_topics())


def test_the_credentials_stay_private(settings: Settings) -> None:
    path = kafka_security.stack_credentials_file(settings)
    assert path.is_file(), f"{path} missing: the stack was started before Kafka authentication"
    for private in (path, path.with_name("server.properties")):
        mode = stat.S_IMODE(private.stat().st_mode)
        assert mode & 0o077 == 0, f"{private} is readable by others: {oct(mode)}"
    passwords = [v for k, v in kafka_security.read_env_file(path).items() if k.endswith("_PASSWORD")]
    assert len(passwords) == 3 and all(len(p) >= 16 for p in passwords)
    logs = path.parents[1] / "logs"
    for log in logs.glob("*.log"):
        text = log.read_text(errors="replace")
        assert not any(p in text for p in passwords), f"a Kafka password appears in {log}"


class _admin:
    """The stack's admin principal, as an async context manager."""

    def __init__(self, settings: Settings) -> None:
        self._client = AIOKafkaAdminClient(**kafka_security.client_kwargs(settings, "admin"))

    async def __aenter__(self) -> AIOKafkaAdminClient:
        await within(self._client.start())
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        await self._client.close()

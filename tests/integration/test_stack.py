"""The local stack itself, on the real services started by ``scripts/stack.sh up``.

Kafka (KRaft, pinned 4.x) with aiokafka and with a Faust table, Redis, the S3 server (versitygw) with
pre-signed uploads, the CDN edge (Varnish) in front of it, the stack script's own behaviour, and the
shape of ``docker-compose.kafka.yml``. Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.stack_helpers import REPO_DIR, StackEnv
from tools.kit import port_open, wait_until
from tools.kit.api import browser_form

STACK_SH = REPO_DIR / "scripts" / "stack.sh"
COMPOSE_FILE = REPO_DIR / "docker-compose.kafka.yml"
KAFKA_TIMEOUT = 60.0


def pinned(name: str) -> str:
    """A version pinned in scripts/stack.sh, e.g. KAFKA_VERSION=4.4.0."""
    match = re.search(rf"^{name}=(\S+)$", STACK_SH.read_text(), re.MULTILINE)
    assert match, f"{name}= not found in {STACK_SH}"
    return match.group(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def admin_kafka(bootstrap: str) -> dict[str, Any]:
    """aiokafka arguments for the stack's admin principal: these tests use topics and groups of their own."""
    from models.settings import Settings
    from streams import kafka_security

    return kafka_security.client_kwargs(Settings(app_env="development", kafka_bootstrap_servers=bootstrap), "admin")


# ---------------------------------------------------------------------------------------------- Kafka


@pytest.mark.stack
async def test_kafka_produce_consume_round_trip(stack_kafka: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic, group = unique("stack-roundtrip"), unique("stack-group")
    sent = [f"message-{i}".encode() for i in range(5)]

    producer = AIOKafkaProducer(**admin_kafka(stack_kafka), acks="all")
    await producer.start()
    try:
        for value in sent:  # the first send auto-creates the topic (auto.create.topics.enable=true)
            await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, **admin_kafka(stack_kafka), group_id=group, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    received: list[bytes] = []
    try:

        async def all_received() -> bool:
            batches = await consumer.getmany(timeout_ms=500)
            received.extend(record.value for records in batches.values() for record in records)
            return len(received) >= len(sent)

        await wait_until(all_received, timeout=KAFKA_TIMEOUT, what="5 records back from Kafka")
        await consumer.commit()  # offset commit on the 4.x group coordinator
    finally:
        await consumer.stop()
    assert received == sent


@pytest.mark.stack
async def test_faust_table_with_changelog_on_the_real_broker(stack_kafka: str) -> None:
    """faust-streaming 0.15.3 + aiokafka 0.14 against the pinned Kafka 4.x: Faust creates its own
    changelog topic (CreateTopics v2+), consumes, counts in a Table and writes the changelog."""
    import faust
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from models.settings import Settings
    from streams import kafka_security

    app_id = unique("stack-faust")
    app = faust.App(
        app_id,
        broker=f"kafka://{stack_kafka}",
        broker_credentials=kafka_security.faust_credentials(
            Settings(app_env="development", kafka_bootstrap_servers=stack_kafka), "admin"),
        store="memory://",
        topic_partitions=1,
        web_enabled=False,
        autodiscover=False,
    )

    class Event(faust.Record, serializer="json"):
        kind: str

    events = app.topic(f"{app_id}-events", value_type=Event)
    counts = app.Table("counts", default=int)

    @app.agent(events)
    async def count_events(stream: Any) -> None:
        async for event in stream:
            counts[event.kind] += 1

    admin = AIOKafkaAdminClient(**admin_kafka(stack_kafka))
    await admin.start()
    try:
        # The source topic must exist before the worker joins its group: the assignor ignores
        # topics missing at assignment time and nothing triggers a rebalance when they appear.
        await admin.create_topics([NewTopic(events.get_topic_name(), num_partitions=1, replication_factor=1)])
        await app.start()
        try:

            async def assigned() -> bool:
                return bool(app.consumer.assignment())

            await wait_until(assigned, timeout=KAFKA_TIMEOUT, what="Faust partition assignment")
            for kind in ["bottle", "can", "bottle", "paper", "bottle"]:
                await events.send(value=Event(kind=kind))

            async def counted() -> bool:
                return counts.get("bottle") == 3 and counts.get("can") == 1 and counts.get("paper") == 1

            await wait_until(counted, timeout=KAFKA_TIMEOUT, what="Faust table counts")
            changelog = counts.changelog_topic.get_topic_name()
            assert changelog == f"{app_id}-counts-changelog"

            async def changelog_listed() -> bool:
                return changelog in await admin.list_topics()

            await wait_until(changelog_listed, timeout=KAFKA_TIMEOUT, what="changelog topic in list_topics")
        finally:
            await app.stop()
    finally:
        await admin.close()

    # The table's updates reached Kafka: the changelog holds the latest count per key.
    reader = AIOKafkaConsumer(**admin_kafka(stack_kafka), enable_auto_commit=False)
    await reader.start()
    try:
        partition = TopicPartition(changelog, 0)
        reader.assign([partition])
        await reader.seek_to_beginning(partition)
        latest: dict[bytes, bytes] = {}

        async def changelog_complete() -> bool:
            for record in (await reader.getmany(partition, timeout_ms=500)).get(partition, []):
                latest[record.key] = record.value
            return len(latest) >= 3

        await wait_until(changelog_complete, timeout=KAFKA_TIMEOUT, what="3 keys in the changelog")
    finally:
        await reader.stop()
    assert latest[b'"bottle"'] == b"3"


# ---------------------------------------------------------------------------------------------- Redis


@pytest.mark.stack
async def test_redis_setex_and_ttl(stack_redis_url: str) -> None:
    import redis.asyncio as redis

    client = redis.from_url(stack_redis_url)
    key = unique("stack-ttl")
    try:
        # The SETEX command itself (redis-py 8 deprecates its setex() helper in favour of SET EX).
        await client.execute_command("SETEX", key, 60, b"value")
        assert await client.get(key) == b"value"
        assert 0 < await client.ttl(key) <= 60

        await client.set(key, b"short", ex=1)

        async def expired() -> bool:
            return await client.exists(key) == 0

        await wait_until(expired, timeout=5, what="key expiry")
    finally:
        await client.delete(key)
        await client.aclose()


# ---------------------------------------------------------------------------------- S3 and CDN edge


async def presigned_put(s3: Any, http: Any, bucket: str, key: str, body: bytes) -> None:
    url = await s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": key, "ContentType": "image/jpeg"}, ExpiresIn=300
    )
    async with http.put(url, data=body, headers={"Content-Type": "image/jpeg"}) as resp:
        assert resp.status == 200, await resp.text()


@pytest.mark.stack
async def test_presigned_put_is_served_by_the_edge_miss_then_hit(
    stack_s3: Any, stack_http: Any, stack_cdn_base: str, stack_env: StackEnv
) -> None:
    key, body = f"stack-test/{uuid.uuid4().hex}.jpg", os.urandom(2048)
    await presigned_put(stack_s3, stack_http, stack_env.bucket, key, body)

    async with stack_http.get(f"{stack_cdn_base}/{key}") as first:
        assert first.status == 200
        assert await first.read() == body
        assert first.headers["X-Cache"] == "MISS"
    async with stack_http.get(f"{stack_cdn_base}/{key}") as second:
        assert second.status == 200
        assert await second.read() == body
        assert second.headers["X-Cache"] == "HIT"
        assert int(second.headers["Age"]) >= 0
        assert second.headers["ETag"].strip('"')
    # Query strings (e.g. a pre-signed GET's signature) are not part of the cache key.
    async with stack_http.get(f"{stack_cdn_base}/{key}?X-Amz-Signature=abc") as third:
        assert third.headers["X-Cache"] == "HIT"

    # PURGE from localhost evicts the object; the next read is a MISS again.
    async with stack_http.request("PURGE", f"{stack_cdn_base}/{key}") as purge:
        assert purge.status == 200
    async with stack_http.get(f"{stack_cdn_base}/{key}") as after_purge:
        assert after_purge.headers["X-Cache"] == "MISS"


@pytest.mark.stack
async def test_missing_key_through_the_edge_is_never_cached(stack_http: Any, stack_cdn_base: str) -> None:
    url = f"{stack_cdn_base}/stack-test/missing-{uuid.uuid4().hex}.jpg"
    for _ in range(2):
        async with stack_http.get(url) as resp:
            assert resp.status in (403, 404)
            assert resp.headers["X-Cache"] == "MISS"


@pytest.mark.stack
async def test_edge_drops_credentials_on_reads_and_refuses_writes(
    stack_s3: Any, stack_http: Any, stack_cdn_base: str, stack_env: StackEnv
) -> None:
    key = f"stack-test/{uuid.uuid4().hex}.jpg"
    await stack_s3.put_object(Bucket=stack_env.bucket, Key=key, Body=b"public", ContentType="image/jpeg")
    # A bogus Authorization header would make S3 answer 403; the edge removes it (and Cookie) on reads,
    # so the anonymous-read policy applies and the object is served.
    bogus = {"Authorization": "AWS4-HMAC-SHA256 Credential=nobody/20260101/us-east-1/s3/aws4_request, "
             "SignedHeaders=host, Signature=00", "Cookie": "session=abc"}
    async with stack_http.get(f"{stack_cdn_base}/{key}", headers=bogus) as resp:
        assert resp.status == 200 and await resp.read() == b"public"
        assert "Set-Cookie" not in resp.headers
    # The edge only reads: a write through it never reaches S3.
    async with stack_http.put(f"{stack_cdn_base}/stack-test/{uuid.uuid4().hex}.jpg", data=b"x") as resp:
        assert resp.status == 405


@pytest.mark.stack
async def test_presigned_post_enforces_content_length_range(
    stack_s3: Any, stack_http: Any, stack_env: StackEnv
) -> None:
    limit = 1024
    key = f"stack-test/{uuid.uuid4().hex}.jpg"
    post = await stack_s3.generate_presigned_post(
        Bucket=stack_env.bucket,
        Key=key,
        Fields={"Content-Type": "image/jpeg"},
        Conditions=[["content-length-range", 1, limit], {"Content-Type": "image/jpeg"}],
        ExpiresIn=300,
    )

    async def submit(body: bytes) -> tuple[int, str]:
        data, content_type = browser_form(post["fields"], body)
        async with stack_http.post(post["url"], data=data, headers={"Content-Type": content_type}) as resp:
            return resp.status, await resp.text()

    status, text = await submit(os.urandom(limit + 1))
    assert status == 400 and "EntityTooLarge" in text, f"oversize upload not refused: {status} {text}"
    async with stack_http.head(f"{stack_env.s3_endpoint}/{stack_env.bucket}/{key}") as head:
        assert head.status == 404, "the refused upload left an object behind"

    status, text = await submit(os.urandom(limit))  # exactly at the limit
    assert status == 204, f"{status} {text}"
    head = await stack_s3.head_object(Bucket=stack_env.bucket, Key=key)
    assert head["ContentLength"] == limit


@pytest.mark.stack
async def test_s3_enforces_sigv4_and_allows_only_anonymous_reads(
    stack_s3: Any, stack_http: Any, stack_env: StackEnv
) -> None:
    key = f"stack-test/{uuid.uuid4().hex}.jpg"
    object_url = f"{stack_env.s3_endpoint}/{stack_env.bucket}/{key}"
    async with stack_http.put(object_url, data=b"unsigned") as resp:
        assert resp.status == 403, await resp.text()
    # A pre-signed URL whose signature was tampered with is refused too.
    url = await stack_s3.generate_presigned_url(
        "put_object", Params={"Bucket": stack_env.bucket, "Key": key}, ExpiresIn=300
    )
    tampered = re.sub(r"X-Amz-Signature=([0-9a-f])", lambda m: "X-Amz-Signature=" + ("0" if m[1] != "0" else "1"), url)
    async with stack_http.put(tampered, data=b"tampered") as resp:
        assert resp.status == 403
    # The bucket policy lets anyone read objects (the CDN's origin access), nothing more.
    await stack_s3.put_object(Bucket=stack_env.bucket, Key=key, Body=b"public")
    async with stack_http.get(object_url) as resp:
        assert resp.status == 200 and await resp.read() == b"public"
    async with stack_http.delete(object_url) as resp:
        assert resp.status == 403
    async with stack_http.get(f"{stack_env.s3_endpoint}/{stack_env.bucket}?list-type=2") as resp:
        assert resp.status == 403


@pytest.mark.stack
async def test_bucket_has_cors_rules_for_browser_uploads(stack_s3: Any, stack_http: Any, stack_env: StackEnv) -> None:
    cors = await stack_s3.get_bucket_cors(Bucket=stack_env.bucket)
    rule = cors["CORSRules"][0]
    assert set(rule["AllowedMethods"]) == {"GET", "PUT", "POST", "HEAD"}
    assert rule["AllowedOrigins"] == ["*"] and "ETag" in rule["ExposeHeaders"]
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "PUT"}
    async with stack_http.options(f"{stack_env.s3_endpoint}/{stack_env.bucket}/any.jpg", headers=preflight) as resp:
        assert resp.status in (200, 204)
        assert resp.headers.get("Access-Control-Allow-Origin") in ("*", "http://app.example")
        assert "PUT" in resp.headers.get("Access-Control-Allow-Methods", "")


# ------------------------------------------------------------------------------------ the stack script


def run_stack(command: str, timeout: float = 180) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(STACK_SH), command], cwd=REPO_DIR, capture_output=True, text=True, timeout=timeout
    )
    return proc, time.monotonic() - started


def pid_files(env: StackEnv) -> dict[str, int]:
    return {p.stem: int(p.read_text().strip()) for p in sorted(env.run_dir.glob("*.pid"))}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes (reaped later by its parent).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain text (e.g. the stack dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and alive(int(proc.name)):
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def stack_ports(env: StackEnv) -> dict[str, int]:
    return {"kafka": env.kafka_port, "redis": env.redis_port, "s3": env.s3_port, "edge": env.cdn_port}


@pytest.mark.stack
def test_stack_up_again_keeps_the_same_processes(stack_kafka: str, stack_env: StackEnv) -> None:
    before = pid_files(stack_env)
    assert {"kafka", "redis", "s3", "edge"} <= before.keys()
    proc, took = run_stack("up")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert pid_files(stack_env) == before
    print(f"`up` on a running stack took {took:.1f}s")  # how long is the bench's business, not a test's
    assert "kafka: already running" in proc.stdout and "all services ready" in proc.stdout

    status, _ = run_stack("status")
    assert status.returncode == 0
    for name in ("kafka", "redis", "s3", "edge"):
        assert re.search(rf"^{name}\s+running\s+pid={before[name]}\b", status.stdout, re.MULTILINE), status.stdout


@pytest.mark.stack
@pytest.mark.stack_lifecycle
def test_down_leaves_no_process_then_up_restores_the_stack(stack_kafka: str, stack_env: StackEnv) -> None:
    """Stops the whole stack: deselect it (-m 'not stack_lifecycle') in sessions that keep workers running."""
    before = pid_files(stack_env)
    proc, took_down = run_stack("down")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        assert not list(stack_env.run_dir.glob("*.pid")), "pid files left after down"
        assert [name for name, pid in before.items() if alive(pid)] == []
        assert [name for name, port in stack_ports(stack_env).items() if port_open(port)] == []
        assert processes_mentioning(str(stack_env.stack_dir)) == []
        again, _ = run_stack("down")  # nothing running: harmless
        assert again.returncode == 0 and "not running" in again.stdout
    finally:
        up, took_up = run_stack("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert all(port_open(port) for port in stack_ports(stack_env).values())
    print(f"down {took_down:.1f}s, up {took_up:.1f}s")


# ------------------------------------------------------------------------------ docker-compose.kafka.yml


def compose() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_compose_file_matches_the_pinned_stack() -> None:
    services = compose()["services"]
    assert {"kafka", "kafka-init", "redis", "s3", "s3-init", "edge", "simulator", "worker", "api"} <= services.keys()
    assert services["kafka-init"]["command"][-3:] == ["-m", "tools.kafka_admin", "create-topics"]
    assert services["worker"]["depends_on"]["kafka-init"] == {"condition": "service_completed_successfully"}

    assert services["kafka"]["image"].endswith(f"apache/kafka:{pinned('KAFKA_VERSION')}")
    assert services["s3"]["image"].endswith(f"versity/versitygw:{pinned('VERSITYGW_VERSION')}")
    published = {name: [str(p) for p in svc.get("ports", [])] for name, svc in services.items()}
    assert "127.0.0.1:9092:9092" in published["kafka"]  # SASL_PLAINTEXT: the host's loopback only
    kafka_env = services["kafka"]["environment"]
    assert "PLAINTEXT://" not in kafka_env["KAFKA_LISTENERS"].replace("SASL_PLAINTEXT://", "")
    assert kafka_env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false" and kafka_env["KAFKA_SUPER_USERS"] == "User:admin"
    assert services["kafka-acls"]["command"][-3:] == ["-m", "tools.kafka_acls", "apply"]
    assert "6379:6379" in published["redis"]
    assert "7070:7070" in published["s3"]
    assert "6081:80" in published["edge"]

    for name in ("worker", "api"):
        env = services[name]["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["S3_ENDPOINT_URL"] == "http://s3:7070"
        assert env["OPENAI_BASE_URL"] == "http://simulator:8090/v1"
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT" and env["KAFKA_SASL_USERNAME"] == name
    assert services["worker"]["command"][:3] == ["faust", "-A", "streams.app"]
    # The edge's VCL is stack/edge.vcl rendered with infra/cdn-policy.json (tools.edge_vcl) by the edge-config service.
    assert "edge-config:/edge:ro" in services["edge"]["volumes"]
    assert services["edge-config"]["command"][:3] == ["python", "-m", "tools.edge_vcl"]
    assert services["edge"]["depends_on"]["edge-config"] == {"condition": "service_completed_successfully"}
    assert (REPO_DIR / "Dockerfile").is_file()


def test_compose_file_is_valid_for_docker_compose() -> None:
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("`docker compose` plugin not installed here; the YAML structure is checked by the test above")
    proc = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "-q"], cwd=REPO_DIR, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr



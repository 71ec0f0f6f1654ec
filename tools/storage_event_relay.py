"""The local stack's storage-event relay: versitygw's webhook notifications -> Kafka ``waste.storage.events``.

versitygw v1.7.0 can write notifications to Kafka itself (``--event-kafka-url``), but its Kafka writer has no
SASL or TLS (s3event/kafka.go: a bare kafka-go writer), so it cannot reach a broker that authenticates clients,
and it writes every record under one fixed key. scripts/stack.sh therefore points its webhook notifier
(``--event-webhook-url``) at this relay, which produces each notification with the stack's Kafka credentials,
``acks=all``, keyed by the object key. docs/STORAGE_EVENTS.md has the details and the notifier's guarantees: it
posts once, fire-and-forget, so what this relay cannot take is lost and the worker's reconciliation pass closes
the gap. Production does not use this (S3 -> SQS -> Kafka, infra/terraform/events.tf).

    python -m tools.storage_event_relay --port 7071
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer

from models.settings import Settings, load_settings
from streams.topics import STORAGE_EVENTS

log = logging.getLogger("tools.storage_event_relay")

MAX_BODY_BYTES = 256 * 1024
SEND_TIMEOUT_S = 10.0
PRODUCER: web.AppKey[AIOKafkaProducer] = web.AppKey("producer", AIOKafkaProducer)


def kafka_kwargs(settings: Settings) -> dict[str, Any]:
    """The stack's admin principal when the Kafka security module is there (SASL stacks), else plain bootstrap."""
    try:
        from streams.kafka_security import client_kwargs
    except ImportError:
        return {"bootstrap_servers": settings.kafka_bootstrap_servers}
    return client_kwargs(settings, "admin")


def object_key(value: Any) -> bytes | None:
    """The Kafka key: the first record's object key, so one object's notifications stay in order."""
    try:
        key = value["Records"][0]["s3"]["object"]["key"]
    except (KeyError, IndexError, TypeError):
        return None
    return key.encode() if isinstance(key, str) and key else None


async def receive(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return web.json_response({"error": "not JSON"}, status=400)
    try:
        await asyncio.wait_for(request.app[PRODUCER].send_and_wait(STORAGE_EVENTS, body, key=object_key(value)),
                               SEND_TIMEOUT_S)
    except Exception as exc:  # the notifier does not retry: this notification is left to reconciliation
        log.warning("notification not relayed (%s): %s", type(exc).__name__, body[:300])
        return web.json_response({"error": "kafka unavailable"}, status=503)
    return web.json_response({"relayed": True})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)

    async def producer_ctx(app: web.Application) -> Any:
        producer = AIOKafkaProducer(**kafka_kwargs(settings), acks="all", enable_idempotence=True,
                                    client_id="waste-storage-event-relay")
        await producer.start()
        app[PRODUCER] = producer
        yield
        await producer.stop()

    app.cleanup_ctx.append(producer_ctx)
    app.router.add_post("/events", receive)
    app.router.add_get("/healthz", health)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(levelname)s] %(name)s: %(message)s")
    web.run_app(create_app(load_settings()), host=args.host, port=args.port, access_log=None)


if __name__ == "__main__":
    main()

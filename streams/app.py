"""The Faust app. Run the worker with ``faust -A streams.app worker -l info``.

The app is declared without a broker: settings are read from the environment when Faust configures the app
(on first use of ``app.conf``), never at import time, so tests and tools can choose them first with
:func:`use_settings`. Agents live in ``agents/`` and are found by autodiscovery; nothing imports them.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import faust
from mode import Service

from models.settings import InsecureSettingsError, Settings, check_secrets, load_settings
from streams import faust_fixes, kafka_security, logs, resources, vision

log = logging.getLogger(__name__)

faust_fixes.apply()  # never commit past an event still in progress (see streams/faust_fixes.py)

_settings: Settings | None = None


def use_settings(settings: Settings) -> None:
    """Choose the settings before the app is configured (tests, benchmarks, tools)."""
    global _settings
    _settings = settings


def settings() -> Settings:
    global _settings
    if _settings is None:
        loaded = load_settings()
        try:
            check_secrets(loaded)  # a worker started from the environment: refuse guessable secrets
        except InsecureSettingsError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        _settings = loaded
    return _settings


app = faust.App(
    "waste-analysis",
    autodiscover=["agents"],
    origin="streams",
    # Keys and values are bytes we encode ourselves: the topics are wire contracts (see models/records.py).
    key_serializer="raw",
    value_serializer="raw",
)


@app.on_configured.connect  # type: ignore[arg-type]
def _apply_settings(app: faust.App, conf: Any, **kwargs: Any) -> None:
    s = settings()
    # Refuse to start rather than fail every cache miss with the endpoint's 400 (streams/vision.py).
    vision.check_request_contract()
    conf.id = s.app_id
    conf.broker = s.kafka_broker_url
    # The worker principal (SASL/SCRAM on the local stack; streams/kafka_security.py): consumer, producer, admin.
    conf.broker_credentials = kafka_security.faust_credentials(s, "worker")
    conf.topic_partitions = s.topic_partitions
    conf.topic_replication_factor = s.topic_replication_factor
    conf.web_enabled = s.worker_web_enabled
    conf.web_port = s.worker_web_port
    conf.web_bind = s.worker_web_host
    conf.web_host = s.worker_web_host
    # Tables are rebuilt from their changelog on start; Redis holds the durable cache.
    conf.store = "memory://"
    # Publish results without batching delay: a cache hit should be answered in milliseconds.
    conf.producer_linger_ms = 0
    conf.broker_commit_every = 100
    conf.consumer_auto_offset_reset = s.kafka_auto_offset_reset
    conf.consumer_metadata_max_age_ms = s.kafka_metadata_max_age_ms
    conf.broker_session_timeout = s.kafka_session_timeout_seconds
    conf.broker_heartbeat_interval = min(3.0, s.kafka_session_timeout_seconds / 4)
    # No standby copies: each table partition lives on its owner only, so timers sweep each entry once.
    conf.table_standby_replicas = 0


@app.service
class PipelineResources(Service):
    """Owns the long-lived clients (HTTP, S3, Redis, OpenAI) and the hashing executor."""

    async def on_start(self) -> None:
        logs.install(settings().log_format)  # escape control characters; LOG_FORMAT=json for JSON lines
        self._ctx = resources.open_resources(settings())
        resources.install(await self._ctx.__aenter__())
        log.info("pipeline resources open (settings: %s)", _redacted(settings()))

    async def on_stop(self) -> None:
        resources.install(None)
        await self._ctx.__aexit__(None, None, None)


def _redacted(s: Settings) -> str:
    # SecretStr fields print as '**********'; keep the line short and free of secrets.
    return (
        f"kafka={s.kafka_bootstrap_servers} redis={s.redis_url.split('@')[-1]} s3={s.s3_endpoint_url} "
        f"bucket={s.s3_bucket_name} cdn_enabled={s.cdn_enabled} cdn={s.cdn_base_url} "
        f"model={s.vision_model} base_url={s.openai_base_url}"
    )

"""The Faust app. Run the worker with ``faust -A streams.app worker -l info``.

The app is declared without a broker: settings are read from the environment when Faust configures the app
(on first use of ``app.conf``), never at import time, so tests and tools can choose them first with
``app.context.use_settings``. ``app.context`` holds the worker's one :class:`streams.context.WorkerContext`
(settings, clients, indexes, state), opened by :class:`WorkerContextService` when the worker starts. Agents live in
``agents/`` and are found by autodiscovery; nothing imports them.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import faust
from mode import Service

from models.settings import InsecureSettingsError, Settings, check_secrets, load_settings
from streams import faust_fixes, faust_producer, kafka_security, logs, table_store, topics, vision
from streams.context import ContextSlot, open_context

log = logging.getLogger(__name__)


def _settings_from_environment() -> Settings:
    loaded = load_settings()
    try:
        check_secrets(loaded)  # a worker started from the environment: refuse guessable secrets
    except InsecureSettingsError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    return loaded


class WorkerApp(faust.App):
    """The Faust app, and the slot of the worker's context (``app.context``)."""

    def __init__(self, *args: Any, context: ContextSlot, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.context = context


# Never commit past an event still in progress; refuses another faust-streaming version (streams/faust_fixes.py).
faust_fixes.apply()
# Every producer acks=all and idempotent (streams/faust_producer.py): before the app resolves its transport.
faust_producer.install()

app = WorkerApp(
    "waste-analysis",
    context=ContextSlot(_settings_from_environment),
    autodiscover=["agents"],
    origin="streams",
    # Keys and values are bytes we encode ourselves: the topics are wire contracts (see models/records.py).
    key_serializer="raw",
    value_serializer="raw",
)


@app.on_configured.connect  # type: ignore[arg-type]
def _apply_settings(app: WorkerApp, conf: Any, **kwargs: Any) -> None:
    s = app.context.settings()
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
    # TABLE_STORE (RocksDB under the data dir, or memory) and TABLE_STANDBY_REPLICAS: streams/table_store.py.
    table_store.configure(conf, s)
    # Publish results without batching delay: a cache hit should be answered in milliseconds.
    conf.producer_linger_ms = 0
    # Acknowledged by every in-sync replica (2 of 3 on the three-broker stack); Faust's default, stated.
    conf.producer_acks = -1
    conf.broker_commit_every = 100
    conf.consumer_auto_offset_reset = s.kafka_auto_offset_reset
    conf.consumer_metadata_max_age_ms = s.kafka_metadata_max_age_ms
    conf.broker_session_timeout = s.kafka_session_timeout_seconds
    conf.broker_heartbeat_interval = min(3.0, s.kafka_session_timeout_seconds / 4)


@app.service
class WorkerContextService(Service):
    """Opens the worker's context (clients, indexes, state over the app's tables) on start, closes it on stop."""

    async def on_start(self) -> None:
        settings = app.context.settings()
        logs.install(settings.log_format)  # escape control characters; LOG_FORMAT=json for JSON lines
        self._opened = open_context(settings, results_table=app.tables[topics.RESULTS_TABLE],  # type: ignore[arg-type]
                                    inflight_table=app.tables[topics.INFLIGHT_TABLE])  # type: ignore[arg-type]
        app.context.install(await self._opened.__aenter__())
        log.info("worker context open (settings: %s)", _redacted(settings))

    async def on_stop(self) -> None:
        app.context.install(None)
        await self._opened.__aexit__(None, None, None)


def _redacted(s: Settings) -> str:
    # SecretStr fields print as '**********'; keep the line short and free of secrets.
    return (
        f"kafka={s.kafka_bootstrap_servers} redis={s.redis_url.split('@')[-1]} s3={s.s3_endpoint_url} "
        f"bucket={s.s3_bucket_name} cdn_enabled={s.cdn_enabled} cdn={s.cdn_base_url} "
        f"model={s.vision_model} base_url={s.openai_base_url}"
    )

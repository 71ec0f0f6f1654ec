"""One typed, immutable settings object, read from the environment once at start-up.

Names follow the original design where it had them (``AWS_REGION``, ``S3_BUCKET_NAME``, ``CDN_*``).
Defaults point at the local stack that ``scripts/stack.sh up`` starts. Build it with :func:`load_settings`
at an entry point, never at import time; tests pass keyword arguments instead of environment variables.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class VisionImageMode(StrEnum):
    DATA_URL = "data_url"  # send a downscaled JPEG inline: works with any endpoint, no public URL needed
    CDN_URL = "cdn_url"  # send the CDN URL: smaller requests, but the model provider must reach the CDN


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    # "development" (make targets, scripts/test.sh, tests, the demo) lets API and worker start with the
    # default or a short API_TOKEN_SECRET; anything else is production: see check_secrets().
    app_env: Literal["development", "production"] = "production"

    # --- Kafka / Faust
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    app_id: str = "waste-analysis"
    topic_partitions: int = Field(default=4, ge=1)
    # Replication of every topic the project creates (tools/kafka_admin.py and the worker's changelogs): 1 on the
    # default one-node stack, 3 on a three-broker cluster (scripts/stack.sh STACK_KAFKA_BROKERS=3 prints it).
    topic_replication_factor: int = Field(default=1, ge=1)
    # min.insync.replicas of the topics tools/kafka_admin.py creates; unset: a majority of the replicas from three
    # replicas on (3 -> 2), else 1. With acks=all (every producer: kafka_security.producer_kwargs) a write is
    # acknowledged once that many replicas have it, so one broker may die without losing an acknowledged event.
    topic_min_insync_replicas: int | None = Field(default=None, ge=1)
    worker_web_port: int = 6066
    worker_web_host: str = "127.0.0.1"  # where the worker's /metrics listens; 0.0.0.0 in a container
    worker_web_enabled: bool = True
    # Where a group reads a partition it has no committed offset for. "latest" can skip events of the internal
    # topics after a rebalance; to start a new group at the end, use `python -m tools.kafka_admin start-at-end`.
    kafka_auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    # How soon the worker notices topics or partitions that appeared after it joined its group (the client's
    # default is 5 minutes, during which such partitions are read by nobody).
    kafka_metadata_max_age_ms: int = Field(default=30_000, ge=1000)
    # A worker that dies without leaving its group (killed, machine lost) holds its partitions this long
    # before the others take them over (heartbeats every min(3 s, a quarter of it)). Model calls cannot make a
    # healthy worker miss it: heartbeats and polls run on their own tasks, the calls in agents concurrently.
    kafka_session_timeout_seconds: float = Field(default=10.0, ge=6.0)
    # Who a client is to Kafka (streams/kafka_security.py builds every client's arguments from these). Unset
    # protocol: in development mode the local stack's generated credentials ({STACK_DIR}/kafka/credentials.env,
    # one principal per role: admin, api, worker) when that file exists, else PLAINTEXT; production refuses to
    # start without a protocol (check_secrets). SASL_PLAINTEXT only on a trusted network (the stack: loopback).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = None
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None  # CA bundle for SSL/SASL_SSL (default: the system's)
    kafka_ssl_certfile: str | None = None  # client certificate and key for mutual TLS (SSL)
    kafka_ssl_keyfile: str | None = None
    # Where scripts/stack.sh keeps the local stack (its Kafka credentials file is read in development mode only).
    stack_dir: str = str(Path(__file__).resolve().parents[1] / ".stack")
    # How long a worker group remembers (in Redis) which jobs it has published a result for, so events
    # redelivered after a crash or rebalance do not publish a second one.
    result_dedup_ttl_seconds: int = Field(default=24 * 3600, ge=1)

    # --- Redis (shared result cache; source of truth for the TTL)
    redis_url: str = "redis://127.0.0.1:6379/0"
    # A Redis Cluster: REDIS_URL names any node (or use the redis+cluster:// scheme); streams/redis_client.py.
    redis_cluster: bool = False
    # How long the worker's Redis commands retry a lost connection (a restart, a failover) before a lookup counts
    # as a miss and the job pays for a model call: waiting out a short outage is cheaper than paying.
    redis_retry_seconds: float = Field(default=5.0, ge=0)
    cache_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=1)
    # How long a job may wait on another job's model call before the call is considered lost and re-issued.
    inflight_timeout_seconds: float = Field(default=120.0, gt=0)
    # Near-duplicate tier (docs/NEAR_DUPLICATES.md): reuse a cached result whose pHash is within this many bits
    # (Hamming distance) of the new one; 0 matches exact hashes only. 12 puts 99.9% of pairs of re-uploads of
    # the team's 330 photos (re-encode, resize, screenshot, +10% brightness, EXIF rotation) within reach, while the
    # closest two different photos are 78 bits apart (52 counting crops and captions).
    near_duplicate_max_distance: int = Field(default=12, ge=0, le=31)
    # Let a near-duplicate wait on a model call under way for a hash within that distance (on any partition,
    # through a claim in Redis) instead of paying for a second call.
    near_duplicate_wait: bool = True

    # Reframed tier (streams/reframed.py, docs/NEAR_DUPLICATES.md): when the pHash tiers miss, look for a cached
    # photo that this one is a crop, small rotation, mirror image or letterboxed screenshot of (ORB visual words in
    # Redis), and reuse its result only if a RANSAC similarity transform with REFRAMED_MIN_INLIERS inliers AND a
    # pixel comparison of the aligned pictures (correlation >= REFRAMED_MIN_CORRELATION) agree.
    reframed_match: bool = True
    reframed_min_inliers: int = Field(default=20, ge=8)
    reframed_min_correlation: float = Field(default=0.85, ge=0.5, le=1.0)
    reframed_max_angle_degrees: float = Field(default=10.0, ge=0, le=45)
    reframed_candidates: int = Field(default=8, ge=1, le=64)  # photos verified per lookup, at most
    reframed_word_cap: int = Field(default=32, ge=1, le=1024)  # cached photos kept per visual word
    # --- S3 (origin) and the CDN in front of it
    aws_region: str = "us-east-1"
    aws_access_key_id: str = "test"
    aws_secret_access_key: SecretStr = SecretStr("testsecret")
    s3_endpoint_url: str | None = "http://127.0.0.1:7070"
    s3_bucket_name: str = "waste-images"
    cdn_enabled: bool = True
    cdn_base_url: str = "http://127.0.0.1:6081/waste-images"
    # The edge's TTLs are not a service setting: infra/cdn-policy.json sets them for CloudFront and the local edge.
    fetch_timeout_seconds: float = Field(default=10.0, gt=0)
    # While the CDN and S3 both fail (an S3 outage), a job's fetch is tried again with backoff for this long
    # before it fails with FETCH_FAILED; 0 fails at once. The fetch step's slots wait meanwhile (back-pressure).
    fetch_retry_seconds: float = Field(default=45.0, ge=0)

    # --- Image guards
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(default=50_000_000, ge=1)  # decompression-bomb guard (~8000x6000)
    # Checked from the header before any pixel is decoded (streams/imaging.py): each side, all frames of an
    # animation together (w x h x frames <= MAX_IMAGE_PIXELS), frames, long side / short side.
    max_image_width: int = Field(default=12_000, ge=1)
    max_image_height: int = Field(default=12_000, ge=1)
    max_image_frames: int = Field(default=50, ge=1)
    max_image_aspect_ratio: float = Field(default=8.0, ge=1.0)
    # Formats that cannot be decoded at a reduced scale (PNG, WebP, progressive JPEG) are decoded whole:
    # they are refused above this many pixels (16.7 MP = 4096 x 4096), which bounds a decode to ~70 MB.
    max_full_decode_pixels: int = Field(default=4096 * 4096, ge=1)
    max_jpeg_scans: int = Field(default=64, ge=1)  # a progressive JPEG re-decodes its coefficients per scan
    max_image_metadata_bytes: int = Field(default=1024 * 1024, ge=0)  # EXIF + ICC + XMP + text chunks
    # The peak RSS a worker stays under with the defaults above, whatever it is sent (proven by the hostile
    # flood in tests/security). Size a container's memory limit from it.
    worker_memory_ceiling_mb: int = Field(default=1024, ge=64)
    # Upload-complete events are checked before anything is fetched: the bucket must be S3_BUCKET_NAME and the
    # key must match this regex in full. A group named job_id, when it matched, must equal the event's job_id
    # (an event can only name its own upload). The default is the API's scheme (uploads/{job_id}, a uuid4 hex; the dashed form
    # and an image extension are accepted for tools.produce).
    upload_key_pattern: str = (
        r"uploads/(?P<job_id>[0-9a-f]{32}|[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})(?:\.(?:jpe?g|png|webp|heic|heif|avif))?"
    )
    # Storage events as the trigger (docs/STORAGE_EVENTS.md): the worker turns the bucket's ObjectCreated
    # notifications (topic waste.storage.events) into upload-complete jobs for jobs the API issued, once per job
    # whichever of the notification and the upload-complete call comes first. false: notifications are read and
    # ignored (the app must call upload-complete).
    storage_events_enabled: bool = True
    # Where the API's uploads live: listed to find the object of a notification that names none (versitygw's POST
    # uploads) and by the reconciliation pass.
    storage_upload_prefix: str = "uploads/"
    # Reconciliation: every this many seconds (0 = off) one worker lists the uploads of the last
    # STORAGE_RECONCILE_LOOKBACK_SECONDS that are older than STORAGE_RECONCILE_MIN_AGE_SECONDS and belong to a job
    # still waiting for its upload, and queues them: a notification the notifier lost costs latency, not the job.
    storage_reconcile_interval_seconds: float = Field(default=60.0, ge=0)
    storage_reconcile_min_age_seconds: float = Field(default=30.0, ge=0)
    storage_reconcile_lookback_seconds: float = Field(default=3600.0, gt=0)
    storage_reconcile_max_keys: int = Field(default=10_000, ge=1)  # objects listed per pass, at most
    hash_workers: int = Field(default=2, ge=1)
    # Remember the pHash of each upload's SHA-256 in Redis: a byte-identical re-upload then skips the decode.
    content_digest_cache: bool = True

    # --- Vision model (any OpenAI-compatible endpoint)
    openai_api_key: SecretStr = SecretStr("sim-key")
    openai_base_url: str | None = "http://127.0.0.1:8090/v1"
    vision_model: str = "gpt-4o"
    vision_image_mode: VisionImageMode = VisionImageMode.DATA_URL
    vision_timeout_seconds: float = Field(default=30.0, gt=0)
    vision_max_attempts: int = Field(default=4, ge=1)
    vision_backoff_base_seconds: float = Field(default=0.5, ge=0)
    vision_backoff_max_seconds: float = Field(default=20.0, ge=0)
    vision_concurrency: int = Field(default=16, ge=1)
    # A global guard on spend, shared by every worker through Redis: model calls allowed per minute and per UTC
    # day (0 = no limit). A job over either fails with MODEL_BUDGET_EXCEEDED instead of being paid for.
    model_calls_per_minute: int = Field(default=600, ge=0)
    model_calls_per_day: int = Field(default=200_000, ge=0)
    # The image's detail level (OpenAI: "low" is a flat 85 tokens for gpt-4o; "high"/"auto" add 170 per 512 px tile).
    vision_image_detail: Literal["low", "high", "auto"] = "low"
    # max_completion_tokens of each call: an answer is ~120 tokens; a cut answer (finish_reason "length") is retried.
    vision_max_output_tokens: int = Field(default=400, ge=16, le=16_384)
    # The price table, dollars per 1M tokens (defaults: gpt-4o's list prices). Each answer's usage times these is
    # the dollars of the call (streams/cost.py, docs/COST.md): waste_model_spent_dollars_total and the savings.
    model_price_input_per_1m_tokens: float = Field(default=2.50, ge=0)
    model_price_output_per_1m_tokens: float = Field(default=10.00, ge=0)
    # Not a guard (MODEL_CALLS_PER_* are): the dollars a day may cost before monitoring/alerts.yml fires.
    model_spend_budget_dollars_per_day: float = Field(default=50.0, ge=0)
    prompt_version: str = "1"

    # --- API
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_token_secret: SecretStr = SecretStr("dev-only-change-me")
    api_token_ttl_seconds: int = Field(default=24 * 3600, ge=60)  # how long a job's token lets its holder read it
    api_admin_token: SecretStr | None = None  # enables the admin endpoints; empty or unset: they answer 404
    api_public_s3_url: str | None = None  # the S3 URL browsers upload to, if it differs from s3_endpoint_url
    upload_max_bytes: int = Field(default=15 * 1024 * 1024, ge=1)
    upload_url_expires_seconds: int = Field(default=900, ge=1)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    results_retention_seconds: int = Field(default=3600, ge=1)
    # Exact Content-Types a pre-signed upload may carry (the S3 server enforces the one pinned per job).
    upload_content_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["image/jpeg", "image/png", "image/webp", "image/heic", "image/heif", "image/avif"]
    )
    # Who a client is, for rate limits and the socket cap: 0 = the peer address; N = the address N hops from
    # the right of X-Forwarded-For (N trusted proxies in front of the API each append one).
    api_trusted_proxy_hops: int = Field(default=0, ge=0, le=10)
    # Per client and window, shared by every API instance through Redis; 0 switches a limit off.
    rate_limit_window_seconds: int = Field(default=60, ge=1)
    rate_limit_analyze: int = Field(default=30, ge=0)
    rate_limit_upload_complete: int = Field(default=60, ge=0)
    # WebSocket limits (per API instance).
    ws_max_sockets_per_client: int = Field(default=20, ge=1)
    ws_outbox_max_messages: int = Field(default=256, ge=1)
    ws_auth_timeout_seconds: float = Field(default=10.0, gt=0)
    ws_idle_timeout_seconds: float = Field(default=300.0, gt=0)
    ws_send_timeout_seconds: float = Field(default=10.0, gt=0)

    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("cors_origins", "upload_content_types", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        # Accept "a,b" from the environment as well as a JSON list.
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("upload_key_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        import re

        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"UPLOAD_KEY_PATTERN is not a valid regular expression: {exc}") from exc
        return value

    @field_validator("api_admin_token", mode="before")
    @classmethod
    def _empty_admin_token_is_none(cls, value: Any) -> Any:
        # An empty token must switch the admin endpoints off, never accept an empty Authorization header.
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if raw is None or (isinstance(raw, str) and not raw.strip()) else value

    @field_validator("kafka_security_protocol", "kafka_sasl_username", "kafka_sasl_password", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # KAFKA_SASL_USERNAME= in a compose file or an env file means "not set", not a user with an empty name.
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if isinstance(raw, str) and not raw.strip() else value

    @field_validator("cdn_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def min_insync_replicas(self) -> int:
        """``topic_min_insync_replicas``, or its default for ``topic_replication_factor`` (3 -> 2, below 3 -> 1)."""
        if self.topic_min_insync_replicas is not None:
            return min(self.topic_min_insync_replicas, self.topic_replication_factor)
        rf = self.topic_replication_factor
        return rf // 2 + 1 if rf >= 3 else 1

    @property
    def kafka_broker_url(self) -> str:
        """The broker list in Faust's ``kafka://host:port;host:port`` form."""
        return ";".join(f"kafka://{b.strip()}" for b in self.kafka_bootstrap_servers.split(",") if b.strip())

    @property
    def model_version(self) -> str:
        """What a cached result must match to be served as current: model, prompt and taxonomy."""
        from models.classification import TAXONOMY_VERSION

        return f"{self.vision_model}|p{self.prompt_version}|t{TAXONOMY_VERSION}"


MIN_SECRET_LENGTH = 32
KNOWN_DEFAULT_SECRETS = frozenset({"dev-only-change-me", "change-me", "changeme", "secret", "test-secret"})


class InsecureSettingsError(ValueError):
    """Raised at start-up when production settings carry a default, empty or short secret."""


def check_secrets(settings: Settings) -> None:
    """Refuse production settings whose secrets anyone could guess. Development mode accepts anything."""
    if settings.app_env == "development":
        return
    problems = []
    token_secret = settings.api_token_secret.get_secret_value()
    if token_secret.strip() in KNOWN_DEFAULT_SECRETS or len(token_secret.strip()) < MIN_SECRET_LENGTH:
        problems.append(f"API_TOKEN_SECRET is a default, empty or shorter than {MIN_SECRET_LENGTH} characters")
    if settings.api_admin_token is not None and len(settings.api_admin_token.get_secret_value()) < MIN_SECRET_LENGTH:
        problems.append(f"API_ADMIN_TOKEN is shorter than {MIN_SECRET_LENGTH} characters (leave it empty to disable)")
    problems += _kafka_problems(settings)
    if problems:
        raise InsecureSettingsError(
            "refusing to start: " + "; ".join(problems)
            + ". Generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`, "
            "or set APP_ENV=development on a developer machine."
        )


def _kafka_problems(settings: Settings) -> list[str]:
    protocol = settings.kafka_security_protocol
    if protocol is None:
        return ["KAFKA_SECURITY_PROTOCOL is not set (SASL_SSL with KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD; "
                "PLAINTEXT only for a broker that authenticates clients some other way)"]
    if protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        if not settings.kafka_sasl_username or len(password) < 16:
            return [f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME and a KAFKA_SASL_PASSWORD "
                    "of 16 or more characters"]
    return []


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (keyword arguments win). Call once, at an entry point."""
    return Settings(**overrides)

"""One typed, immutable settings object, read from the environment once at start-up.

Names follow the original design where it had them (``AWS_REGION``, ``S3_BUCKET_NAME``, ``CDN_*``; not
``CDN_CACHE_TTL``: the edge's TTLs live in infra/cdn-policy.json). Defaults point at the local stack that
``scripts/stack.sh up`` starts. Build it with :func:`load_settings` at an entry point, never at import time;
tests pass keyword arguments instead of environment variables.

Every field's ``description`` is its user documentation: the README's settings table is generated from it
(``python -m tools.settings_doc``), and a unit test fails when the two differ.
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

    app_env: Literal["development", "production"] = Field(
        "production",
        description="`development` (set by make, `scripts/test.sh`, the tests and the demo; never by the compose "
        "file) lets API and worker start with the default or a short `API_TOKEN_SECRET`; otherwise they refuse to "
        "start with a default, empty or shorter-than-32-character secret (`check_secrets`)",
    )

    # --- Kafka / Faust
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", description="the Kafka brokers, `host:port[,host:port]`")
    app_id: str = Field(
        "waste-analysis", description="the Faust app id: the worker group's name and the prefix of its changelog topics"
    )
    topic_partitions: int = Field(default=4, ge=1, description="partitions of the topics the app creates")
    topic_replication_factor: int = Field(
        default=1,
        ge=1,
        description="replicas of every topic the project creates (`tools.kafka_admin` and the worker's changelogs): "
        "1 on the default one-node stack, 3 on a three-broker cluster (`scripts/stack.sh` with "
        "`STACK_KAFKA_BROKERS=3` prints it)",
    )
    topic_min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        description="`min.insync.replicas` of the topics `tools.kafka_admin` creates; unset: a majority of the "
        "replicas from three replicas on (3 -> 2), else 1. Every producer uses acks=all, so a write is acknowledged "
        "once that many replicas have it and one broker may die without losing an acknowledged event",
    )
    worker_web_port: int = Field(6066, description="port of the worker's web server (`/metrics`, `/readyz`)")
    worker_web_host: str = Field(
        "127.0.0.1", description="address the worker's web server listens on; `0.0.0.0` in a container"
    )
    worker_web_enabled: bool = Field(
        True, description="run the worker's web server; `false` leaves the worker without `/metrics` and `/readyz`"
    )
    # Where the worker keeps its Faust tables (streams/table_store.py; measured in docs/SCALING.md, "Tables").
    table_store: Literal["memory", "rocksdb"] = Field(
        "rocksdb",
        description="where the worker keeps its Faust tables: `rocksdb` (on disk under the worker's data dir, "
        "`--datadir`; a restart reads only the changelog written since, memory bounded whatever the table's size) "
        "or `memory` (rebuilt from the changelog on every start: memory and restart time grow with the cached "
        "photos, see docs/SCALING.md); RocksDB's folder is `{datadir}/v1/tables-{WORKER_WEB_PORT}`",
    )
    table_standby_replicas: int = Field(
        1,
        ge=0,
        description="standby copies of each table partition kept by other workers of the group (Faust's "
        "`table_standby_replicas`): a dead worker's partitions move to a worker that already holds them (at 100k "
        "cached photos, answering again 7 s after a kill instead of 18 s; docs/SCALING.md). No effect with one worker",
    )
    kafka_auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest",
        description="where the worker's group reads a partition it has no committed offset for; keep `earliest` "
        "(`latest` can skip events of the internal topics after a rebalance; start a new group at the end with "
        "`python -m tools.kafka_admin start-at-end GROUP`)",
    )
    kafka_metadata_max_age_ms: int = Field(
        default=30_000,
        ge=1000,
        description="how soon the worker notices topics or partitions created after it joined its group (the "
        "client's default, 5 minutes, leaves such partitions unread that long)",
    )
    kafka_session_timeout_seconds: float = Field(
        default=10.0,
        ge=6.0,
        description="how long a worker that died without leaving its group (killed, machine lost) holds its "
        "partitions before the others take them over (heartbeats every min(3 s, a quarter of it); model calls "
        "cannot make a healthy worker miss it); measured failover: CHAOS.md",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = Field(
        None,
        description="`SASL_SSL` (or `SASL_PLAINTEXT` on a trusted network such as the stack's loopback, `SSL` for "
        "mutual TLS); unset: the local stack's generated credentials in development mode "
        "(`{STACK_DIR}/kafka/credentials.env`, one principal per role) when that file exists, else PLAINTEXT, "
        "which production refuses. `streams/kafka_security.py` builds every client's arguments from these",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        "SCRAM-SHA-512", description="the SASL mechanism of this process's Kafka principal"
    )
    kafka_sasl_username: str | None = Field(
        None, description="this process's Kafka principal (the API `api`, workers `worker`); empty means unset"
    )
    kafka_sasl_password: SecretStr | None = Field(
        None, description="the principal's password, 16 or more characters outside development mode"
    )
    kafka_ssl_cafile: str | None = Field(
        None, description="CA bundle that signed the brokers' certificates (SSL, SASL_SSL); unset: the system's"
    )
    kafka_ssl_certfile: str | None = Field(None, description="client certificate for mutual TLS (SSL)")
    kafka_ssl_keyfile: str | None = Field(None, description="the client certificate's private key (SSL)")
    stack_dir: str = Field(
        str(Path(__file__).resolve().parents[1] / ".stack"),
        description="where `scripts/stack.sh` keeps the local stack; in development mode clients read its "
        "`kafka/credentials.env`",
    )
    result_dedup_ttl_seconds: int = Field(
        default=24 * 3600,
        ge=1,
        description="how long a worker group remembers (in Redis) the jobs it published a result for, so events "
        "redelivered after a crash or rebalance do not publish a second one",
    )

    # --- Redis (shared result cache; source of truth for the TTL)
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="the shared result cache (the source of truth for its TTL); `redis+cluster://host:port/0` (or "
        "`REDIS_CLUSTER=true`) for a Redis Cluster, whose every multi-key script's keys share a hash tag "
        "(`scripts/stack.sh redis-cluster-up` starts one on 7000-7005)",
    )
    redis_cluster: bool = Field(
        False, description="`REDIS_URL` names any node of a Redis Cluster (`streams/redis_client.py`)"
    )
    redis_retry_seconds: float = Field(
        default=5.0,
        ge=0,
        description="how long the worker's Redis commands wait out a lost connection (a restart, a failover) "
        "before a lookup counts as a miss and the job pays for a model call: waiting out a short outage is "
        "cheaper than paying",
    )
    cache_ttl_seconds: int = Field(
        default=7 * 24 * 3600, ge=1, description="how long a classification stays cached (7 days), Redis and table"
    )
    inflight_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="how long a job waits on another job's model call before the call is presumed lost and "
        "issued again",
    )
    near_duplicate_max_distance: int = Field(
        default=12,
        ge=0,
        le=31,
        description="reuse a cached result whose pHash is within this many bits (Hamming distance, of 256) of the "
        "new one; 0 matches exact hashes only. 12 puts 99.9% of pairs of re-uploads of the team's 330 photos "
        "(re-encode, resize, screenshot, +10% brightness, EXIF rotation) within reach, while the closest two "
        "different photos are 78 bits apart (docs/NEAR_DUPLICATES.md, BENCHMARKS.md)",
    )
    near_duplicate_wait: bool = Field(
        True,
        description="a near-duplicate of a photo being classified waits on that model call (on any partition, "
        "through a claim in Redis) instead of paying for a second one",
    )

    reframed_match: bool = Field(
        True,
        description="the reframed tier (`streams/reframed.py`, docs/NEAR_DUPLICATES.md): when the pHash tiers miss, "
        "look for a cached photo this one is a crop, small rotation, mirror image or letterboxed screenshot of "
        "(ORB visual words in Redis) and reuse its result if the geometric and the pixel checks below agree",
    )
    reframed_min_inliers: int = Field(
        default=20,
        ge=8,
        description="reframed tier: keypoint matches that must fit one similarity transform (RANSAC inliers) "
        "before a candidate is compared pixel by pixel",
    )
    reframed_min_correlation: float = Field(
        default=0.85,
        ge=0.5,
        le=1.0,
        description="reframed tier: how alike the aligned pictures must be (pixel correlation) for the cached "
        "result to be reused",
    )
    reframed_max_angle_degrees: float = Field(
        default=10.0,
        ge=0,
        le=45,
        description="reframed tier: the largest rotation between the two photos that still counts as a match",
    )
    reframed_candidates: int = Field(
        default=8, ge=1, le=64, description="reframed tier: cached photos verified per lookup, at most"
    )
    reframed_word_cap: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="reframed tier: cached photos kept per visual word in Redis (bounds the index's memory)",
    )
    # --- S3 (origin) and the CDN in front of it
    aws_region: str = Field("us-east-1", description="the S3 bucket's region")
    aws_access_key_id: str = Field(
        "test", description="S3 credentials: the API's HEAD, DELETE and pre-signing, the worker's reads"
    )
    aws_secret_access_key: SecretStr = Field(
        SecretStr("testsecret"), description="the secret of `AWS_ACCESS_KEY_ID` (the local stack's, by default)"
    )
    s3_endpoint_url: str | None = Field(
        "http://127.0.0.1:7070", description="the S3 server's URL, as the API and the workers reach it"
    )
    s3_bucket_name: str = Field(
        "waste-images", description="the images bucket; upload-complete events naming another bucket are refused"
    )
    cdn_enabled: bool = Field(
        True,
        description="the worker reads an upload through the CDN first, S3 on failure; `false` reads S3 only (a "
        "worker in the bucket's region reads S3 without transfer charges)",
    )
    cdn_base_url: str = Field(
        "http://127.0.0.1:6081/waste-images",
        description="`{CDN_BASE_URL}/{key}` is an object's public URL (`image_url`). The edge's TTLs are not a "
        "service setting: `infra/cdn-policy.json` sets them for CloudFront and the local edge",
    )
    fetch_timeout_seconds: float = Field(default=10.0, gt=0, description="CDN and S3 read timeout")
    fetch_retry_seconds: float = Field(
        default=45.0,
        ge=0,
        description="while the CDN and S3 both fail (an S3 outage), a job's fetch is tried again with backoff for "
        "this long before it fails with `FETCH_FAILED`; 0 fails at once. The fetch step's slots wait meanwhile "
        "(back-pressure)",
    )

    # --- Image guards
    max_image_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1, description="the largest image the worker fetches and decodes"
    )
    max_image_pixels: int = Field(
        default=50_000_000,
        ge=1,
        description="decompression-bomb guard: width x height x frames, checked from the header (~8000x6000)",
    )
    max_image_width: int = Field(
        default=12_000, ge=1, description="widest image accepted, checked from the header before any pixel is decoded"
    )
    max_image_height: int = Field(
        default=12_000, ge=1, description="tallest image accepted, checked from the header before any decode"
    )
    max_image_frames: int = Field(default=50, ge=1, description="most frames of an animation accepted")
    max_image_aspect_ratio: float = Field(default=8.0, ge=1.0, description="long side / short side, at most")
    max_full_decode_pixels: int = Field(
        default=4096 * 4096,
        ge=1,
        description="formats that cannot be decoded at a reduced scale (PNG, WebP, progressive JPEG) are decoded "
        "whole: refused above this many pixels (16.7 MP = 4096²), which bounds a decode to ~70 MB",
    )
    max_jpeg_scans: int = Field(
        default=64, ge=1, description="scans of a progressive JPEG, at most (each re-decodes the coefficients)"
    )
    max_image_metadata_bytes: int = Field(
        default=1024 * 1024, ge=0, description="EXIF + ICC + XMP + text chunks, at most (EXIF also at most 1000 tags)"
    )
    worker_memory_ceiling_mb: int = Field(
        default=1024,
        ge=64,
        description="the peak RSS a worker stays under with the defaults above, whatever it is sent; measured "
        "282 MB (431 MB with a second worker group feeding it) in the hostile flood of "
        "`tests/security/test_hostile_flood_stack.py`: size a container's memory limit from it",
    )
    upload_key_pattern: str = Field(
        r"uploads/(?P<job_id>[0-9a-f]{32}|[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})(?:\.(?:jpe?g|png|webp|heic|heif|avif))?",
        description="upload-complete events are checked before anything is fetched: the key must match this "
        "regex in full, and a `job_id` group must equal the event's job id (an event can only name its own "
        "upload). The default is the API's scheme (`uploads/{job_id}`, a uuid4 hex; the dashed form and an image "
        "extension are accepted for `tools.produce`). Keys are also plain (`[A-Za-z0-9._/-]`, no empty, `.` or `..` "
        "segment, at most 256 characters) whatever the pattern",
    )
    storage_events_enabled: bool = Field(
        True,
        description="the worker turns the bucket's ObjectCreated notifications (topic `waste.storage.events`) into "
        "upload-complete jobs for jobs the API issued, once per job whichever comes first (docs/STORAGE_EVENTS.md); "
        "`false`: notifications are ignored and the app must call upload-complete",
    )
    storage_upload_prefix: str = Field(
        "uploads/",
        description="where the API's uploads live: listed to find the object of a notification that names none "
        "and by the reconciliation pass",
    )
    storage_reconcile_interval_seconds: float = Field(
        default=60.0,
        ge=0,
        description="reconciliation: every this many seconds (0 = off) one worker lists recent uploads of jobs "
        "still waiting for theirs and queues them, so a notification the notifier lost costs latency, not the job",
    )
    storage_reconcile_min_age_seconds: float = Field(
        default=30.0, ge=0, description="reconciliation: how old an upload must be before the pass queues it"
    )
    storage_reconcile_lookback_seconds: float = Field(
        default=3600.0, gt=0, description="reconciliation: how far back the pass lists uploads"
    )
    storage_reconcile_max_keys: int = Field(
        default=10_000, ge=1, description="reconciliation: objects listed per pass, at most"
    )
    hash_workers: int = Field(default=2, ge=1, description="threads decoding and hashing images, per worker")
    content_digest_cache: bool = Field(
        True,
        description="remember each upload's SHA-256 -> pHash in Redis (`cache:image:digest:...`, same TTL as "
        "results): a byte-identical re-upload skips the decode",
    )
    answer_hits_at_fetch: bool = Field(
        True,
        description="the fetch step answers a hit in the shared Redis cache for the job's own pHash itself (one "
        "topic hop less per hit); only the rest goes through `waste.images.hashed` to the dedupe step",
    )

    # --- Vision model (any OpenAI-compatible endpoint)
    openai_api_key: SecretStr = Field(
        SecretStr("sim-key"), description="the vision endpoint's API key (the simulator takes any)"
    )
    openai_base_url: str | None = Field(
        "http://127.0.0.1:8090/v1",
        description="the base URL of any OpenAI-compatible endpoint (default: the local simulator)",
    )
    vision_model: str = Field("gpt-4o", description="the vision model asked; part of every cached result's version")
    vision_image_mode: VisionImageMode = Field(
        VisionImageMode.DATA_URL,
        description="`data_url` (a downscaled JPEG inline: any endpoint, no public URL needed) or `cdn_url` (the "
        "model fetches `image_url`: smaller requests, but the provider must reach the CDN)",
    )
    vision_timeout_seconds: float = Field(default=30.0, gt=0, description="per-call timeout of the vision model")
    vision_max_attempts: int = Field(default=4, ge=1, description="attempts per model call, the first included")
    vision_backoff_base_seconds: float = Field(
        default=0.5,
        ge=0,
        description="retry backoff base (full jitter, doubling per attempt; `Retry-After` wins when the endpoint "
        "sends it)",
    )
    vision_backoff_max_seconds: float = Field(default=20.0, ge=0, description="retry backoff ceiling")
    vision_concurrency: int = Field(default=16, ge=1, description="model calls under way at once, per worker")
    model_calls_per_minute: int = Field(
        default=600,
        ge=0,
        description="the spend guard, shared by every worker through Redis: model calls allowed per minute (0 = no "
        "limit); a job over it fails with `MODEL_BUDGET_EXCEEDED` instead of being paid for; if Redis cannot be "
        "asked the call is made",
    )
    model_calls_per_day: int = Field(
        default=200_000, ge=0, description="the spend guard's allowance per UTC day (0 = no limit)"
    )
    vision_image_detail: Literal["low", "high", "auto"] = Field(
        "low",
        description="the image's `detail`: `low` (a flat 85 tokens on gpt-4o), `high` or `auto` (85 + 170 per "
        "512 px tile); measured in docs/COST.md",
    )
    vision_max_output_tokens: int = Field(
        default=400,
        ge=16,
        le=16_384,
        description="`max_completion_tokens` of each call (an answer is ~60-150 tokens); a cut answer "
        "(finish_reason `length`) is retried",
    )
    model_price_input_per_1m_tokens: float = Field(
        default=2.50,
        ge=0,
        description="dollars per 1M prompt tokens (gpt-4o's list price): each answer's usage times the price table "
        "is the call's dollars (`waste_model_spent_dollars_total`, the savings; `streams/cost.py`, docs/COST.md)",
    )
    model_price_output_per_1m_tokens: float = Field(
        default=10.00, ge=0, description="dollars per 1M completion tokens (gpt-4o's list price)"
    )
    model_spend_budget_dollars_per_day: float = Field(
        default=50.0,
        ge=0,
        description="the dollars a day may cost before the `ModelSpendOverBudget` alert fires "
        "(`monitoring/alerts.yml`): a threshold, not a guard (`MODEL_CALLS_PER_*` are)",
    )
    prompt_version: str = Field(
        "1",
        description="bump to stop serving results of an older prompt (cache entries carry model, prompt and "
        "taxonomy version)",
    )

    # --- API
    api_host: str = Field("127.0.0.1", description="address the API listens on")
    api_port: int = Field(8080, description="port the API listens on")
    api_token_secret: SecretStr = Field(
        SecretStr("dev-only-change-me"),
        description="signs job tokens (`{expires}.{HMAC(job_id|expires)}`); 32+ characters outside development "
        "mode; rotating it ends every outstanding token",
    )
    api_token_ttl_seconds: int = Field(
        default=24 * 3600, ge=60, description="how long a job's token reads it (then 403 `TOKEN_EXPIRED`)"
    )
    api_admin_token: SecretStr | None = Field(
        None,
        description="enables the operator endpoints `DELETE /api/v1/waste/admin/cache/{phash}` (or `?job_id=`) and "
        "`GET /api/v1/waste/admin/results/{job_id}`; `Authorization: Bearer` header only; empty or unset = off "
        "(404); 32+ characters outside development mode",
    )
    api_public_s3_url: str | None = Field(
        None,
        description="the S3 address browsers upload to, when it differs from `S3_ENDPOINT_URL` (the API's own): "
        "upload URLs are signed for this host",
    )
    upload_max_bytes: int = Field(
        default=15 * 1024 * 1024,
        ge=1,
        description="the largest upload: the pre-signed POST's limit, checked again by upload-complete (413)",
    )
    upload_url_expires_seconds: int = Field(
        default=900, ge=1, description="how long a pre-signed upload works (`expires_at` of analyze)"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="origins whose pages may call the API from a browser (comma-separated or a JSON list)",
    )
    results_retention_seconds: int = Field(
        default=3600,
        ge=1,
        description="how long the API keeps each result (Redis, counted from `completed_at`) for polls, late "
        "subscribers and reconnecting sockets; an instance replays this much of the results topic on start",
    )
    upload_content_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["image/jpeg", "image/png", "image/webp", "image/heic", "image/heif", "image/avif"],
        description="the exact Content-Types an upload may be pinned to, the first the default (the S3 server "
        "enforces the one pinned per job; no SVG)",
    )
    api_trusted_proxy_hops: int = Field(
        default=0,
        ge=0,
        le=10,
        description="who a client is, for rate limits and the socket cap: 0 = the TCP peer; N = the address N "
        "entries from the right of `X-Forwarded-For` (N trusted proxies in front of the API each append one)",
    )
    rate_limit_window_seconds: int = Field(
        default=60,
        ge=1,
        description="the rate limits' window; limits are per client, shared by every API instance through Redis; "
        "over one: 429 with `Retry-After`",
    )
    rate_limit_analyze: int = Field(default=30, ge=0, description="analyze calls per client and window; 0 = off")
    rate_limit_upload_complete: int = Field(
        default=60, ge=0, description="upload-complete calls per client and window; 0 = off"
    )
    ws_max_sockets_per_client: int = Field(
        default=20, ge=1, description="open WebSockets per client and API instance (then 429 before the upgrade)"
    )
    ws_outbox_max_messages: int = Field(
        default=256, ge=1, description="unsent messages per socket; beyond, the socket is closed (1008)"
    )
    ws_auth_timeout_seconds: float = Field(
        default=10.0, gt=0, description="a socket that follows no job after this long is closed (1008)"
    )
    ws_idle_timeout_seconds: float = Field(
        default=300.0, gt=0, description="a socket silent both ways this long is closed (1008)"
    )
    ws_send_timeout_seconds: float = Field(
        default=10.0, gt=0, description="a client that does not take a message within this is cut off (1008)"
    )

    log_level: str = Field(
        "INFO", description="the API's log level (`DEBUG`, `INFO`, `WARNING`); the worker's: `faust worker --loglevel`"
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="`json`: one JSON object per line (API and worker); control characters in messages are escaped "
        "in both",
    )

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

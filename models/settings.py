"""One typed, immutable settings object, read from the environment once at start-up.

Names follow the original design where it had them (``AWS_REGION``, ``S3_BUCKET_NAME``, ``CDN_*``).
Defaults point at the local stack that ``scripts/stack.sh up`` starts. Build it with :func:`load_settings`
at an entry point, never at import time; tests pass keyword arguments instead of environment variables.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class VisionImageMode(StrEnum):
    DATA_URL = "data_url"  # send a downscaled JPEG inline: works with any endpoint, no public URL needed
    CDN_URL = "cdn_url"  # send the CDN URL: smaller requests, but the model provider must reach the CDN


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    # --- Kafka / Faust
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    app_id: str = "waste-analysis"
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)
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
    # before the others take them over.
    kafka_session_timeout_seconds: float = Field(default=60.0, ge=6.0)
    # How long a worker group remembers (in Redis) which jobs it has published a result for, so events
    # redelivered after a crash or rebalance do not publish a second one.
    result_dedup_ttl_seconds: int = Field(default=24 * 3600, ge=1)

    # --- Redis (shared result cache; source of truth for the TTL)
    redis_url: str = "redis://127.0.0.1:6379/0"
    cache_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=1)
    # How long a job may wait on another job's model call before the call is considered lost and re-issued.
    inflight_timeout_seconds: float = Field(default=120.0, gt=0)
    # Near-duplicate tier (docs/NEAR_DUPLICATES.md): reuse a cached result whose pHash is within this many bits
    # (Hamming distance) of the new one; 0 matches exact hashes only. 12 puts 99.9% of pairs of re-uploads of
    # the shared photos (re-encode, resize, screenshot, +10% brightness, EXIF rotation) within reach, while the
    # closest two different photos are 78 bits apart (52 counting crops and captions).
    near_duplicate_max_distance: int = Field(default=12, ge=0, le=31)
    # Let a near-duplicate wait on a model call under way for a hash within that distance (on any partition,
    # through a claim in Redis) instead of paying for a second call.
    near_duplicate_wait: bool = True

    # --- S3 (origin) and the CDN in front of it
    aws_region: str = "us-east-1"
    aws_access_key_id: str = "test"
    aws_secret_access_key: SecretStr = SecretStr("testsecret")
    s3_endpoint_url: str | None = "http://127.0.0.1:7070"
    s3_bucket_name: str = "waste-images"
    cdn_enabled: bool = True
    cdn_base_url: str = "http://127.0.0.1:6081/waste-images"
    cdn_cache_ttl: int = 86400
    fetch_timeout_seconds: float = Field(default=10.0, gt=0)

    # --- Image guards
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(default=50_000_000, ge=1)  # decompression-bomb guard (~8000x6000)
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
    prompt_version: str = "1"

    # --- API
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_token_secret: SecretStr = SecretStr("dev-only-change-me")
    api_token_ttl_seconds: int = Field(default=24 * 3600, ge=60)  # how long a job's token lets its holder read it
    api_admin_token: SecretStr | None = None  # enables DELETE /api/v1/waste/admin/cache/... for operators
    api_public_s3_url: str | None = None  # the S3 URL browsers upload to, if it differs from s3_endpoint_url
    upload_max_bytes: int = Field(default=15 * 1024 * 1024, ge=1)
    upload_url_expires_seconds: int = Field(default=900, ge=1)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    results_retention_seconds: int = Field(default=3600, ge=1)

    log_level: str = "INFO"

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        # Accept "a,b" from the environment as well as a JSON list.
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("cdn_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def kafka_broker_url(self) -> str:
        """The broker list in Faust's ``kafka://host:port;host:port`` form."""
        return ";".join(f"kafka://{b.strip()}" for b in self.kafka_bootstrap_servers.split(",") if b.strip())

    @property
    def model_version(self) -> str:
        """What a cached result must match to be served as current: model, prompt and taxonomy."""
        from models.classification import TAXONOMY_VERSION

        return f"{self.vision_model}|p{self.prompt_version}|t{TAXONOMY_VERSION}"


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (keyword arguments win). Call once, at an entry point."""
    return Settings(**overrides)

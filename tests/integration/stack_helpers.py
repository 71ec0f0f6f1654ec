"""Helpers for tests on the real local stack started by ``scripts/stack.sh up``.

Ports and credentials come from the same environment variables, with the same defaults, as
``scripts/stack.sh``. A service that does not answer makes its tests FAIL, so CI cannot pass by
skipping; set ``STACK_OPTIONAL=1`` to turn that into a skip (e.g. on a laptop without the stack).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools.kit import port_open

REPO_DIR = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class StackEnv:
    kafka_port: int
    kafka_controller_port: int
    redis_port: int
    s3_port: int
    cdn_port: int
    simulator_port: int
    s3_access_key: str
    s3_secret_key: str
    bucket: str
    stack_dir: Path

    @classmethod
    def from_env(cls) -> StackEnv:
        env = os.environ
        stack_dir = Path(env.get("STACK_DIR", REPO_DIR / ".stack"))
        if not stack_dir.is_absolute():
            stack_dir = REPO_DIR / stack_dir
        return cls(
            kafka_port=int(env.get("KAFKA_PORT", "9092")),
            kafka_controller_port=int(env.get("KAFKA_CONTROLLER_PORT", "9093")),
            redis_port=int(env.get("REDIS_PORT", "6379")),
            s3_port=int(env.get("S3_PORT", "7070")),
            cdn_port=int(env.get("CDN_PORT", "6081")),
            simulator_port=int(env.get("SIMULATOR_PORT", "8090")),
            s3_access_key=env.get("S3_ACCESS_KEY", "test"),
            s3_secret_key=env.get("S3_SECRET_KEY", "testsecret"),
            bucket=env.get("S3_BUCKET_NAME", "waste-images"),
            stack_dir=stack_dir,
        )

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def cdn_base(self) -> str:
        return f"http://127.0.0.1:{self.cdn_port}/{self.bucket}"

    @property
    def run_dir(self) -> Path:
        return self.stack_dir / "run"


def require_service(name: str, port: int) -> None:
    """Fail (or skip with STACK_OPTIONAL=1) when a stack service does not answer."""
    if port_open(port):
        return
    reason = f"{name} is not answering on 127.0.0.1:{port}; start the stack with: scripts/stack.sh up"
    if os.environ.get("STACK_OPTIONAL") == "1":
        pytest.skip(reason + " (skipped because STACK_OPTIONAL=1)")
    pytest.fail(reason, pytrace=False)

"""A private three-broker Kafka cluster (``scripts/stack.sh kafka-up`` with ``STACK_KAFKA_BROKERS=3``) and its faults.

Used by the broker-kill test (tests/integration/test_kafka_cluster_stack.py) and ``make chaos`` (tools/chaos.py):
which broker leads most partitions, kill -9 it, bring it back, wait until every replica is in sync again.

    cluster = PrivateCluster.start(Path("/tmp/waste-kafka3"))   # free ports, its own STACK_DIR
    settings = cluster.settings(app_id=...)                      # bootstrap = every broker, replication factor 3
    node = await cluster.busiest_leader(settings)
    cluster.kill(node); cluster.bring_back(); await wait_in_sync(settings)
    cluster.stop()
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from models.settings import Settings
from streams import kafka_security
from tools.kit import free_port
from tools.kit.processes import kill_and_wait_gone

ROOT = Path(__file__).resolve().parents[1]
SHARED_STACK = ROOT / ".stack"
NODES = 3


def stack_env(stack_dir: Path, ports: list[int], controller_ports: list[int]) -> dict[str, str]:
    """The environment that makes ``scripts/stack.sh`` run a three-broker cluster on these ports in ``stack_dir``."""
    return {**os.environ, "STACK_DIR": str(stack_dir), "STACK_KAFKA_BROKERS": str(NODES),
            "KAFKA_PORT": str(ports[0]), "KAFKA_CONTROLLER_PORT": str(controller_ports[0]),
            "KAFKA_PORTS": ",".join(map(str, ports)), "KAFKA_CONTROLLER_PORTS": ",".join(map(str, controller_ports))}


def link_kafka_jars(stack_dir: Path) -> None:
    """Use the shared stack's Kafka jars (read only) instead of resolving them again."""
    lib = stack_dir / "kafka" / "lib"
    if lib.exists() or lib.is_symlink():
        return
    shared = SHARED_STACK / "kafka" / "lib"
    if not (shared / ".stamp").is_file():
        raise RuntimeError(f"{shared} missing: run scripts/stack.sh install")
    lib.parent.mkdir(parents=True, exist_ok=True)
    lib.symlink_to(shared)


def pid_of(stack_dir: Path, node: int) -> int | None:
    """The pid of broker ``node`` (1-based) of the cluster in ``stack_dir`` while it runs."""
    try:
        pid = int((stack_dir / "run" / f"kafka-{node}.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"kafka.Kafka" in cmdline else None


def kill_node(stack_dir: Path, node: int, timeout: float = 30.0) -> None:
    """kill -9 broker ``node`` and wait until its process is gone (reaped by init: it runs in its own session)."""
    pid = pid_of(stack_dir, node)
    if pid is None:
        raise RuntimeError(f"broker {node} of {stack_dir} is not running")
    kill_and_wait_gone(pid, f"broker {node}", timeout)


async def leaders(settings: Settings) -> Counter[int]:
    """How many partitions (of every topic, internal ones included) each broker leads now."""
    admin = AIOKafkaAdminClient(**kafka_security.client_kwargs(settings, "admin"))
    await admin.start()
    try:
        described = await admin.describe_topics(await admin.list_topics())
    finally:
        await admin.close()
    return Counter(p["leader"] for t in described for p in t["partitions"] if p["leader"] >= 0)


async def busiest_leader(settings: Settings) -> tuple[int, Counter[int]]:
    """The broker that leads most partitions, and the leader counts."""
    counts = await leaders(settings)
    return counts.most_common(1)[0][0], counts


async def replicas(settings: Settings, prefix: str = "") -> dict[str, tuple[int, int]]:
    """``topic -> (replicas, fewest in-sync replicas of its partitions)`` for topics starting with ``prefix``."""
    admin = AIOKafkaAdminClient(**kafka_security.client_kwargs(settings, "admin"))
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        described = await admin.describe_topics(names) if names else []
    finally:
        await admin.close()
    return {t["topic"]: (max(len(p["replicas"]) for p in t["partitions"]), min(len(p["isr"]) for p in t["partitions"]))
            for t in described if t["partitions"]}


async def wait_in_sync(settings: Settings, timeout: float = 90.0) -> float:
    """Wait until every partition of every topic has all its replicas in sync again; returns the seconds it took."""
    started = time.monotonic()
    state: dict[str, tuple[int, int]] = {}
    while time.monotonic() < started + timeout:
        try:
            state = await replicas(settings)
        except Exception:  # noqa: BLE001 - a broker coming back may refuse a request or two: ask again
            state = {}
        if state and all(isr == n for n, isr in state.values()):
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    lagging = {t: v for t, v in state.items() if v[0] != v[1]}
    raise TimeoutError(f"replicas not in sync after {timeout}s: {lagging}")


@dataclass
class PrivateCluster:
    """Three brokers of ``scripts/stack.sh`` on free ports with their own STACK_DIR (only Kafka, ACLs and topics)."""

    stack_dir: Path
    ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(NODES)])
    controller_ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(NODES)])

    @property
    def env(self) -> dict[str, str]:
        return stack_env(self.stack_dir, self.ports, self.controller_ports)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    @classmethod
    def start(cls, stack_dir: Path, fresh: bool = True) -> PrivateCluster:
        if fresh:
            shutil.rmtree(stack_dir, ignore_errors=True)
        link_kafka_jars(stack_dir)
        cluster = cls(stack_dir)
        cluster.run("kafka-up")
        return cluster

    def run(self, command: str, timeout: float = 300.0) -> str:
        done = subprocess.run(["bash", "scripts/stack.sh", command], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"stack.sh {command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def settings(self, **overrides: Any) -> Settings:
        """Settings for clients of this cluster: every broker, replication 3, the cluster's credentials file."""
        values: dict[str, Any] = {"app_env": "development", "kafka_bootstrap_servers": self.bootstrap,
                                  "topic_replication_factor": NODES, "stack_dir": str(self.stack_dir), **overrides}
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    def pid(self, node: int) -> int | None:
        return pid_of(self.stack_dir, node)

    def kill(self, node: int) -> None:
        kill_node(self.stack_dir, node)

    def bring_back(self) -> None:
        """Start the brokers that are not running (kafka-up leaves the running ones alone)."""
        self.run("kafka-up")

    def stop(self) -> None:
        self.run("kafka-down", timeout=180.0)

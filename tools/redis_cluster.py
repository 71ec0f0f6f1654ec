"""The private stack's Redis Cluster (``scripts/stack.sh`` with ``STACK_REDIS_CLUSTER=1``) and its master failover.

Used by ``make chaos`` (tools/chaos.py, ``redis_master_failover``): which master holds most keys, kill -9 it, wait
until its replica is promoted (after ``cluster-node-timeout``), bring it back, wait until it has rejoined as a
replica of the promoted node.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from tools.kit.processes import kill_and_wait_gone


@dataclass(frozen=True)
class Node:
    """One line of ``CLUSTER NODES``."""

    id: str
    port: int
    master: bool
    failed: bool
    master_id: str  # the master a replica follows; "-" for a master
    slots: int  # how many slots it serves


def parse_nodes(text: str) -> list[Node]:
    """``CLUSTER NODES``: ``<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges...>``."""
    nodes = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        flags = fields[2].split(",")
        slots = 0
        for r in fields[8:]:
            if r.startswith("["):  # a slot being migrated, not served yet
                continue
            low, _, high = r.partition("-")
            slots += int(high or low) - int(low) + 1
        nodes.append(Node(id=fields[0], port=int(fields[1].split("@")[0].rsplit(":", 1)[1]),
                          master="master" in flags, failed="fail" in flags, master_id=fields[3], slots=slots))
    return nodes


def busiest_master(keys_per_master: dict[int, int]) -> int:
    """The port of the master holding most keys (the lowest port among equals: a run is repeatable)."""
    return min(keys_per_master, key=lambda port: (-keys_per_master[port], port))


def promoted(nodes: list[Node], victim_id: str, replica_ids: set[str]) -> Node | None:
    """The victim's former replica (``replica_ids``, read before the kill) once it is a master serving slots and the
    cluster serves every slot again (None until then)."""
    if sum(n.slots for n in nodes if n.master and not n.failed) < 16384:
        return None
    return next((n for n in nodes if n.id in replica_ids and n.id != victim_id and n.master and not n.failed
                 and n.slots), None)


def _client(port: int) -> Redis:
    return Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=2.0)


async def _ask(port: int, *command: str) -> str:
    """One command's raw reply (``CLUSTER``, ``NODES`` as two words: redis-py leaves the text unparsed)."""
    client = _client(port)
    try:
        return str(await client.execute_command(*command))
    finally:
        await client.aclose()


async def _replication(port: int) -> dict[str, object]:
    client = _client(port)
    try:
        return dict(await client.info("replication"))
    finally:
        await client.aclose()


async def cluster_nodes(ports: list[int], skip: int | None = None) -> list[Node]:
    """``CLUSTER NODES`` as the first node that answers sees it (``skip``: a port known to be down)."""
    for port in ports:
        if port == skip:
            continue
        try:
            return parse_nodes(await _ask(port, "CLUSTER", "NODES"))
        except Exception:  # noqa: BLE001 - a node down or restarting: ask the next
            continue
    raise RuntimeError(f"no node of the Redis Cluster on {ports} answers")


async def keys_per_master(ports: list[int]) -> dict[int, int]:
    """DBSIZE of every master (the private cluster holds the pipeline's keys only)."""
    masters = [n.port for n in await cluster_nodes(ports) if n.master and not n.failed]
    return {port: int(await _ask(port, "DBSIZE")) for port in masters}


def kill_node(stack_dir: Path, port: int, timeout: float = 30.0) -> None:
    """kill -9 the Redis Cluster node on ``port`` and wait until its process is gone (reaped by init)."""
    pid = int((stack_dir / "run" / f"redis-{port}.pid").read_text().strip())
    if b"redis-server" not in Path(f"/proc/{pid}/cmdline").read_bytes():
        raise RuntimeError(f"pid {pid} of redis-{port} is not a redis-server")
    kill_and_wait_gone(pid, f"redis-{port}", timeout)


def wipe_data(stack_dir: Path, port: int) -> None:
    """Delete a stopped node's data (its AOF), keeping ``nodes.conf``: it comes back empty, in the same place of the
    cluster, as a node without persistence would."""
    for path in (stack_dir / "redis-cluster" / str(port)).iterdir():
        if path.name == "nodes.conf":
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


async def wait_promoted(ports: list[int], victim: Node, replica_ids: set[str],
                        timeout: float = 60.0) -> tuple[Node, float]:
    """Wait until one of the killed master's replicas serves its slots; returns it and the seconds it took."""
    started = time.monotonic()
    while time.monotonic() < started + timeout:
        with_victim_gone = await cluster_nodes(ports, skip=victim.port)
        node = promoted(with_victim_gone, victim.id, replica_ids)
        if node is not None:
            return node, time.monotonic() - started
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no replica took over the slots of redis-{victim.port} within {timeout}s")


async def wait_replica_of(port: int, master: Node, timeout: float = 60.0) -> float:
    """Wait until the node on ``port`` follows ``master`` with its link up (a full resync done); returns seconds."""
    started = time.monotonic()
    while time.monotonic() < started + timeout:
        try:
            info = await _replication(port)
        except Exception:  # noqa: BLE001 - still starting: ask again
            info = {}
        if info.get("role") == "slave" and info.get("master_port") == master.port \
                and info.get("master_link_status") == "up":
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise TimeoutError(f"redis-{port} did not rejoin as a replica of redis-{master.port} within {timeout}s")

"""Waiting on conditions with a deadline: a process that answers HTTP, a worker group that answers events and
holds every partition, a counter on a worker's /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

import aiohttp

from models.settings import Settings
from streams import topics
from tools.cost_report import Samples, parse_metrics, total
from tools.kafka_admin import partition_counts
from tools.kit.processes import Proc
from tools.kit.results import PipelineClient, ResultWatcher

T = TypeVar("T")


async def wait_until(check: Callable[[], Awaitable[T]], *, timeout: float, interval: float = 0.1,
                     what: str = "condition") -> T:
    """Poll an async check until it returns a truthy value; AssertionError when the deadline passes first."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_http_ok(url: str, proc: Proc | None = None, timeout: float = 60.0) -> bool:
    """True once ``url`` answers 200; False at the deadline or when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc is not None and not proc.alive():
                return False
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return True
            await asyncio.sleep(0.25)
    return False


def invalid_probe(job_id: str) -> bytes:
    """An event without bucket or key that names its own job: a worker answers it with a failed result."""
    return json.dumps({"job_id": job_id, "probe": True}).encode()


async def wait_until_pipeline_answers(watcher: ResultWatcher | PipelineClient, workers: Proc | Sequence[Proc] = (), *,
                                      probe: Callable[[str], bytes] = invalid_probe, settle: bool = True,
                                      timeout: float = 120.0) -> float:
    """Readiness by behaviour: publish probe events until the pipeline answers one, then (``settle``) until the
    workers hold every partition of every topic they read. Returns the seconds it took.

    The watcher decides what counts as an answer (the bench's counts only its own worker's results); given a
    client, a watcher of its own is opened for the wait. Without ``workers`` (the demo's runs detached), nothing
    is known of their liveness or partitions: the answer alone counts.
    """
    if isinstance(watcher, PipelineClient):
        async with watcher.results() as own:
            return await wait_until_pipeline_answers(own, workers, probe=probe, settle=settle, timeout=timeout)
    group = [workers] if isinstance(workers, Proc) else list(workers)
    started = time.monotonic()
    deadline = started + timeout
    while True:
        for worker in group:
            if not worker.alive():
                raise RuntimeError(f"{worker.name} exited:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the pipeline did not answer within {timeout}s"
                               + "".join(f"\n{w.log_tail()}" for w in group[:1]))
        job_id = f"probe-{uuid.uuid4()}"
        await watcher.publish_raw(job_id.encode(), probe(job_id))
        if not await watcher.unanswered([job_id], timeout=3.0):
            break
    if settle and group:
        await wait_until_partitions_held(watcher.settings, group, max(deadline - time.monotonic(), 5.0))
    return time.monotonic() - started


async def readiness(port: int, http: aiohttp.ClientSession) -> dict[str, object] | None:
    """A worker's /readyz body when it says ready, else None."""
    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        async with http.get(f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(total=3)) as resp:
            body = await resp.json(content_type=None)
            if resp.status == 200 and isinstance(body, dict):
                return body
    return None


async def wait_until_partitions_held(settings: Settings, workers: Sequence[Proc], timeout: float = 120.0) -> float:
    """Every worker ready, in one group generation, and together holding every partition of every topic they read
    exactly once, at the topics' real partition counts: no rebalance left to happen. Returns the seconds it took.

    A topic missing from a worker's metadata when it joined would be read by nobody until a later rebalance.
    """
    expected = await partition_counts(settings, topics.WORKER_SOURCES)
    started = time.monotonic()
    bodies: list[dict[str, object] | None] = []
    async with aiohttp.ClientSession() as http:
        while time.monotonic() - started < timeout:
            for worker in workers:
                if not worker.alive():
                    raise RuntimeError(f"{worker.name} exited:\n{worker.log_tail()}")
            bodies = [await readiness(w.web_port, http) for w in workers if w.web_port]
            if all(bodies) and _whole(bodies, expected):  # type: ignore[arg-type]
                return time.monotonic() - started
            await asyncio.sleep(0.25)
    raise TimeoutError(f"the workers do not hold every partition (expected {expected}): {bodies}\n"
                       f"{workers[0].log_digest()}")


async def wait_until_ports_hold_partitions(settings: Settings, ports: Sequence[int], timeout: float = 120.0) -> None:
    """``wait_until_partitions_held`` for workers known only by their web ports (detached, e.g. the demo's)."""
    expected = await partition_counts(settings, topics.WORKER_SOURCES)
    deadline = time.monotonic() + timeout
    bodies: list[dict[str, object] | None] = []
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            bodies = [await readiness(port, http) for port in ports]
            if all(bodies) and _whole(bodies, expected):  # type: ignore[arg-type]
                return
            await asyncio.sleep(0.25)
    raise TimeoutError(f"the workers on ports {list(ports)} do not share every partition: {bodies}")


def _whole(bodies: Sequence[dict[str, dict[str, object]]], expected: dict[str, int]) -> bool:
    if len({body.get("generation") for body in bodies}) != 1:
        return False
    held: dict[str, list[int]] = {}
    counts = dict(expected)
    for body in bodies:
        for topic, partitions in body["partitions_held"].items():
            held.setdefault(topic, []).extend(partitions)  # type: ignore[arg-type]
            counts[topic] = max(counts.get(topic, 0), body["partition_counts"].get(topic) or 0)  # type: ignore[call-overload]
    # The sources exactly once; a table's changelog may also be held as a standby (TABLE_STANDBY_REPLICAS).
    return all(n > 0 and (sorted(held.get(t, [])) if t in expected else sorted(set(held.get(t, [])))) == list(range(n))
               for t, n in counts.items())


async def worker_metrics(port: int) -> Samples:
    """A worker's Prometheus samples, keyed ``name{label="value",...}``."""
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as resp:
        return parse_metrics(await resp.text())


async def worker_counter(port: int, name: str, **labels: str) -> float:
    """The sum of a worker's samples of ``name`` whose labels include ``labels``."""
    return total(await worker_metrics(port), name, **labels)


async def workers_counter(ports: Iterable[int], name: str, **labels: str) -> float:
    """:func:`worker_counter` summed over workers; one that does not answer counts 0."""
    out = 0.0
    for port in ports:
        with contextlib.suppress(TimeoutError, aiohttp.ClientError):
            out += await worker_counter(port, name, **labels)
    return out

"""Load on the running pipeline: bursts, paced fixed-rate runs, the sustained-rate search, the miss burst.

Timing rules: events are paced by their target send time (open loop: a late event is sent at once, the
schedule is never stretched); the send timestamp is taken right before the producer call; a result's
arrival is when the bench's consumer (subscribed at the end of the results topic before anything is
published) hands it over. Latency = arrival - send. The worker's own ``completed_at`` gives the share of it
spent before the result reached Kafka.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.harness import Arrival, EdgePurger, Pipe, log
from bench.stats import latency_summary, ms, pct, slope
from bench.ws import WsJob, WsProbe


@dataclass
class Sent:
    job_id: str
    key: str
    t: float  # perf_counter right before send
    wall: float  # time.time() right before send
    ws: WsJob | None = None


@dataclass
class RunResult:
    sent: list[Sent]
    arrivals: dict[str, Arrival]
    first_send: float
    last_send: float
    missing: int
    late_sends: int = 0
    foreign: int = 0  # of these jobs, how many were also answered by some other worker on the broker
    extra: dict[str, Any] = field(default_factory=dict)

    def latencies(self) -> list[float]:
        return [self.arrivals[s.job_id].recv - s.t for s in self.sent if s.job_id in self.arrivals]

    def worker_latencies(self) -> list[float]:
        out = []
        for s in self.sent:
            a = self.arrivals.get(s.job_id)
            if a is not None and a.completed_at is not None:
                out.append(a.completed_at - s.wall)
        return out

    def ws_latencies(self) -> list[float]:
        return [s.ws.result_at - s.t for s in self.sent if s.ws is not None and s.ws.result_at is not None]

    def stage_timings(self) -> dict[str, dict[str, float | None]]:
        """p50/p99 of the worker's own ``timings_ms`` per stage (fetch, hash, dedupe, total)."""
        stages: dict[str, list[float]] = {}
        for s in self.sent:
            a = self.arrivals.get(s.job_id)
            if a is None:
                continue
            for name, value in a.timings.items():
                if isinstance(value, int | float) and name != "model_attempts":
                    stages.setdefault(name, []).append(value)
        return {name: {"p50_ms": _round(pct(v, 50)), "p99_ms": _round(pct(v, 99))} for name, v in stages.items()}

    def last_arrival(self) -> float | None:
        times = [self.arrivals[s.job_id].recv for s in self.sent if s.job_id in self.arrivals]
        return max(times) if times else None

    def sources(self) -> dict[str, int]:
        c: collections.Counter[str] = collections.Counter()
        for s in self.sent:
            a = self.arrivals.get(s.job_id)
            if a is not None:
                c[a.source or a.status] += 1
        return dict(c)

    def failed(self) -> int:
        return sum(1 for s in self.sent if (a := self.arrivals.get(s.job_id)) is not None and a.status != "done")

    def cdn_hit_ratio(self) -> float | None:
        got = [a.cdn_cache for s in self.sent if (a := self.arrivals.get(s.job_id)) is not None and a.cdn_cache]
        return round(sum(1 for c in got if c == "hit") / len(got), 3) if got else None

    def backlog_series(self, step: float = 0.5) -> list[tuple[float, int]]:
        """(seconds since the first send, events sent but not answered yet) every ``step`` seconds."""
        sends = sorted(s.t for s in self.sent)
        recvs = sorted(self.arrivals[s.job_id].recv for s in self.sent if s.job_id in self.arrivals)
        end = self.last_send
        out = []
        t = self.first_send
        i = j = 0
        while t <= end + 1e-9:
            while i < len(sends) and sends[i] <= t:
                i += 1
            while j < len(recvs) and recvs[j] <= t:
                j += 1
            out.append((t - self.first_send, i - j))
            t += step
        return out


class Pool:
    """Object keys to publish, cycled round-robin; each key's edge copy is purged once its result is in."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = list(keys)
        self._i = 0

    def next(self) -> str:
        key = self.keys[self._i % len(self.keys)]
        self._i += 1
        return key


class Load:
    def __init__(self, pipe: Pipe, purger: EdgePurger, ws: WsProbe | None = None) -> None:
        self.pipe = pipe
        self.purger = purger
        self.ws = ws
        self._key_of: dict[str, str] = {}
        self.sent_total = 0
        pipe.on_result = self._arrived

    def _arrived(self, job_id: str, arrival: Arrival) -> None:
        key = self._key_of.pop(job_id, None)
        if key is not None:
            self.purger.purge_soon(key)

    @property
    def outstanding(self) -> int:
        """Events sent whose result has not arrived yet (a failed step leaves a backlog behind)."""
        return len(self._key_of)

    async def drain(self, timeout: float) -> int:
        """Wait until every sent event is answered, or the deadline; returns how many are still outstanding."""
        deadline = time.monotonic() + timeout
        while self._key_of and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return len(self._key_of)

    async def burst(self, keys: Sequence[str], timeout: float = 120.0) -> RunResult:
        """Publish one event per key as fast as the producer takes them; wait for every result."""
        sent: list[Sent] = []
        for key in keys:
            job_id = f"bench-{uuid.uuid4().hex}"
            self._key_of[job_id] = key
            value = self.pipe.event(job_id, key)
            wall = time.time()
            t = await self.pipe.send(job_id, value)
            sent.append(Sent(job_id, key, t, wall))
        await self.pipe.flush()
        self.sent_total += len(sent)
        missing = len(await self.pipe.unanswered([s.job_id for s in sent], timeout=timeout))
        arrivals = {s.job_id: self.pipe.arrivals[s.job_id] for s in sent if s.job_id in self.pipe.arrivals}
        return RunResult(sent, arrivals, sent[0].t, sent[-1].t, missing, foreign=self._foreign(sent))

    def _foreign(self, sent: list[Sent]) -> int:
        return sum(1 for s in sent if s.job_id in self.pipe.foreign)

    async def paced(self, pool: Pool, rate: float, seconds: float, *, grace: float = 15.0,
                    with_ws: bool = False) -> RunResult:
        """Publish at ``rate`` events/s for ``seconds`` (open loop), then wait up to ``grace`` for the rest."""
        count = max(1, int(round(rate * seconds)))
        interval = 1.0 / rate
        sent: list[Sent] = []
        late = 0
        ws_lead = 1.0  # the app opens its socket (and asks the API for a job) this long before the upload
        prepared: dict[int, asyncio.Task[WsJob]] = {}
        next_prepare = 0  # index of the next event whose job and socket are to be prepared
        ws = self.ws if with_ws else None
        start = time.perf_counter() + (ws_lead + 0.2 if ws is not None else 0.05)

        async def prepare_ahead(upto: float) -> None:
            nonlocal next_prepare
            while ws is not None and next_prepare < count and start + next_prepare * interval - ws_lead <= upto:
                prepared[next_prepare] = asyncio.create_task(ws.prepare())
                next_prepare += 1

        for i in range(count):
            target = start + i * interval
            while True:
                now = time.perf_counter()
                await prepare_ahead(now)
                if now >= target:
                    break
                await asyncio.sleep(min(target - now, 0.05))
            wsjob: WsJob | None = None
            if ws is not None:
                try:
                    wsjob = await asyncio.wait_for(prepared.pop(i), timeout=10)
                    job_id = wsjob.job_id
                except Exception as exc:  # noqa: BLE001 - the API failing is a finding, not a crash
                    log(f"websocket preparation failed: {type(exc).__name__}: {exc}")
                    wsjob = None
                    job_id = f"bench-{uuid.uuid4().hex}"
            else:
                job_id = f"bench-{uuid.uuid4().hex}"
            key = pool.next()
            self._key_of[job_id] = key
            value = self.pipe.event(job_id, key)
            if time.perf_counter() - target > 0.05:
                late += 1
            wall = time.time()
            t = await self.pipe.send(job_id, value)
            sent.append(Sent(job_id, key, t, wall, wsjob))
        for task in prepared.values():
            task.cancel()
        self.sent_total += len(sent)
        missing = len(await self.pipe.unanswered([s.job_id for s in sent], timeout=grace))
        if ws is not None:
            await ws.finish([s.ws for s in sent if s.ws is not None], timeout=5.0)
        arrivals = {s.job_id: self.pipe.arrivals[s.job_id] for s in sent if s.job_id in self.pipe.arrivals}
        return RunResult(sent, arrivals, sent[0].t, sent[-1].t, missing, late, foreign=self._foreign(sent))


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def summarize_paced(run: RunResult, rate: float) -> dict[str, Any]:
    span = run.last_send - run.first_send
    out: dict[str, Any] = {
        "rate": rate,
        "sent": len(run.sent),
        "achieved_send_rate": round((len(run.sent) - 1) / span, 2) if span > 0 else None,
        "late_sends": run.late_sends,
        "missing": run.missing,
        "failed": run.failed(),
        "foreign_answers": run.foreign,
        "topic": latency_summary(run.latencies()),
        "worker_completed": latency_summary(run.worker_latencies()),
        "worker_stages_ms": run.stage_timings(),
        "sources": run.sources(),
        "cdn_hit_ratio": run.cdn_hit_ratio(),
    }
    if any(s.ws is not None for s in run.sent):
        ws_lat = run.ws_latencies()
        out["ws"] = latency_summary(ws_lat)
        out["ws"]["expected"] = sum(1 for s in run.sent if s.ws is not None)
    return out


def sustained_verdict(run: RunResult, rate: float) -> dict[str, Any]:
    """Did the pipeline keep up? The backlog (sent, not answered) must not grow over the steady part."""
    series = run.backlog_series()
    duration = run.last_send - run.first_send
    steady = [(t, b) for t, b in series if t >= 0.25 * duration]
    growth = slope(steady)  # events per second of wall time
    tail = [b for t, b in series if t >= 0.75 * duration] or [0]
    allowed_growth = max(0.25, 0.02 * rate)
    allowed_backlog = max(5.0, rate * 1.0)  # one second of events in flight
    lat = run.latencies()
    third = max(1, len(lat) // 3)
    p50_first, p50_last = pct(lat[:third], 50), pct(lat[-third:], 50)
    ok = (run.missing == 0 and run.failed() == 0 and growth <= allowed_growth
          and sum(tail) / len(tail) <= allowed_backlog)
    return {
        "rate": rate,
        "seconds": round(duration, 1),
        "ok": ok,
        "backlog_growth_ev_per_s": round(growth, 3),
        "allowed_growth": round(allowed_growth, 3),
        "tail_backlog_mean": round(sum(tail) / len(tail), 1),
        "allowed_backlog": allowed_backlog,
        "max_backlog": max((b for _, b in series), default=0),
        "missing": run.missing,
        "failed": run.failed(),
        "foreign_answers": run.foreign,
        "p50_ms_first_third": ms(p50_first),
        "p50_ms_last_third": ms(p50_last),
        "topic": latency_summary(lat),
        "worker_stages_ms": run.stage_timings(),
        "achieved_send_rate": round((len(run.sent) - 1) / duration, 2) if duration > 0 else None,
        "late_sends": run.late_sends,
    }


def miss_order(photo_keys: Sequence[Sequence[str]], seed: int) -> list[str]:
    """All copies of all photos in one seeded shuffle: a crowd re-uploading the same items at once."""
    keys = [k for copies in photo_keys for k in copies]
    random.Random(seed).shuffle(keys)
    return keys

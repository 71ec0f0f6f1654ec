"""A worker group of one's own on the stack, ready to use: for test fixtures and one-off measurements."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from models.settings import Settings
from tools.kit.processes import Proc, start_worker
from tools.kit.ready import wait_until_pipeline_answers
from tools.kit.results import PipelineClient
from tools.kit.simulator import Simulator


@dataclass
class Pipeline:
    settings: Settings
    client: PipelineClient
    worker: Proc
    simulator: Simulator  # the one its worker calls


@contextlib.contextmanager
def running_pipeline(settings: Settings, name: str = "worker", simulator: Simulator | None = None
                     ) -> Iterator[Pipeline]:
    """A worker of ``settings`` (a new group, started for tests) once it answers and holds every partition.

    The worker is stopped at the end, and so is ``simulator`` when it is a private one. Blocks while it waits:
    for synchronous fixtures (an async test awaits :func:`wait_until_pipeline_answers` itself).
    """
    simulator = simulator or Simulator.of(settings.openai_base_url)
    worker = start_worker(settings, name)
    client = PipelineClient(settings)
    try:
        asyncio.run(wait_until_pipeline_answers(client, worker))
        yield Pipeline(settings, client, worker, simulator)
    finally:
        worker.stop()
        simulator.stop()

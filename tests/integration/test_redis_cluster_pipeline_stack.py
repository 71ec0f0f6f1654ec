"""The whole pipeline with its worker on the Redis Cluster: exact repeats and re-encoded near-duplicates of a few
photos, sent at once, cost one model call per photo and answer every job once.

Runs in the ``worker_restart`` session (scripts/test.sh): its worker is in a group of its own, which would also
answer the other tests' events. The model is a private simulator, so the calls counted are this test's alone.
"""

from __future__ import annotations

import asyncio
import collections
import io
import uuid

import pytest
from PIL import Image

from models.records import CacheSource, JobStatus
from models.settings import Settings
from tests import samples
from tools.kit import PipelineClient, Simulator, free_port, start_worker, wait_until_pipeline_answers

pytestmark = [pytest.mark.stack, pytest.mark.worker_restart]

PHOTOS = 6


def reencoded(jpeg: bytes, *, quality: int, scale: float) -> bytes:
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    image = image.resize((int(image.width * scale), int(image.height * scale)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


async def test_a_worker_on_the_redis_cluster_pays_once_per_photo(stack_redis_cluster_url: str) -> None:
    session = uuid.uuid4().hex[:8]
    sim = Simulator.start(SIM_LATENCY_MS="500")
    settings = Settings(_env_file=None, app_id=f"waste-cluster-{session}",  # type: ignore[call-arg]
                        prompt_version=f"cluster-{session}", worker_web_port=free_port(),
                        openai_base_url=f"{sim.url}/v1", redis_url=stack_redis_cluster_url)
    client = PipelineClient(settings)
    worker = start_worker(settings, name="cluster-worker")
    try:
        await wait_until_pipeline_answers(client, worker)
        originals = [samples.photo_bytes(350 + i) for i in range(PHOTOS)]
        # Each photo as it is (twice), re-encoded at quality 70, and at 80% of its size: none byte-identical.
        blobs = [b for o in originals for b in (o, o, reencoded(o, quality=70, scale=1.0),
                                                 reencoded(o, quality=85, scale=0.8))]
        keys = await client.upload_many(blobs)
        async with client.results() as watcher:
            # The originals first, then their copies: the copies find the answers (or the calls under way).
            first = [await watcher.publish(k) for k in keys[::4]]
            rest = list(await asyncio.gather(*(watcher.publish(k) for i, k in enumerate(keys) if i % 4)))
            await watcher.wait_for(first + rest, timeout=120)
            await watcher.drain(2.0)
        stats = await sim.request("GET", "/_sim/stats")
    finally:
        worker.stop()
        sim.stop()
    own = {job: [r for r in watcher.received[job] if r.cache and r.cache.model_version == settings.model_version]
           for job in first + rest}
    assert all(len(rs) == 1 for rs in own.values()), "a job was not answered exactly once"
    results = [rs[0] for rs in own.values()]
    assert all(r.status is JobStatus.DONE for r in results)
    sources = collections.Counter(r.cache.source for r in results)  # type: ignore[union-attr]
    assert stats["ok"] == PHOTOS, (stats, sources)
    # The re-encodes were answered through the near-duplicate index on the cluster (or a call under way).
    assert sources[CacheSource.NEAR] + sources[CacheSource.INFLIGHT] >= PHOTOS, sources

"""The reframed tier on the real stack: a photo is paid for once, and its crop, rotation, mirror image and
letterboxed screenshot (pHash misses all) are answered from the cache with ``cache.source = "reframed"``; a
different photo of the same board pays for its own call.

One worker (a consumer group of its own, the tier on, a prompt version of its own so its cache and its reframed
index start empty) with a private simulator. Every worker group on the broker answers every event and writes
the same cache keys, so the test runs in the session where no other group runs (marker ``isolated``, see
scripts/test.sh); results are still told apart by model version (``own_result``).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import pytest
from PIL import Image

from models.records import AnalysisResult, JobStatus
from models.settings import Settings
from streams.imaging import hamming_distance
from tests.integration.private_stack import own_result
from tools.evaluate_reframed import VARIANTS
from tools.kit import Pipeline, Simulator, free_port, running_pipeline
from tools.photos import sample_photos

pytestmark = [pytest.mark.stack, pytest.mark.isolated]

# (variant, suffix, content type): the screenshot is a PNG, as phones save them.
REFRAMED = (("crop5o", ".jpg", "image/jpeg"), ("rot-3", ".jpg", "image/jpeg"), ("mirror", ".jpg", "image/jpeg"),
            ("screenshot-dark", ".png", "image/png"), ("pad10", ".jpg", "image/jpeg"))


@pytest.fixture(scope="module")
def reframed_worker() -> Iterator[Pipeline]:
    sim = Simulator.start()
    session = uuid.uuid4().hex[:8]
    settings = Settings(_env_file=None, app_id=f"waste-reframed-{session}",  # type: ignore[call-arg]
                        prompt_version=f"reframed-{session}", worker_web_port=free_port(),
                        openai_base_url=f"{sim.url}/v1", reframed_match=True, vision_backoff_base_seconds=0.05)
    with running_pipeline(settings, "worker-reframed", sim) as running:
        yield running


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


async def _send(rw: Pipeline, data: bytes, suffix: str = ".jpg", content_type: str = "image/jpeg"
                ) -> AnalysisResult:
    key = await rw.client.upload(data, suffix=suffix, content_type=content_type)
    async with rw.client.results() as watcher:
        job_id = await watcher.publish(key)
        result = await own_result(watcher, job_id, rw.settings, timeout=120)
    assert result.status is JobStatus.DONE, result
    return result


async def test_reframed_copies_are_answered_from_the_cache_without_a_model_call(reframed_worker) -> None:  # type: ignore[no-untyped-def]
    trashnet = [p for p in sample_photos() if p.name.startswith("trashnet_")]
    # Mirrored: the session's other tests upload the sample photos themselves (another group's cache, but the
    # same bytes); this keeps the test's photo its own in any case.
    image = Image.open(trashnet[11]).convert("RGB").transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    original = _jpeg(image)
    first = await _send(reframed_worker, original)
    assert first.cache is not None and first.cache.source.value == "model", first.cache
    image = Image.open(io.BytesIO(original)).convert("RGB")
    for variant, suffix, content_type in REFRAMED:
        result = await _send(reframed_worker, VARIANTS[variant](image), suffix, content_type)
        cache = result.cache
        assert cache is not None
        assert hamming_distance(cache.phash, first.cache.phash) > 12, variant  # both pHash tiers missed
        assert cache.source.value == "reframed" and cache.hit, (variant, cache)
        assert cache.matched_phash == first.cache.phash and cache.reused_job_id == first.job_id, (variant, cache)
        assert cache.check is not None and cache.check.startswith("orb+ransac inliers="), cache
        assert result.classification == first.classification and result.answered_by == first.answered_by

    # A different photo on the same white board and in the same light pays for its own call.
    other = await _send(reframed_worker, _jpeg(Image.open(trashnet[19]).convert("RGB")
                                               .transpose(Image.Transpose.FLIP_TOP_BOTTOM)))
    assert other.cache is not None and other.cache.source.value == "model", other.cache

"""The reframed tier in the dedupe and classify steps (no broker, no Redis: the in-memory index).

A photo is paid for once; its crop, rotation, mirror image and letterboxed screenshot (each a pHash miss) are
answered from its cached result with ``cache.source = "reframed"`` and the check that matched; a different photo
on the same board pays for its own call; the tier switched off pays for every reframed copy.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from PIL import Image

from agents.classify import answer_request
from agents.dedupe import deduplicate
from models.records import FetchInfo, FetchSource, ImageHashed, VisionRequest
from streams.imaging import content_digest, hamming_distance, hash_image
from tests.agents.conftest import Harness
from tools.evaluate_reframed import VARIANTS
from tools.photos import sample_photos

TRASHNET = [p for p in sample_photos() if p.name.startswith("trashnet_")]


def _jpeg(path) -> bytes:  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    Image.open(path).convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


@pytest.fixture
def tier_on(harness: Harness) -> Callable[..., object]:
    """A worker context with other settings over the same fakes and tables."""
    return harness.reconfigure


def upload(h: Harness, job_id: str, data: bytes) -> ImageHashed:
    """What fetch_hash would send for ``data`` stored under the job's key."""
    key = f"u/{job_id}.jpg"
    h.fetcher.objects[key] = data
    return ImageHashed(job_id=job_id, bucket="b", key=key, phash=hash_image(data, max_pixels=50_000_000).phash,
                       image_url=f"http://cdn/{key}", fetch=FetchInfo(source=FetchSource.CDN, bytes=len(data)),
                       received_at=datetime.now(UTC), sha256=content_digest(data))


async def run_requests(h: Harness) -> None:
    while h.requests.messages:
        _, value = h.requests.messages.pop(0)
        await answer_request(h.ctx, VisionRequest.model_validate_json(value))


async def test_reframed_copies_are_answered_from_the_photos_cached_result(harness: Harness, tier_on) -> None:  # type: ignore[no-untyped-def]
    tier_on(reframed_match=True)
    original = _jpeg(TRASHNET[5])
    first = upload(harness, "first", original)
    await deduplicate(harness.ctx, first)
    request = VisionRequest.model_validate_json(harness.requests.messages[0][1])
    assert request.reframed_features  # computed by the lookup, indexed by classify when the call succeeds
    await run_requests(harness)
    assert len(harness.vision.calls) == 1
    image = Image.open(io.BytesIO(original)).convert("RGB")
    for variant in ("crop5o", "rot-3", "mirror", "screenshot-dark"):
        job = upload(harness, variant, VARIANTS[variant](image))
        assert hamming_distance(job.phash, first.phash) > 12  # a miss for both pHash tiers
        await deduplicate(harness.ctx, job)
        result = harness.results_by_job()[variant]
        assert result["status"] == "done", result
        cache = result["cache"]
        assert cache["source"] == "reframed" and cache["hit"] is True, cache
        assert cache["matched_phash"] == first.phash and cache["reused_job_id"] == "first"
        assert cache["check"].startswith("orb+ransac inliers=") and "correlation=" in cache["check"]
        assert result["classification"] == harness.results_by_job()["first"]["classification"]
    assert len(harness.vision.calls) == 1 and not harness.requests.messages


async def test_a_different_photo_on_the_same_board_pays_for_its_call(harness: Harness, tier_on) -> None:  # type: ignore[no-untyped-def]
    tier_on(reframed_match=True)
    await deduplicate(harness.ctx, upload(harness, "first", _jpeg(TRASHNET[5])))
    await run_requests(harness)
    for n, path in enumerate(TRASHNET[6:10]):
        await deduplicate(harness.ctx, upload(harness, f"other-{n}", _jpeg(path)))
        await run_requests(harness)
        assert harness.results_by_job()[f"other-{n}"]["cache"]["source"] == "model"
    assert len(harness.vision.calls) == 5


async def test_with_the_tier_off_a_reframed_copy_pays(harness: Harness, tier_on) -> None:  # type: ignore[no-untyped-def]
    tier_on(reframed_match=False)
    original = _jpeg(TRASHNET[5])
    await deduplicate(harness.ctx, upload(harness, "first", original))
    await run_requests(harness)
    mirror = VARIANTS["mirror"](Image.open(io.BytesIO(original)).convert("RGB"))
    await deduplicate(harness.ctx, upload(harness, "mirror", mirror))
    assert VisionRequest.model_validate_json(harness.requests.messages[0][1]).reframed_features is None
    await run_requests(harness)
    assert harness.results_by_job()["mirror"]["cache"]["source"] == "model" and len(harness.vision.calls) == 2

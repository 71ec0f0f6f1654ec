"""Every hostile file of the security suite is refused by the imaging guards, from its header, with its code."""

from __future__ import annotations

import resource

import pytest

from models.errors import PipelineError
from models.settings import Settings
from streams.imaging import ImageLimits, check_declared_type, hash_image, make_thumbnail
from tests.security import hostile

LIMITS = ImageLimits.from_settings(Settings(_env_file=None, app_env="development"))  # type: ignore[call-arg]
CASES = [c for c in hostile.CASES if c.name != "over-max-bytes"]  # that one is refused by the fetcher


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_file_is_refused_with_its_code(case: hostile.Hostile) -> None:
    data = case.make()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for step in (lambda: check_declared_type(data, case.content_type),
                 lambda: hash_image(data, max_pixels=LIMITS.max_pixels, limits=LIMITS),
                 lambda: make_thumbnail(data, max_pixels=LIMITS.max_pixels, limits=LIMITS)):
        try:
            step()
        except PipelineError as exc:
            assert exc.code is case.code, exc
            break
    else:
        pytest.fail(f"{case.name} was accepted")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, f"{case.name} raised the peak RSS by {grown_mb:.0f} MB"


def test_the_largest_accepted_png_is_hashed_from_a_reduced_copy() -> None:
    side = 4096  # MAX_FULL_DECODE_PIXELS
    data = hostile.png_bomb(side, side, color_type=6)
    assert len(hash_image(data, max_pixels=LIMITS.max_pixels, limits=LIMITS).phash) == 64
    assert len(make_thumbnail(data, max_pixels=LIMITS.max_pixels, limits=LIMITS)) < 100_000


def test_honest_photos_pass_the_guards() -> None:
    from tests import samples

    for path in samples.photos(limit=10):
        data = path.read_bytes()
        check_declared_type(data, "image/jpeg")
        assert len(hash_image(data, max_pixels=LIMITS.max_pixels, limits=LIMITS).phash) == 64

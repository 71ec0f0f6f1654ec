"""The reframed matcher's decisions (streams/reframed.py) on real photos: crops, small rotations, mirror images and
letterboxed screenshots of a photo are accepted against it; different photos on the same board and in the same
light are refused; a photo turned by a quarter stays another photo (tests and the bench use turned photos as
distinct ones)."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageOps

from streams import reframed
from streams.imaging import ImageLimits
from tests.doubles import LocalReframedIndex
from tests.reframed_index_behaviour import CAP, ReframedIndexBehaviour
from tools.evaluate_reframed import VARIANTS, crop, rotate, screenshot
from tools.photos import sample_photos

LIMITS = ImageLimits(max_pixels=50_000_000)
RULE = reframed.Rule()
# Four TrashNet photos (one white board, one light) and two RealWaste photos (shared backgrounds).
TRASHNET = [p for p in sample_photos() if p.name.startswith("trashnet_")][::12][:4]
REALWASTE = [p for p in sample_photos() if p.name.startswith("realwaste")][::10][:2]
PHOTOS = TRASHNET + REALWASTE
REFRAMED = ("crop1c", "crop5c", "crop5o", "rot+1", "rot-3", "rot+5", "mirror", "mirror-crop3", "screenshot-dark",
            "screenshot-app", "pad10")


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="module")
def originals() -> list[tuple[Image.Image, reframed.Query, reframed.Features]]:
    out = []
    for path in PHOTOS:
        image = Image.open(io.BytesIO(_jpeg(Image.open(path)))).convert("RGB")
        query, stored = reframed.features_of_bytes(_jpeg(image), limits=LIMITS)
        out.append((image, query, reframed.unpack(reframed.pack(stored))))
    return out


def _query(data: bytes) -> reframed.Query:
    return reframed.features_of_bytes(data, limits=LIMITS)[0]


@pytest.mark.parametrize("variant", REFRAMED)
def test_reframed_copies_of_a_photo_are_accepted(originals, variant: str) -> None:  # type: ignore[no-untyped-def]
    for image, _, stored in originals:
        verdict = reframed.verify(_query(VARIANTS[variant](image)), stored, RULE)
        assert verdict.accepted, verdict
        assert verdict.inliers >= RULE.min_inliers and verdict.correlation >= RULE.min_correlation
        assert verdict.mirrored == variant.startswith("mirror")


def test_different_photos_on_the_same_board_are_refused(originals) -> None:  # type: ignore[no-untyped-def]
    for i, (image, query, _) in enumerate(originals):
        lookalikes = [query, _query(VARIANTS["crop3c"](image)), _query(VARIANTS["mirror"](image))]
        for j, (_, _, stored) in enumerate(originals):
            if i != j:
                for q in lookalikes:
                    verdict = reframed.verify(q, stored, RULE)
                    assert not verdict.accepted, (PHOTOS[i].name, PHOTOS[j].name, verdict)


def test_the_pixel_check_refuses_what_the_geometry_alone_would_accept(originals) -> None:  # type: ignore[no-untyped-def]
    """Same geometry, other pixels: the photo's keypoints with a different picture's thumbnail are refused."""
    image, _, stored = originals[0]
    other = originals[1][2]
    forged = reframed.Features(stored.points, stored.descriptors, stored.width, stored.height, other.thumb)
    query = _query(VARIANTS["crop3c"](image))
    assert reframed.verify(query, stored, RULE).accepted
    verdict = reframed.verify(query, forged, RULE)
    assert not verdict.accepted and verdict.reason == "pixels disagree", verdict


def test_a_quarter_turn_is_another_photo(originals) -> None:  # type: ignore[no-untyped-def]
    image, _, stored = originals[0]
    verdict = reframed.verify(_query(_jpeg(image.transpose(Image.Transpose.ROTATE_90))), stored, RULE)
    assert not verdict.accepted and verdict.reason in ("implausible transform", "too few inliers",
                                                       "too few matches"), verdict


def test_a_rotation_beyond_the_rule_is_refused(originals) -> None:  # type: ignore[no-untyped-def]
    image, _, stored = originals[0]
    query = _query(_jpeg(rotate(image, 5)))
    assert reframed.verify(query, stored, RULE).accepted
    verdict = reframed.verify(query, stored, reframed.Rule(max_angle_degrees=3))
    assert not verdict.accepted and verdict.reason == "implausible transform"


def test_the_frame_of_a_screenshot_is_trimmed(originals) -> None:  # type: ignore[no-untyped-def]
    image = originals[0][0]
    grey = reframed.decode_grey(_jpeg(screenshot(image, dark=False)), limits=LIMITS)
    trimmed = reframed.trim_frame(grey)
    assert abs(trimmed.shape[0] / trimmed.shape[1] - image.height / image.width) < 0.03
    padded = reframed.trim_frame(reframed.decode_grey(_jpeg(ImageOps.expand(image, 60, (255, 255, 255))),
                                                      limits=LIMITS))
    assert abs(padded.shape[0] / padded.shape[1] - image.height / image.width) < 0.03


def test_packed_features_round_trip_and_stay_small(originals) -> None:  # type: ignore[no-untyped-def]
    image = originals[0][0]
    stored = reframed.stored_features(reframed.decode_grey(_jpeg(crop(image, 0.02, centred=True)), limits=LIMITS))
    blob = reframed.pack(stored)
    back = reframed.unpack(blob)
    assert len(blob) < 8000
    assert (back.descriptors == stored.descriptors).all() and (back.thumb == stored.thumb).all()
    assert abs(back.points - stored.points).max() <= 1 / 64
    assert (back.width, back.height) == (stored.width, stored.height)


class TestLocalReframedIndex(ReframedIndexBehaviour):
    """The behaviour suite every reframed index passes (tests/reframed_index_behaviour.py), on the double."""

    @pytest.fixture
    def index(self) -> LocalReframedIndex:
        return LocalReframedIndex(ttl_seconds=60, word_cap=CAP)

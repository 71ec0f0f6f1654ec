"""The fast hashing path: agrees with the original design's full-decode pHash, and refuses bad images clearly."""

from __future__ import annotations

import io

import pytest

from models.errors import ErrorCode, PipelineError
from streams.imaging import (
    THUMBNAIL_MAX_PX,
    content_digest,
    full_decode_phash,
    hamming_distance,
    hash_image,
    make_thumbnail,
)
from tests import samples

MAX_PIXELS = 50_000_000


def test_draft_hash_agrees_with_full_decode_on_every_sample_photo() -> None:
    distances = []
    for path in samples.photos():
        data = path.read_bytes()
        distances.append(hamming_distance(hash_image(data, max_pixels=MAX_PIXELS).phash, full_decode_phash(data)))
    assert len(distances) == len(samples.photos()) >= 60
    assert max(distances) <= 6, f"worst disagreement {max(distances)} bits"


def test_hash_is_256_bits_hex() -> None:
    digest = hash_image(samples.photo_bytes(), max_pixels=MAX_PIXELS).phash
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_exif_rotated_photo_hashes_like_the_upright_one() -> None:
    upright = samples.photo_bytes(3)
    rotated = samples.exif_rotated(upright)
    a = hash_image(upright, max_pixels=MAX_PIXELS).phash
    b = hash_image(rotated, max_pixels=MAX_PIXELS).phash
    assert hamming_distance(a, b) <= 8


def test_thumbnail_is_a_small_upright_jpeg() -> None:
    from PIL import Image

    with Image.open(io.BytesIO(samples.photo_bytes())) as photo:
        landscape = photo.convert("RGB").crop((0, 0, photo.width, photo.height * 3 // 5))
        out = io.BytesIO()
        landscape.save(out, format="JPEG", quality=90)
    upright = out.getvalue()
    for data in (upright, samples.exif_rotated(upright)):
        jpeg = make_thumbnail(data, max_pixels=MAX_PIXELS)
        assert jpeg[:2] == b"\xff\xd8" and len(jpeg) < 120_000
        with Image.open(io.BytesIO(jpeg)) as thumb, Image.open(io.BytesIO(upright)) as original:
            assert max(thumb.size) <= THUMBNAIL_MAX_PX and original.width != original.height
            # EXIF orientation applied: the rotated upload's thumbnail has the upright photo's aspect
            assert (thumb.width >= thumb.height) == (original.width >= original.height)


def test_the_content_digest_names_exact_bytes_only() -> None:
    data = samples.photo_bytes()
    assert content_digest(data) == content_digest(bytes(data)) and len(content_digest(data)) == 64
    assert content_digest(data) != content_digest(data + b"\0")


@pytest.mark.parametrize(
    "make",
    [samples.cmyk_jpeg, samples.png_16bit, samples.png_alpha],
    ids=["cmyk-jpeg", "png-16bit", "png-alpha"],
)
def test_unusual_but_valid_images_hash(make) -> None:  # type: ignore[no-untyped-def]
    assert len(hash_image(make(samples.photo_bytes(5)), max_pixels=MAX_PIXELS).phash) == 64


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", ErrorCode.IMAGE_UNDECODABLE),
        (samples.truncated_jpeg(samples.photo_bytes(1)), ErrorCode.IMAGE_UNDECODABLE),
        (samples.not_an_image(), ErrorCode.IMAGE_UNDECODABLE),
        (samples.decompression_bomb_png(), ErrorCode.IMAGE_TOO_LARGE),
        (samples.absurd_dimensions_jpeg(), ErrorCode.IMAGE_TOO_LARGE),
        (samples.animated_gif(samples.photo_bytes(5)), ErrorCode.UNSUPPORTED_FORMAT),
    ],
    ids=["empty", "truncated-jpeg", "not-an-image", "decompression-bomb", "absurd-dimensions", "gif"],
)
def test_bad_images_fail_with_a_stable_code(data: bytes, code: ErrorCode) -> None:
    with pytest.raises(PipelineError) as info:
        hash_image(data, max_pixels=MAX_PIXELS)
    assert info.value.code is code


def test_colour_jpegs_are_decoded_to_grey_with_the_hash_of_the_rgb_decode() -> None:
    """hash_image drafts a colour JPEG straight to its luma (pHash reads grey): the hashes stay those of the RGB
    draft decode + conversion, within 4 bits on every sample photo; a CMYK JPEG is left to the RGB path."""
    import imagehash
    from PIL import Image

    from streams.imaging import _decode_reduced, _upright

    worst = 0
    for path in samples.photos():
        data = path.read_bytes()
        rgb = _upright(_decode_reduced(Image.open(io.BytesIO(data)), 256))
        worst = max(worst, hamming_distance(hash_image(data, max_pixels=MAX_PIXELS).phash,
                                            str(imagehash.phash(rgb, hash_size=16))))
    assert worst <= 4, f"worst disagreement {worst} bits"
    assert _decode_reduced(Image.open(io.BytesIO(samples.photo_bytes())), 256, grey=True).mode == "L"
    cmyk = Image.open(io.BytesIO(samples.cmyk_jpeg(samples.photo_bytes())))
    assert _decode_reduced(cmyk, 256, grey=True).mode == "CMYK"

"""HEIC/HEIF and AVIF, the formats phones upload as they are: the same pHash as the JPEG (within a few bits),
upright by their own rotation or EXIF, and the same header limits as every other format."""

from __future__ import annotations

import functools
import io

import pytest
from PIL import Image

from models.errors import ErrorCode, PipelineError
from streams.imaging import ImageLimits, check_declared_type, hamming_distance, hash_image, make_thumbnail
from tests import samples

FORMATS = ("HEIF", "AVIF")
LIMITS = ImageLimits(max_pixels=50_000_000)


def encode(image: Image.Image, fmt: str, **kw: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kw)
    return out.getvalue()


@functools.lru_cache(maxsize=8)
def photo(index: int) -> Image.Image:
    return Image.open(io.BytesIO(samples.photo_bytes(index))).convert("RGB")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("index", [0, 30, 60])
def test_a_phone_format_hashes_like_the_jpeg(fmt: str, index: int) -> None:
    image = photo(index)
    jpeg = hash_image(encode(image, "JPEG", quality=92), max_pixels=LIMITS.max_pixels)
    other = hash_image(encode(image, fmt, quality=75), max_pixels=LIMITS.max_pixels)
    assert other.format == fmt
    assert hamming_distance(jpeg.phash, other.phash) <= 6  # measured 0-4 bits; the near tier matches within 12


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_sideways_photo_with_exif_orientation_hashes_upright(fmt: str) -> None:
    image = photo(5)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display, as phones store it
    sideways = encode(image.transpose(Image.Transpose.ROTATE_90), fmt, exif=exif.tobytes(), quality=80)
    upright = hash_image(encode(image, "JPEG", quality=92), max_pixels=LIMITS.max_pixels)
    assert hamming_distance(hash_image(sideways, max_pixels=LIMITS.max_pixels).phash, upright.phash) <= 6


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_model_gets_a_small_jpeg_of_it(fmt: str) -> None:
    thumbnail = Image.open(io.BytesIO(make_thumbnail(encode(photo(7), fmt), max_pixels=LIMITS.max_pixels)))
    assert thumbnail.format == "JPEG" and max(thumbnail.size) <= 512


@pytest.mark.parametrize("fmt", FORMATS)
def test_header_limits_apply_before_any_decode(fmt: str) -> None:
    narrow = encode(Image.new("RGB", (40, 400), "white"), fmt)
    with pytest.raises(PipelineError) as err:
        hash_image(narrow, max_pixels=LIMITS.max_pixels)
    assert err.value.code is ErrorCode.IMAGE_REFUSED  # aspect ratio 10:1
    small_ceiling = ImageLimits(max_pixels=LIMITS.max_pixels, max_full_decode_pixels=100 * 100)
    with pytest.raises(PipelineError) as err:
        hash_image(encode(photo(9).resize((200, 200)), fmt), max_pixels=LIMITS.max_pixels, limits=small_ceiling)
    assert err.value.code is ErrorCode.IMAGE_TOO_LARGE  # decoded whole, so it gets the full-decode ceiling


def test_declared_type_must_match_the_bytes() -> None:
    heic, avif = encode(photo(11).resize((64, 64)), "HEIF"), encode(photo(11).resize((64, 64)), "AVIF")
    check_declared_type(heic, "image/heic")
    check_declared_type(avif, "image/avif")
    for data, declared in ((heic, "image/jpeg"), (avif, "image/heic"), (samples.photo_bytes(1), "image/avif")):
        with pytest.raises(PipelineError) as err:
            check_declared_type(data, declared)
        assert err.value.code is ErrorCode.IMAGE_REFUSED

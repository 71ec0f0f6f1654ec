"""The polyglot guard looks where a document hides (metadata, bytes after the image), never into the compressed
pixels: megabytes of entropy-coded data spell "<img " by chance, and an honest photo must not be refused for it."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from models.errors import ErrorCode, PipelineError
from streams.imaging import hash_image
from tests import samples

MAX_PIXELS = 50_000_000


def with_markup_in_the_scan_data(jpeg: bytes, markup: bytes) -> bytes:
    sos = jpeg.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(jpeg[sos + 2:sos + 4], "big")  # the entropy-coded data begins here
    middle = start + (len(jpeg) - start) // 2
    return jpeg[:middle] + markup + jpeg[middle:]


@pytest.mark.parametrize("markup", [b"<img ", b"<META/", b"<svg>", b"<script>"])
def test_markup_by_chance_in_the_pixels_is_not_a_polyglot(markup: bytes) -> None:
    data = with_markup_in_the_scan_data(samples.photo_bytes(2), markup)
    try:
        hash_image(data, max_pixels=MAX_PIXELS)
    except PipelineError as exc:  # the pixels are garbled now; anything but "refused as a polyglot" is fine
        assert exc.code is not ErrorCode.IMAGE_REFUSED, exc


def test_markup_after_the_image_or_in_its_metadata_is_refused() -> None:
    photo = samples.photo_bytes(2)
    out = io.BytesIO()
    Image.open(io.BytesIO(photo)).save(out, "JPEG", comment=b"<script>alert(1)</script>")
    for data in (photo + b"<html><script>alert(1)</script></html>", out.getvalue()):
        with pytest.raises(PipelineError) as err:
            hash_image(data, max_pixels=MAX_PIXELS)
        assert err.value.code is ErrorCode.IMAGE_REFUSED

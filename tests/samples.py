"""Real photos from samples/waste (the set the repository ships) and hostile or unusual images made from them.

``WASTE_DATA_DIR`` points the tests at another folder of photos (any layout; images found by extension).
"""

from __future__ import annotations

import functools
import io
import os
import struct
import zlib
from pathlib import Path

from PIL import Image

from tools.photos import data_dir, distinct_photo, sample_photos

DATA_DIR = data_dir()


def photos(limit: int | None = None) -> list[Path]:
    files = sample_photos(DATA_DIR)
    # Spread the pick over the class folders instead of taking the first folder only.
    if limit is not None:
        step = max(1, len(files) // limit)
        files = files[::step][:limit]
    return files


@functools.lru_cache(maxsize=512)
def photo_bytes(index: int = 0) -> bytes:
    """Photo ``index``: different indices are different photos to the pipeline (no two near-duplicates).

    Tests pick their own indices so that no test's photo is cached by another test of the session. Past the
    folder's photo count come the photos turned by quarters (``tools.photos.distinct_photo``): the shipped 90
    give 360.
    """
    return distinct_photo(photos(), index)


def _encode(image: Image.Image, fmt: str, **kw: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kw)
    return out.getvalue()


def exif_rotated(jpeg: bytes) -> bytes:
    """The same photo stored sideways with EXIF orientation 6 (rotate 90 CW to display), as phones do."""
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    stored = image.transpose(Image.Transpose.ROTATE_90)  # what the sensor wrote
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def cmyk_jpeg(jpeg: bytes) -> bytes:
    return _encode(Image.open(io.BytesIO(jpeg)).convert("CMYK"), "JPEG", quality=90)


def png_16bit(jpeg: bytes) -> bytes:
    grey = Image.open(io.BytesIO(jpeg)).convert("I")
    return _encode(grey.point(lambda v: v * 256).convert("I;16"), "PNG")


def png_alpha(jpeg: bytes) -> bytes:
    image = Image.open(io.BytesIO(jpeg)).convert("RGBA")
    image.putalpha(128)
    return _encode(image, "PNG")


def animated_gif(jpeg: bytes) -> bytes:
    first = Image.open(io.BytesIO(jpeg)).convert("RGB")
    second = first.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return _encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)


def truncated_jpeg(jpeg: bytes) -> bytes:
    return jpeg[: len(jpeg) // 3]


def not_an_image() -> bytes:
    return b"%PDF-1.4\n% definitely not a photo\n" + os.urandom(512)


def decompression_bomb_png(side: int = 40_000) -> bytes:
    """A few KB of PNG that declares side x side pixels (1.6 gigapixels at 40000): all zeros, compresses to nothing."""
    raw_row = b"\x00" + b"\x00" * side  # filter byte + greyscale row
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(raw_row) for _ in range(64)) + compressor.flush()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def absurd_dimensions_jpeg() -> bytes:
    """A valid tiny JPEG whose header claims 65000 x 65000 pixels (SOF dimensions patched)."""
    data = bytearray(_encode(Image.new("RGB", (8, 8), "white"), "JPEG"))
    i = 2
    while i < len(data):
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC2):
            data[i + 5 : i + 9] = struct.pack(">HH", 65000, 65000)
            break
        i += 2 + length
    return bytes(data)

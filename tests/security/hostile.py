"""Hostile image files, made in memory: decompression bombs of every shape, truncations, oversized or deep
metadata, animations with thousands of frames, progressive JPEGs with hundreds of scans, polyglots, wrong types.

Each case names the content type it is uploaded with and the error code the worker must answer with. Bombs are
real (their compressed data decodes to the declared size) where that stays small to make; the others declare
their size in the header only, which is all the worker may look at before refusing them.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from PIL import Image

from models.errors import ErrorCode


@dataclass(frozen=True)
class Hostile:
    name: str
    make: Callable[[], bytes]
    content_type: str | None
    code: ErrorCode
    suffix: str = ".jpg"


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int, *, rows: int | None = None, extra: list[bytes] | None = None,
             color_type: int = 0) -> bytes:
    """A PNG of ``width`` x ``height`` (grey, or ``color_type``) whose IDAT holds ``rows`` rows of zeros (all by
    default: a real bomb), compressed as it is streamed so making it costs no memory."""
    channels = {0: 1, 2: 3, 6: 4}[color_type]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + width * channels)
    left = height if rows is None else rows
    parts: list[bytes] = []
    batch = max(1, (1 << 20) // len(row))
    block = row * batch
    while left > 0:
        n = min(batch, left)
        parts.append(compressor.compress(block if n == batch else row * n))
        left -= n
    parts.append(compressor.flush())
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + b"".join(extra or [])
            + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b""))


@cache
def photo(seed: int = 0, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A small photo-like image (gradients and shapes) that differs per seed."""
    from PIL import ImageDraw

    w, h = size
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(image)
    for i in range(6):
        x, y = (seed * 97 + i * 131) % w, (seed * 53 + i * 71) % h
        draw.ellipse((x, y, x + w // 4, y + h // 4), fill=((seed * 40 + i * 30) % 256, (i * 80) % 256, 120))
    return image


def encode(image: Image.Image, fmt: str, **kw: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kw)
    return out.getvalue()


def jpeg(seed: int = 0, **kw: object) -> bytes:
    return encode(photo(seed), "JPEG", quality=85, **kw)


def _patch_sof(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the frame header's size (SOF0/SOF2): the header declares it, no pixel is added."""
    for sof in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(sof)
        if at > 0:
            return data[:at + 5] + struct.pack(">HH", height, width) + data[at + 9:]
    raise ValueError("no SOF marker")


def progressive_many_scans(copies: int = 400) -> bytes:
    """A progressive JPEG whose last scan is repeated ``copies`` times: each scan is another decoding pass."""
    data = jpeg(3, progressive=True)
    last_sos = data.rfind(b"\xff\xda")
    eoi = data.rfind(b"\xff\xd9")
    return data[:eoi] + data[last_sos:eoi] * copies + data[eoi:]


def apng_many_frames(frames: int = 3000) -> bytes:
    images = [Image.new("RGB", (16, 16), (i % 256, (i * 7) % 256, 0)) for i in range(frames)]
    return encode(images[0], "PNG", save_all=True, append_images=images[1:], duration=10)


def gif_many_frames(frames: int = 3000) -> bytes:
    images = [Image.new("P", (16, 16), i % 256) for i in range(frames)]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=10)


def webp_many_frames(frames: int = 300) -> bytes:
    images = [Image.new("RGB", (32, 32), (i % 256, 0, (i * 5) % 256)) for i in range(frames)]
    return encode(images[0], "WEBP", save_all=True, append_images=images[1:], duration=10, lossless=True)


def huge_icc_jpeg(size: int = 2 * 1024 * 1024) -> bytes:
    return jpeg(4, icc_profile=bytes(range(256)) * (size // 256))


def deep_exif_jpeg(tags: int = 4000) -> bytes:
    exif = Image.Exif()
    for i in range(tags):
        exif[0xC000 + i] = i  # private tags: a phone writes under 200 in all
    return jpeg(5, exif=exif.tobytes())


def huge_xmp_png(size: int = 3 * 1024 * 1024) -> bytes:
    xmp = b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>" + b"A" * size + b"</x:xmpmeta>"
    itxt = _chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + xmp)
    return png_bomb(64, 64, extra=[itxt])


def polyglot_jpeg_html() -> bytes:
    return jpeg(6) + b"<html><body><script>alert(document.cookie)</script></body></html>"


def polyglot_png_html() -> bytes:
    text = _chunk(b"tEXt", b"Comment\0<script>alert(1)</script>")
    return png_bomb(64, 64, extra=[text])


def svg() -> bytes:
    return b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def html() -> bytes:
    return b"<!doctype html><html><body><script>alert(1)</script></body></html>"


def bmp() -> bytes:
    return encode(photo(7), "BMP")


def tiff() -> bytes:
    return encode(photo(8), "TIFF")


def truncated(data: bytes) -> bytes:
    return data[: len(data) * 3 // 5]


def oversized_bytes() -> bytes:
    """Over MAX_IMAGE_BYTES (20 MiB): refused while it is read, before it is all in memory."""
    head = jpeg(9)
    return head + bytes(21 * 1024 * 1024)


CASES: list[Hostile] = [
    Hostile("zero-byte", lambda: b"", "image/jpeg", ErrorCode.IMAGE_UNDECODABLE),
    Hostile("png-huge-dimensions", lambda: png_bomb(100_000, 100_000, rows=64), "image/png",
            ErrorCode.IMAGE_TOO_LARGE, ".png"),
    Hostile("png-1x30000000", lambda: png_bomb(1, 30_000_000), "image/png", ErrorCode.IMAGE_TOO_LARGE, ".png"),
    Hostile("png-30000000x1", lambda: png_bomb(30_000_000, 1), "image/png", ErrorCode.IMAGE_TOO_LARGE, ".png"),
    Hostile("png-1x9000-aspect", lambda: png_bomb(1, 9_000), "image/png", ErrorCode.IMAGE_REFUSED, ".png"),
    Hostile("png-bomb-6000x6000", lambda: png_bomb(6000, 6000), "image/png", ErrorCode.IMAGE_TOO_LARGE, ".png"),
    Hostile("png-rgba-bomb-11000x8000", lambda: png_bomb(11_000, 8_000, rows=16, color_type=6), "image/png",
            ErrorCode.IMAGE_TOO_LARGE, ".png"),
    Hostile("png-truncated", lambda: truncated(encode(photo(10), "PNG")), "image/png",
            ErrorCode.IMAGE_UNDECODABLE, ".png"),
    Hostile("apng-3000-frames", apng_many_frames, "image/png", ErrorCode.IMAGE_REFUSED, ".png"),
    Hostile("webp-300-frames", webp_many_frames, "image/webp", ErrorCode.IMAGE_REFUSED, ".webp"),
    Hostile("gif-3000-frames", gif_many_frames, "image/jpeg", ErrorCode.UNSUPPORTED_FORMAT),
    Hostile("jpeg-60000x60000-header", lambda: _patch_sof(jpeg(11), 60_000, 60_000), "image/jpeg",
            ErrorCode.IMAGE_TOO_LARGE),
    Hostile("jpeg-11000x11000-header", lambda: _patch_sof(jpeg(12), 11_000, 11_000), "image/jpeg",
            ErrorCode.IMAGE_TOO_LARGE),
    Hostile("jpeg-progressive-8000x6000", lambda: _patch_sof(jpeg(13, progressive=True), 8000, 6000),
            "image/jpeg", ErrorCode.IMAGE_TOO_LARGE),
    Hostile("jpeg-progressive-400-scans", progressive_many_scans, "image/jpeg", ErrorCode.IMAGE_REFUSED),
    Hostile("jpeg-truncated", lambda: truncated(jpeg(14)), "image/jpeg", ErrorCode.IMAGE_UNDECODABLE),
    Hostile("jpeg-huge-icc", huge_icc_jpeg, "image/jpeg", ErrorCode.IMAGE_REFUSED),
    Hostile("jpeg-deep-exif", deep_exif_jpeg, "image/jpeg", ErrorCode.IMAGE_REFUSED),
    Hostile("png-huge-xmp", huge_xmp_png, "image/png", ErrorCode.IMAGE_REFUSED, ".png"),
    Hostile("polyglot-jpeg-html", polyglot_jpeg_html, "image/jpeg", ErrorCode.IMAGE_REFUSED),
    Hostile("polyglot-png-html", polyglot_png_html, "image/png", ErrorCode.IMAGE_REFUSED, ".png"),
    Hostile("svg-as-svg", svg, "image/svg+xml", ErrorCode.UNSUPPORTED_FORMAT, ""),
    Hostile("svg-as-png", svg, "image/png", ErrorCode.UNSUPPORTED_FORMAT, ".png"),
    Hostile("html-as-jpeg", html, "image/jpeg", ErrorCode.IMAGE_UNDECODABLE),
    Hostile("png-named-jpeg", lambda: encode(photo(15), "PNG"), "image/jpeg", ErrorCode.IMAGE_REFUSED),
    Hostile("jpeg-named-webp", lambda: jpeg(16), "image/webp", ErrorCode.IMAGE_REFUSED, ".webp"),
    Hostile("bmp", bmp, "image/jpeg", ErrorCode.UNSUPPORTED_FORMAT),
    Hostile("tiff", tiff, "image/jpeg", ErrorCode.UNSUPPORTED_FORMAT),
    Hostile("random-bytes", lambda: bytes(range(256)) * 64, "image/jpeg", ErrorCode.IMAGE_UNDECODABLE),
    Hostile("over-max-bytes", oversized_bytes, "image/jpeg", ErrorCode.IMAGE_TOO_LARGE),
]

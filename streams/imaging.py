"""Bytes -> decoded, oriented image -> 256-bit pHash. Pure, synchronous and CPU-bound.

Nothing here touches asyncio or Faust: callers run :func:`hash_image` in an executor so the event loop keeps
serving Kafka heartbeats. pHash only needs a 64x64 grey image, so JPEGs are decoded with ``Image.draft``,
which lets libjpeg scale by 1/2, 1/4 or 1/8 in the DCT domain: a 12-megapixel photo decodes at 1/8 size,
several times faster than a full decode, and the hash stays within a few bits of the full-decode hash.
"""

from __future__ import annotations

import base64
import hashlib
import io
import warnings
from dataclasses import dataclass

import imagehash
from PIL import Image, ImageOps, UnidentifiedImageError

from models.errors import ErrorCode, PipelineError

HASH_SIZE = 16  # 16x16 DCT bits = 256-bit pHash, as in the original design
# imagehash.phash resizes to 64 px, but drafting right down to 64 px changes the LANCZOS input so much that
# hashes drift up to 24 bits from a full decode (measured on the shared photos). Drafting to >= 256 px keeps
# them within 4 bits and still lets libjpeg scale a 4032x3024 phone photo by 1/8.
_DRAFT_MIN_PX = 256
# The thumbnail sent to the vision model: long side at most this. Made only for a model call (a cache miss).
THUMBNAIL_MAX_PX = 512

ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})


@dataclass(frozen=True, slots=True)
class HashedImage:
    phash: str  # 64 hex chars
    width: int  # original pixel size, before draft scaling
    height: int
    format: str


def content_digest(data: bytes) -> str:
    """SHA-256 of the bytes: names a byte-identical re-upload, whose pHash is then already known."""
    return hashlib.sha256(data).hexdigest()  # hashlib releases the GIL on large inputs


def hash_image(data: bytes, *, max_pixels: int) -> HashedImage:
    """Decode ``data`` cheaply, apply EXIF orientation and compute the 256-bit pHash.

    Raises :class:`PipelineError` with a stable code for anything that is not a usable image.
    """
    image = _open_checked(data, max_pixels=max_pixels)
    width, height = image.size
    fmt = image.format or "unknown"
    try:
        # Decode at the smallest DCT scale that still covers what we need (1/8 for phone photos).
        image.draft("RGB", (_DRAFT_MIN_PX, _DRAFT_MIN_PX))
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        digest = str(imagehash.phash(image, hash_size=HASH_SIZE))
    except PipelineError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise PipelineError(ErrorCode.IMAGE_UNDECODABLE, f"cannot decode image: {exc}") from exc
    return HashedImage(phash=digest, width=width, height=height, format=fmt)


def make_thumbnail(data: bytes, *, max_pixels: int) -> bytes:
    """A JPEG of at most THUMBNAIL_MAX_PX on its long side, upright, for the model (same checks as hashing)."""
    image = _open_checked(data, max_pixels=max_pixels)
    try:
        image.draft("RGB", (THUMBNAIL_MAX_PX, THUMBNAIL_MAX_PX))
        image.load()
        image = ImageOps.exif_transpose(image)
        return _thumbnail_jpeg(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise PipelineError(ErrorCode.IMAGE_UNDECODABLE, f"cannot decode image: {exc}") from exc


def full_decode_phash(data: bytes) -> str:
    """The original design's way (full decode, no orientation): the reference the fast path is checked against."""
    return str(imagehash.phash(Image.open(io.BytesIO(data)), hash_size=HASH_SIZE))


def thumbnail_data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def hamming_distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def _open_checked(data: bytes, *, max_pixels: int) -> Image.Image:
    if not data:
        raise PipelineError(ErrorCode.IMAGE_UNDECODABLE, "empty object")
    try:
        with warnings.catch_warnings():
            # Pillow warns (then errors) on huge images by its own global limit; we apply ours below instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise PipelineError(ErrorCode.IMAGE_TOO_LARGE, str(exc)) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise PipelineError(ErrorCode.IMAGE_UNDECODABLE, "not a recognisable image") from exc
    if image.format not in ACCEPTED_FORMATS:
        raise PipelineError(ErrorCode.UNSUPPORTED_FORMAT, f"image format {image.format} is not accepted")
    width, height = image.size
    # Header-only check, before any pixel is decoded: a tiny file can declare a 100k x 100k canvas.
    if width <= 0 or height <= 0 or width * height > max_pixels:
        raise PipelineError(
            ErrorCode.IMAGE_TOO_LARGE, f"{width}x{height} pixels exceeds the limit of {max_pixels} pixels"
        )
    return image


def _thumbnail_jpeg(image: Image.Image) -> bytes:
    thumb = image.copy()
    thumb.thumbnail((THUMBNAIL_MAX_PX, THUMBNAIL_MAX_PX))
    if thumb.mode != "RGB":
        thumb = thumb.convert("RGB")
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=80)
    return out.getvalue()

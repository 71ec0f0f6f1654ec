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
import re
import struct
import warnings
from dataclasses import dataclass
from typing import Any

import imagehash
import pillow_heif
from PIL import Image, UnidentifiedImageError

from models.errors import ErrorCode, PipelineError

HASH_SIZE = 16  # 16x16 DCT bits = 256-bit pHash, as in the original design
# imagehash.phash resizes to 64 px, but drafting right down to 64 px changes the LANCZOS input so much that
# hashes drift up to 24 bits from a full decode (measured on the team's 330 photos). Drafting to >= 256 px keeps
# them within 4 bits and still lets libjpeg scale a 4032x3024 phone photo by 1/8.
_DRAFT_MIN_PX = 256
# The thumbnail sent to the vision model: long side at most this. Made only for a model call (a cache miss).
THUMBNAIL_MAX_PX = 512

# What Pillow may open (``formats=`` on Image.open: no other plugin ever parses an upload). The API's
# upload allow-list is JPEG, PNG, WebP and the formats phones send as they are: HEIC/HEIF (iPhones' default,
# through pillow-heif, which applies the HEIF rotation itself) and AVIF (Pillow's own plugin). MPO is how Pillow
# names a phone's multi-picture JPEG. GIF, BMP, TIFF, SVG and the rest are refused as UNSUPPORTED_FORMAT
# without being parsed.
pillow_heif.register_heif_opener()
OPEN_FORMATS = ("JPEG", "PNG", "WEBP", "HEIF", "AVIF")
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "HEIF", "AVIF"})
# ISO-BMFF brands (bytes 8-12, after "ftyp") of the HEIF family: still images and sequences.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
# Formats Pillow does not open, recognised by their first bytes only to name the refusal.
_OTHER_FORMATS = ((b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"),
                  (b"MM\x00*", "TIFF"), (b"8BPS", "PSD"), (b"\x00\x00\x01\x00", "ICO"))
# The upload content types the pipeline decodes, and what their bytes must be.
CONTENT_TYPES = {"image/jpeg": "JPEG", "image/jpg": "JPEG", "image/pjpeg": "JPEG", "image/png": "PNG",
                 "image/webp": "WEBP", "image/heic": "HEIF", "image/heif": "HEIF", "image/heic-sequence": "HEIF",
                 "image/heif-sequence": "HEIF", "image/avif": "AVIF"}
# Tags in IFD0 plus the Exif, GPS and interoperability IFDs: a phone writes well under 200.
MAX_EXIF_TAGS = 1000
_EXIF_SUB_IFDS = (0x8769, 0x8825, 0xA005)
# Markup that makes a file a document too (HTML, SVG, script): never in an honest photo's bytes.
_ACTIVE_MARKUP = re.compile(rb"<(?:!doctype\s+html|html|head|body|script|svg|iframe|object|embed|meta|img)[\s>/]"
                            rb"|<\?php|javascript:", re.IGNORECASE)
_EXIF_ORIENTATION = 0x0112
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """What an image may declare in its header before a pixel of it is decoded (settings of the same names)."""

    max_pixels: int  # width x height x frames
    max_width: int = 12_000
    max_height: int = 12_000
    max_frames: int = 50
    max_aspect_ratio: float = 8.0
    max_full_decode_pixels: int = 4096 * 4096  # PNG, WebP, progressive JPEG: no reduced-scale decode
    max_jpeg_scans: int = 64
    max_metadata_bytes: int = 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Any) -> ImageLimits:
        return cls(max_pixels=settings.max_image_pixels, max_width=settings.max_image_width,
                   max_height=settings.max_image_height, max_frames=settings.max_image_frames,
                   max_aspect_ratio=settings.max_image_aspect_ratio,
                   max_full_decode_pixels=settings.max_full_decode_pixels, max_jpeg_scans=settings.max_jpeg_scans,
                   max_metadata_bytes=settings.max_image_metadata_bytes)


@dataclass(frozen=True, slots=True)
class HashedImage:
    phash: str  # 64 hex chars
    width: int  # original pixel size, before draft scaling
    height: int
    format: str


def content_digest(data: bytes) -> str:
    """SHA-256 of the bytes: names a byte-identical re-upload, whose pHash is then already known."""
    return hashlib.sha256(data).hexdigest()  # hashlib releases the GIL on large inputs


def digest_and_hash(data: bytes, *, max_pixels: int, limits: ImageLimits | None = None) -> tuple[str, HashedImage]:
    """:func:`content_digest` and :func:`hash_image` in one call: one hand-off to the executor instead of two
    when the pHash is not looked up by the digest first (``CONTENT_DIGEST_CACHE=false``)."""
    return content_digest(data), hash_image(data, max_pixels=max_pixels, limits=limits)


def hash_image(data: bytes, *, max_pixels: int, limits: ImageLimits | None = None) -> HashedImage:
    """Decode ``data`` cheaply, apply EXIF orientation and compute the 256-bit pHash.

    Raises :class:`PipelineError` with a stable code for anything that is not a usable image.
    """
    limits = limits or ImageLimits(max_pixels=max_pixels)
    image = _open_checked(data, limits)
    width, height = image.size
    fmt = image.format or "unknown"
    try:
        # Decode at the smallest scale that still covers what we need (1/8 for phone photos; whole for PNG/WebP,
        # which the header check bounded, then reduced before any conversion). pHash only reads grey: a YCbCr
        # JPEG is decoded straight to its luma (no chroma upsampling or colour conversion; 5-6% less CPU per
        # 12 MP photo, the same hashes as decoding to RGB and converting: BENCHMARKS.md).
        image = _decode_reduced(image, _DRAFT_MIN_PX, grey=True)
        image = _upright(image)
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        digest = str(imagehash.phash(image, hash_size=HASH_SIZE))
    except PipelineError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise PipelineError(ErrorCode.IMAGE_UNDECODABLE, "the image cannot be decoded", detail=str(exc)) from exc
    return HashedImage(phash=digest, width=width, height=height, format=fmt)


def make_thumbnail(data: bytes, *, max_pixels: int, limits: ImageLimits | None = None) -> bytes:
    """A JPEG of at most THUMBNAIL_MAX_PX on its long side, upright, for the model (same checks as hashing)."""
    image = _open_checked(data, limits or ImageLimits(max_pixels=max_pixels))
    try:
        image = _decode_reduced(image, THUMBNAIL_MAX_PX)
        image = _upright(image)
        return _thumbnail_jpeg(image)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise PipelineError(ErrorCode.IMAGE_UNDECODABLE, "the image cannot be decoded", detail=str(exc)) from exc


def full_decode_phash(data: bytes) -> str:
    """The original design's way (full decode, no orientation): the reference the fast path is checked against."""
    return str(imagehash.phash(Image.open(io.BytesIO(data)), hash_size=HASH_SIZE))


def thumbnail_data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def hamming_distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def _open_checked(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open ``data`` with the allowed plugins only and check everything its header declares; decodes nothing."""
    if not data:
        raise PipelineError(ErrorCode.IMAGE_UNDECODABLE, "the object is empty")
    try:
        with warnings.catch_warnings():
            # Pillow warns (then errors) on huge images by its own global limit; ours are applied below instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=OPEN_FORMATS)
            frames = int(getattr(image, "n_frames", 1) or 1)
    except Image.DecompressionBombError as exc:
        raise PipelineError(ErrorCode.IMAGE_TOO_LARGE, "the image has too many pixels", detail=str(exc)) from exc
    except UnidentifiedImageError as exc:
        other = _sniff_other_format(data)
        if other is not None:
            raise PipelineError(ErrorCode.UNSUPPORTED_FORMAT, f"image format {other} is not accepted") from exc
        raise PipelineError(ErrorCode.IMAGE_UNDECODABLE, "not a recognisable image") from exc
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise PipelineError(ErrorCode.IMAGE_UNDECODABLE, "not a recognisable image", detail=str(exc)) from exc
    if image.format not in ACCEPTED_FORMATS:
        raise PipelineError(ErrorCode.UNSUPPORTED_FORMAT, f"image format {image.format} is not accepted")
    width, height = image.size
    # Header-only checks, before any pixel is decoded: a tiny file can declare a 100k x 100k canvas.
    if width <= 0 or height <= 0:
        raise PipelineError(ErrorCode.IMAGE_UNDECODABLE, "the image declares no pixels")
    if width > limits.max_width or height > limits.max_height:
        raise PipelineError(ErrorCode.IMAGE_TOO_LARGE, f"{width}x{height} pixels exceeds the limit of "
                                                       f"{limits.max_width}x{limits.max_height}")
    if max(width, height) / min(width, height) > limits.max_aspect_ratio:
        raise PipelineError(ErrorCode.IMAGE_REFUSED, f"aspect ratio of {width}x{height} exceeds "
                                                     f"{limits.max_aspect_ratio:g}:1")
    if frames > limits.max_frames:
        raise PipelineError(ErrorCode.IMAGE_REFUSED, f"{frames} frames exceed the limit of {limits.max_frames}")
    if width * height * frames > limits.max_pixels:
        raise PipelineError(ErrorCode.IMAGE_TOO_LARGE, f"{width}x{height}x{frames} pixels exceeds the limit of "
                                                       f"{limits.max_pixels} pixels")
    is_jpeg = image.format in ("JPEG", "MPO")
    progressive = is_jpeg and bool(image.info.get("progressive") or image.info.get("progression"))
    # JPEG alone decodes at a reduced scale (libjpeg's DCT scaling), and a progressive one still keeps every
    # coefficient of the whole image in memory: the others (PNG, WebP, HEIF, AVIF) are decoded whole, so they
    # get a lower ceiling (a 12 MP phone HEIC fits; a 48 MP one is refused rather than cost ~150 MB).
    if (not is_jpeg or progressive) and width * height > limits.max_full_decode_pixels:
        raise PipelineError(ErrorCode.IMAGE_TOO_LARGE, f"{width}x{height} {image.format} exceeds the limit of "
                                                       f"{limits.max_full_decode_pixels} pixels for a full decode")
    if progressive and (scans := _jpeg_scans(data, limits.max_jpeg_scans)) > limits.max_jpeg_scans:
        raise PipelineError(ErrorCode.IMAGE_REFUSED, f"more than {limits.max_jpeg_scans} progressive scans",
                            detail=f"{scans} scans")
    if (meta := _metadata_bytes(image)) > limits.max_metadata_bytes:
        raise PipelineError(ErrorCode.IMAGE_REFUSED, f"image metadata over {limits.max_metadata_bytes} bytes",
                            detail=f"{meta} bytes of metadata")
    if "exif" in image.info and (tags := _exif_tags(image)) > MAX_EXIF_TAGS:
        raise PipelineError(ErrorCode.IMAGE_REFUSED, f"EXIF with more than {MAX_EXIF_TAGS} tags",
                            detail=f"{tags} tags")
    for region in _non_pixel_regions(data, image):
        if (markup := _ACTIVE_MARKUP.search(region)) is not None:
            # An image that is also an HTML/SVG/script document (a polyglot) is served from the image origin.
            raise PipelineError(ErrorCode.IMAGE_REFUSED, "the file also contains markup",
                                detail=f"{markup.group(0)!r} in metadata or after the image data")
    return image


def _non_pixel_regions(data: bytes, image: Image.Image) -> list[bytes]:
    """Where a polyglot hides its document: the metadata and whatever follows the image's end.

    The compressed pixel data is left out on purpose: megabytes of entropy-coded bytes spell "<img " or "<meta/"
    by chance (about one honest 12 MP photo in a few hundred), which would refuse honest photos.
    """
    regions = [b"".join(v if isinstance(v, bytes) else str(v).encode("utf-8", "replace")
                        for v in image.info.values() if isinstance(v, bytes | str))]
    applist = getattr(image, "applist", None)
    if applist is not None:  # JPEG: every APPn segment and the comment
        regions.append(b"".join(segment for _, segment in applist))
        end = data.rfind(b"\xff\xd9")
        regions.append(data[end + 2:] if end >= 0 else b"")
    elif image.format == "PNG":
        end = data.rfind(b"IEND")
        regions.append(data[end + 8:] if end >= 0 else b"")
        regions.append(b"".join(_png_text_chunks(data)))
    elif image.format == "WEBP" and len(data) >= 8:
        regions.append(data[8 + int.from_bytes(data[4:8], "little"):])  # after the RIFF container
    return regions


def _png_text_chunks(data: bytes) -> list[bytes]:
    """The bodies of PNG tEXt, zTXt and iTXt chunks (Pillow decompresses only some of them into info)."""
    chunks, pos = [], 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            chunks.append(data[pos + 8:pos + 8 + length])
        if kind == b"IEND":
            break
        pos += 12 + length
    return chunks


def sniff_format(data: bytes) -> str | None:
    """The accepted format the first bytes announce (JPEG, PNG, WEBP, HEIF, AVIF), or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        if data[8:12] in _AVIF_BRANDS:
            return "AVIF"
        if data[8:12] in _HEIF_BRANDS:
            return "HEIF"
    return None


def check_declared_type(data: bytes, content_type: str | None) -> None:
    """The bytes must be of the type the upload declared (when it declared one): a PNG stored as image/jpeg, or
    HTML as image/png, is refused before it is decoded."""
    if content_type is None:
        return
    declared = CONTENT_TYPES.get(content_type.split(";")[0].strip().lower())
    if declared is None:
        raise PipelineError(ErrorCode.UNSUPPORTED_FORMAT, "the upload's content type is not accepted",
                            detail=f"content_type={content_type!r:.100}")
    actual = sniff_format(data)
    if actual is not None and actual != declared:
        raise PipelineError(ErrorCode.IMAGE_REFUSED, "the image's content does not match its declared type",
                            detail=f"declared {content_type!r:.100}, content {actual}")


def _exif_tags(image: Image.Image) -> int:
    try:
        exif = image.getexif()
        return len(exif) + sum(len(exif.get_ifd(tag)) for tag in _EXIF_SUB_IFDS if tag in exif)
    except Exception:  # noqa: BLE001 - unreadable EXIF only loses the orientation (see _upright)
        return 0


def _sniff_other_format(data: bytes) -> str | None:
    head = data[:512]
    for magic, name in _OTHER_FORMATS:
        if head.startswith(magic):
            return name
    if head[4:8] == b"ftyp":
        return "MP4/QuickTime (ISO media, not an image brand)"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<?xml", b"<svg", b"<!doctype svg")) or b"<svg" in text:
        return "SVG"
    return None


def _metadata_bytes(image: Image.Image) -> int:
    """Bytes of metadata the header carried (EXIF, ICC, XMP, comments, PNG text, JPEG APP segments)."""
    applist = getattr(image, "applist", None)
    if applist is not None:  # JPEG: every APPn segment (EXIF, ICC, XMP, ...), and the comment
        return sum(len(segment) for _, segment in applist) + len(image.info.get("comment", b""))
    return sum(len(v) for v in image.info.values() if isinstance(v, bytes | str))


def _jpeg_scans(data: bytes, limit: int) -> int:
    """How many scans (SOS segments) a JPEG has, counted by walking its markers; stops counting past ``limit``."""
    pos, end, scans = 2, len(data), 0
    while pos + 4 <= end and scans <= limit:
        if data[pos] != 0xFF:
            return scans  # not at a marker: corrupt, the decoder will say so
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker == 0xD9:  # EOI
            return scans
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker != 0xDA:
            continue
        scans += 1
        while True:  # entropy-coded data runs to the next marker that is not a stuffed 0xFF00 or a restart
            pos = data.find(b"\xff", pos)
            if pos < 0 or pos + 1 >= end:
                return scans
            following = data[pos + 1]
            if following == 0x00 or 0xD0 <= following <= 0xD7:
                pos += 2
                continue
            break
    return scans


def _decode_reduced(image: Image.Image, min_px: int, *, grey: bool = False) -> Image.Image:
    """Decode the (first frame of the) image at no less than ``min_px`` on its short side, without a second
    full-size copy: JPEG scales in libjpeg (draft); the others, whole as the header check allowed, are reduced
    by an integer factor right after decoding (modes other than RGB/L are converted after that, when small).
    ``grey``: a colour (YCbCr) JPEG is decoded to its luma only (Pillow leaves CMYK and grey JPEGs as they are)."""
    if image.format in ("JPEG", "MPO"):
        image.draft("L" if grey else "RGB", (min_px, min_px))
        image.load()
        return image
    image.load()
    factor = min(image.size) // min_px
    if factor >= 2:
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image = image.reduce(factor)
    return image


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (as ImageOps.exif_transpose, without copying the metadata along)."""
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # noqa: BLE001 - unreadable EXIF is no orientation, not an undecodable image
        return image
    method = _TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
    return image.transpose(method) if method is not None else image


def _thumbnail_jpeg(image: Image.Image) -> bytes:
    if image.mode != "RGB":
        image = image.convert("RGB")
    image.thumbnail((THUMBNAIL_MAX_PX, THUMBNAIL_MAX_PX))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()

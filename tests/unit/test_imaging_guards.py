"""The image guards at their edges, on small images made here: each limit accepts its value and refuses one more,
each refusal carries its stable code (and, for the client, its message), the format sniffers name what they see,
and the thumbnail the model gets is an upright RGB JPEG of bounded size.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image, ImageOps

from models.errors import ErrorCode, PipelineError
from streams.imaging import (
    THUMBNAIL_MAX_PX,
    ImageLimits,
    check_declared_type,
    content_digest,
    digest_and_hash,
    hamming_distance,
    hash_image,
    make_thumbnail,
    sniff_format,
    thumbnail_data_url,
)
from tests import samples

BIG = 10**9


def limits(**kw: int | float) -> ImageLimits:
    return ImageLimits(**{"max_pixels": BIG, "max_full_decode_pixels": BIG, **kw})  # type: ignore[arg-type]


def encode(image: Image.Image, fmt: str, **kw: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kw)
    return out.getvalue()


def quadrants(w: int = 64, h: int = 48, mode: str = "RGB") -> Image.Image:
    """Four colours, one per quadrant: any flip or turn of it is told apart by its corners."""
    image = Image.new("RGB", (w, h))
    colours = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (240, 240, 240)]
    for i, (x, y) in enumerate([(0, 0), (w // 2, 0), (0, h // 2), (w // 2, h // 2)]):
        image.paste(colours[i], (x, y, x + w // 2, y + h // 2))
    return image.convert(mode)


def refusal(data: bytes, lim: ImageLimits) -> PipelineError | None:
    try:
        hash_image(data, max_pixels=lim.max_pixels, limits=lim)
    except PipelineError as exc:
        return exc
    return None


def refused(data: bytes, lim: ImageLimits, code: ErrorCode) -> PipelineError:
    exc = refusal(data, lim)
    assert exc is not None and exc.code is code, exc
    return exc


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_chunk_before_iend(png: bytes, chunk: bytes) -> bytes:
    iend = png.rindex(b"IEND") - 4
    return png[:iend] + chunk + png[iend:]


# --- what the header declares ---------------------------------------------------------------------------------


def test_a_hashed_image_reports_its_original_size_and_format() -> None:
    got = hash_image(encode(quadrants(1200, 900), "JPEG"), max_pixels=BIG)
    assert (got.width, got.height, got.format) == (1200, 900, "JPEG")
    assert len(got.phash) == 64
    got = hash_image(encode(quadrants(300, 200), "PNG"), max_pixels=BIG)
    assert (got.width, got.height, got.format) == (300, 200, "PNG")


def test_the_max_pixels_argument_is_the_default_limit() -> None:
    data = encode(quadrants(64, 48), "PNG")
    assert hash_image(data, max_pixels=64 * 48).width == 64
    with pytest.raises(PipelineError) as err:
        hash_image(data, max_pixels=64 * 48 - 1)
    assert err.value.code is ErrorCode.IMAGE_TOO_LARGE
    with pytest.raises(PipelineError) as err:
        make_thumbnail(data, max_pixels=64 * 48 - 1)
    assert err.value.code is ErrorCode.IMAGE_TOO_LARGE
    # A JPEG has no frame count: it is one frame.
    assert hash_image(encode(quadrants(64, 48), "JPEG"), max_pixels=64 * 48).width == 64


def test_a_header_past_pillows_own_bomb_limit_is_too_large() -> None:
    from tests.security import hostile

    exc = refused(hostile.png_bomb(100_000, 100_000, rows=64), limits(), ErrorCode.IMAGE_TOO_LARGE)
    assert exc.message == "the image has too many pixels"
    assert exc.detail is not None and "decompression bomb" in exc.detail


def test_digest_and_hash_is_both_in_one_call() -> None:
    data = encode(quadrants(), "JPEG")
    digest, hashed = digest_and_hash(data, max_pixels=BIG, limits=limits())
    assert digest == content_digest(data)
    assert hashed == hash_image(data, max_pixels=BIG)
    with pytest.raises(PipelineError) as err:
        digest_and_hash(data, max_pixels=64 * 48 - 1)
    assert err.value.code is ErrorCode.IMAGE_TOO_LARGE
    with pytest.raises(PipelineError) as err:
        digest_and_hash(data, max_pixels=BIG, limits=limits(max_width=63))  # the limits given are the ones applied
    assert err.value.code is ErrorCode.IMAGE_TOO_LARGE


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_width_and_height_limits_accept_their_value(fmt: str) -> None:
    data = encode(quadrants(64, 48), fmt)
    assert refusal(data, limits(max_width=64, max_height=48)) is None
    exc = refused(data, limits(max_width=63, max_height=48), ErrorCode.IMAGE_TOO_LARGE)
    assert exc.message == "64x48 pixels exceeds the limit of 63x48"
    refused(data, limits(max_width=64, max_height=47), ErrorCode.IMAGE_TOO_LARGE)


def test_the_aspect_ratio_limit_accepts_its_value_both_ways() -> None:
    for w, h in ((64, 8), (8, 64)):
        assert refusal(encode(Image.new("RGB", (w, h)), "PNG"), limits(max_aspect_ratio=8.0)) is None
    for w, h in ((65, 8), (8, 65)):
        exc = refused(encode(Image.new("RGB", (w, h)), "PNG"), limits(max_aspect_ratio=8.0), ErrorCode.IMAGE_REFUSED)
        assert exc.message == f"aspect ratio of {w}x{h} exceeds 8:1"


def animated_webp(frames: int) -> bytes:
    images = [Image.new("RGB", (40, 40), (i * 40 % 256, 90, 160)) for i in range(frames)]
    return encode(images[0], "WEBP", save_all=True, append_images=images[1:])


def test_frames_count_against_the_frame_and_pixel_limits() -> None:
    data = animated_webp(3)
    assert refusal(data, limits(max_frames=3, max_pixels=40 * 40 * 3)) is None
    exc = refused(data, limits(max_frames=2), ErrorCode.IMAGE_REFUSED)
    assert exc.message == "3 frames exceed the limit of 2"
    exc = refused(data, limits(max_pixels=40 * 40 * 3 - 1), ErrorCode.IMAGE_TOO_LARGE)
    assert exc.message == f"40x40x3 pixels exceeds the limit of {40 * 40 * 3 - 1} pixels"


def test_formats_decoded_whole_have_a_lower_ceiling_than_baseline_jpeg() -> None:
    image = quadrants(64, 48)
    at = limits(max_full_decode_pixels=64 * 48)
    under = limits(max_full_decode_pixels=64 * 48 - 1)
    for whole in (encode(image, "PNG"), encode(image, "WEBP"), encode(image, "JPEG", progressive=True)):
        assert refusal(whole, at) is None
        exc = refused(whole, under, ErrorCode.IMAGE_TOO_LARGE)
        assert exc.message.endswith(f"exceeds the limit of {64 * 48 - 1} pixels for a full decode")
    assert refusal(encode(image, "JPEG"), under) is None  # baseline JPEG decodes at a reduced scale


def test_metadata_is_counted_against_its_limit() -> None:
    comment = b"a harmless comment " * 100  # 1,900 bytes
    jpeg = encode(quadrants(), "JPEG", comment=comment)
    assert refusal(jpeg, limits(max_metadata_bytes=1_000_000)) is None
    exc = refused(jpeg, limits(max_metadata_bytes=1900), ErrorCode.IMAGE_REFUSED)
    assert exc.message == "image metadata over 1900 bytes"
    assert exc.detail is not None and exc.detail.endswith(" bytes of metadata")
    png = encode(quadrants(), "PNG", pnginfo=_png_text(b"Comment", comment))
    assert refusal(png, limits(max_metadata_bytes=1900)) is None  # PNG text: counted once
    refused(png, limits(max_metadata_bytes=1899), ErrorCode.IMAGE_REFUSED)


def _png_text(key: bytes, value: bytes, *, compressed: bool = False) -> object:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(key.decode(), value.decode(), zip=compressed)
    return info


def exif_with(tags_ifd0: int, tags_exif_ifd: int = 0) -> Image.Exif:
    exif = Image.Exif()
    for i in range(tags_ifd0):
        exif[0xC000 + i] = 1
    if tags_exif_ifd:
        sub = exif.get_ifd(0x8769)
        for i in range(tags_exif_ifd):
            sub[0xC000 + i] = 2
    return exif


def test_exif_tags_of_every_ifd_count_against_the_limit() -> None:
    # IFD0 carries the pointer to the Exif IFD as one more tag.
    at_limit = encode(quadrants(), "JPEG", exif=exif_with(499, 500))  # 499 + 1 + 500 = 1000
    assert refusal(at_limit, limits()) is None
    over = encode(quadrants(), "JPEG", exif=exif_with(499, 501))
    exc = refused(over, limits(), ErrorCode.IMAGE_REFUSED)
    assert exc.message == "EXIF with more than 1000 tags"
    assert exc.detail == "1001 tags"
    assert refusal(encode(quadrants(), "JPEG", exif=exif_with(1000)), limits()) is None
    refused(encode(quadrants(), "JPEG", exif=exif_with(1001)), limits(), ErrorCode.IMAGE_REFUSED)


# --- progressive JPEG scans ---------------------------------------------------------------------------------------


def jpeg_with_scans(between: list[bytes], *, progressive: bool = True, tail: bytes = b"\xff\xd9") -> bytes:
    """A real JPEG's header, then made-up scans: ``between[i]`` goes before scan i (fill bytes, other markers).

    The header is all Pillow reads when it opens the file, and the scan guard runs before any pixel is decoded.
    """
    real = encode(quadrants(), "JPEG", progressive=progressive)
    sos = real.index(b"\xff\xda")
    header = real[sos:sos + 2 + int.from_bytes(real[sos + 2:sos + 4], "big")]
    # Entropy-coded bytes with a stuffed 0xFF00 and restart markers in them (neither ends a scan).
    entropy = b"\x12\x34\xff\x00\x56\xff\xd0\x78\x9a\xff\xd7\xbc"
    return real[:sos] + b"".join(pre + header + entropy for pre in between) + tail


def scans_counted(data: bytes) -> int:
    """The fewest allowed scans the file passes with (counted by the guard, observed through its verdict)."""
    for allowed in range(1, 40):
        exc = refusal(data, limits(max_jpeg_scans=allowed))
        if exc is None or exc.code is not ErrorCode.IMAGE_REFUSED:
            return allowed
    raise AssertionError("refused at every limit")


def test_a_progressive_jpeg_with_more_scans_than_allowed_is_refused() -> None:
    real = encode(quadrants(), "JPEG", progressive=True)
    scans = real.count(b"\xff\xda")  # in entropy data 0xFF is always stuffed, so this is the SOS count
    assert refusal(real, limits(max_jpeg_scans=scans)) is None
    exc = refused(real, limits(max_jpeg_scans=scans - 1), ErrorCode.IMAGE_REFUSED)
    assert exc.message == f"more than {scans - 1} progressive scans"
    assert exc.detail == f"{scans} scans"


def test_scans_are_counted_across_stuffed_bytes_and_restart_markers() -> None:
    assert scans_counted(jpeg_with_scans([b"", b"", b""])) == 3
    assert scans_counted(jpeg_with_scans([b""] * 7)) == 7


def test_fill_bytes_and_markers_without_a_length_between_scans_are_stepped_over() -> None:
    assert scans_counted(jpeg_with_scans([b"", b"\xff", b"\xff\xff\xff"])) == 3
    assert scans_counted(jpeg_with_scans([b"", b"\xff\x01", b"\xff\xd3", b"\xff\xd0\xff\xd7"])) == 4


def test_a_segment_with_a_length_between_scans_is_skipped_whole() -> None:
    dht_like = b"\xff\xc4\x00\x06\xff\xda\x00\x00"  # its body looks like an SOS marker: not one
    assert scans_counted(jpeg_with_scans([b"", dht_like, dht_like])) == 3


def test_counting_stops_at_the_end_of_image_and_at_bytes_that_are_no_marker() -> None:
    after_eoi = b"\xff\xd9" + jpeg_with_scans([b""] * 5)[2:]
    assert scans_counted(jpeg_with_scans([b"", b""], tail=after_eoi)) == 2
    # A segment whose length lands on a byte that is no marker: the file is corrupt there, counting stops.
    assert scans_counted(jpeg_with_scans([b"", b"", b"\xff\xc4\x00\x04\x00\x00\x00"])) == 2
    assert scans_counted(jpeg_with_scans([b""] * 4, tail=b"")) == 4  # cut off inside the last scan


def test_markers_without_a_length_after_a_segment_are_stepped_over() -> None:
    # After a segment with a length (not inside scan data), restart markers, TEM and SOI stand alone.
    empty_dht = b"\xff\xc4\x00\x02"
    for standalone in (b"\xff\xd0", b"\xff\xd7", b"\xff\x01", b"\xff\xd8", b"\xff\xd0\xff\xd3\xff\xd7"):
        assert scans_counted(jpeg_with_scans([b"", empty_dht + standalone, b""])) == 3, standalone


def test_a_segment_longer_than_255_bytes_is_skipped_by_its_whole_length() -> None:
    long_segment = b"\xff\xc4\x01\x02" + b"\x00" * 256  # length 0x0102 = 258, its two bytes included
    assert scans_counted(jpeg_with_scans([b"", long_segment, b""])) == 3


@pytest.mark.parametrize(("tail", "scans"), [
    (b"\xff", 2),  # a file ending in the first byte of a marker
    (b"\xff\xda\x00", 2),  # three bytes of a marker: too short to be a segment
    (b"\xff\xda\x00\x02", 3),  # an SOS segment in the last four bytes still counts
    (b"\xff\xc4\xff\xff", 2),  # a segment whose length runs past the end of the file
])
def test_the_end_of_the_file_ends_the_count_without_an_error(tail: bytes, scans: int) -> None:
    assert scans_counted(jpeg_with_scans([b"", b""], tail=tail)) == scans


def test_a_baseline_jpeg_is_never_refused_for_its_scans() -> None:
    data = jpeg_with_scans([b""] * 5, progressive=False)
    exc = refusal(data, limits(max_jpeg_scans=1))
    assert exc is None or exc.code is not ErrorCode.IMAGE_REFUSED


# --- formats ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "name"), [
    (b"GIF87a" + b"\0" * 100, "GIF"),
    (b"GIF89a" + b"\0" * 100, "GIF"),
    (b"BM" + b"\0" * 100, "BMP"),
    (b"II*\x00" + b"\0" * 100, "TIFF"),
    (b"MM\x00*" + b"\0" * 100, "TIFF"),
    (b"8BPS" + b"\0" * 100, "PSD"),
    (b"\x00\x00\x01\x00" + b"\0" * 100, "ICO"),
    (b"\x00\x00\x00\x18ftypisom" + b"\0" * 100, "MP4/QuickTime (ISO media, not an image brand)"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
    (b"\xef\xbb\xbf \r\n\t<?xml version='1.0'?><svg/>", "SVG"),
    (b"  <!DOCTYPE svg PUBLIC '-//W3C//DTD SVG 1.1//EN'>", "SVG"),
    (b"<!-- made by hand -->" + b" " * 400 + b"<svg>", "SVG"),
    (b"\xef\xbb\xbf<?xml version='1.0'?><!-- a drawing -->", "SVG"),
    (b"<!--" + b"x" * 504 + b"<svg>", "SVG"),  # "<svg" ends at byte 512: looked at
])
def test_formats_that_are_not_accepted_are_named(data: bytes, name: str) -> None:
    exc = refused(data, limits(), ErrorCode.UNSUPPORTED_FORMAT)
    assert exc.message == f"image format {name} is not accepted"


@pytest.mark.parametrize("data", [
    b"<!-- made by hand -->" + b" " * 600 + b"<svg>",  # past the first 512 bytes: not looked at
    b"<!--" + b"x" * 505 + b"<svg>",  # "<svg" ends at byte 513: not looked at
    b"hello, this is text",
])
def test_unrecognisable_bytes_are_undecodable(data: bytes) -> None:
    exc = refused(data, limits(), ErrorCode.IMAGE_UNDECODABLE)
    assert exc.message == "not a recognisable image"


def test_an_empty_object_is_undecodable() -> None:
    exc = refused(b"", limits(), ErrorCode.IMAGE_UNDECODABLE)
    assert exc.message == "the object is empty"


@pytest.mark.parametrize(("head", "fmt"), [
    (b"\xff\xd8\xff\xe0", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"RIFF\x00\x00\x00\x00WEBP", "WEBP"),
    *[(b"\x00\x00\x00\x18ftyp" + brand, "HEIF") for brand in
      (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")],
    (b"\x00\x00\x00\x18ftypavif", "AVIF"),
    (b"\x00\x00\x00\x18ftypavis", "AVIF"),
    (b"\xff\xd8\x00", None),
    (b"\x89PNG\r\n\x1a\x00", None),
    (b"RIFF\x00\x00\x00\x00AVI ", None),
    (b"RIFX\x00\x00\x00\x00WEBP", None),
    (b"\x00\x00\x00\x18ftypisom", None),
    (b"\x00\x00\x00\x18ftipheic", None),
    (b"", None),
])
def test_sniff_format_names_the_accepted_formats_by_their_first_bytes(head: bytes, fmt: str | None) -> None:
    assert sniff_format(head + b"\0" * 32) == fmt if head else sniff_format(head) is None


def test_the_declared_type_is_normalised_then_matched() -> None:
    jpeg = encode(quadrants(), "JPEG")
    check_declared_type(jpeg, None)  # nothing declared: the decoder decides
    for declared in ("image/jpeg", "IMAGE/JPEG", "image/jpeg; charset=binary", " image/pjpeg ", "image/jpg"):
        check_declared_type(jpeg, declared)
    check_declared_type(b"\x00\x01 unknown bytes", "image/png")  # content not recognised: the decoder decides


def test_a_declared_type_that_is_not_accepted_is_unsupported() -> None:
    with pytest.raises(PipelineError) as err:
        check_declared_type(encode(quadrants(), "JPEG"), "image/gif")
    assert err.value.code is ErrorCode.UNSUPPORTED_FORMAT
    assert err.value.message == "the upload's content type is not accepted"
    assert err.value.detail == "content_type='image/gif'"


@pytest.mark.parametrize(("fmt", "declared"), [("PNG", "image/jpeg"), ("JPEG", "image/png"), ("WEBP", "image/heic")])
def test_bytes_of_another_type_than_declared_are_refused(fmt: str, declared: str) -> None:
    with pytest.raises(PipelineError) as err:
        check_declared_type(encode(quadrants(), fmt), declared)
    assert err.value.code is ErrorCode.IMAGE_REFUSED
    assert err.value.message == "the image's content does not match its declared type"
    assert err.value.detail == f"declared {declared!r}, content {fmt}"


# --- polyglots: where a document hides ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [b"tEXt", b"iTXt", b"zTXt"])
def test_markup_in_a_png_text_chunk_after_the_pixels_is_refused(kind: bytes) -> None:
    # Pillow reads text chunks after IDAT only when it decodes: the guard reads them from the bytes itself.
    png = encode(quadrants(), "PNG")
    body = {b"tEXt": b"Comment\x00<script>alert(1)</script>",
            b"iTXt": b"Comment\x00\x00\x00\x00\x00<svg onload=alert(1)>",
            b"zTXt": b"<html>\x00\x00" + zlib.compress(b"x")}[kind]
    data = png_with_chunk_before_iend(png, png_chunk(b"tIME", b"\x07\xea\x0b\x1e\x09\x00\x00")
                                      + png_chunk(kind, body))
    exc = refused(data, limits(), ErrorCode.IMAGE_REFUSED)
    assert exc.message == "the file also contains markup"
    assert exc.detail is not None and exc.detail.endswith(" in metadata or after the image data")
    # The same chunk without markup is an honest image.
    honest = png_with_chunk_before_iend(png, png_chunk(b"tEXt", b"Comment\x00a jar of jam"))
    assert refusal(honest, limits()) is None


def test_markup_in_a_compressed_png_text_is_refused() -> None:
    # A zTXt chunk's text is compressed: only the text Pillow decompressed shows the markup.
    png = encode(quadrants(), "PNG", pnginfo=_png_text(b"Comment", b"<script>alert(1)</script>", compressed=True))
    assert b"<script>" not in png
    exc = refused(png, limits(), ErrorCode.IMAGE_REFUSED)
    assert exc.message == "the file also contains markup"


def test_only_what_follows_the_last_end_of_image_is_looked_at() -> None:
    # An end-of-image marker inside the metadata (as an EXIF thumbnail has) does not make the pixels "after the
    # image": markup-like bytes there, by chance in the compressed data, refuse nothing.
    jpeg = encode(samples_photo_small(), "JPEG", comment=b"thumbnail \xff\xd9 inside")
    sos = jpeg.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(jpeg[sos + 2:sos + 4], "big")
    middle = start + (len(jpeg) - start) // 2
    data = jpeg[:middle] + b"<img " + jpeg[middle:]
    exc = refusal(data, limits())
    assert exc is None or exc.code is not ErrorCode.IMAGE_REFUSED, exc


def samples_photo_small() -> Image.Image:
    return Image.open(io.BytesIO(samples.photo_bytes(2))).convert("RGB").resize((320, 240))


def test_markup_right_after_the_png_end_is_refused() -> None:
    exc = refused(encode(quadrants(), "PNG") + b"<html>", limits(), ErrorCode.IMAGE_REFUSED)
    assert exc.message == "the file also contains markup"


def test_markup_right_after_the_webp_container_is_refused() -> None:
    webp = encode(quadrants(), "WEBP")
    refused(webp + b"<html>", limits(), ErrorCode.IMAGE_REFUSED)
    assert refusal(webp + b"html and more text", limits()) is None


def test_markup_in_a_jpeg_app_segment_pillow_does_not_keep_is_refused() -> None:
    jpeg = encode(quadrants(), "JPEG")
    body = b"vendor\x00<iframe src=x>"
    segment = b"\xff\xe9" + struct.pack(">H", len(body) + 2) + body
    refused(jpeg[:2] + segment + jpeg[2:], limits(), ErrorCode.IMAGE_REFUSED)
    refused(jpeg + b"<body>", limits(), ErrorCode.IMAGE_REFUSED)


# --- decoding ---------------------------------------------------------------------------------------------------


def test_a_large_palette_png_is_reduced_before_it_is_hashed() -> None:
    rgb = Image.open(io.BytesIO(samples.photo_bytes(3))).convert("RGB").resize((1600, 1200))
    palette = encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG")
    rgba = encode(rgb.convert("RGBA"), "PNG")
    reference = hash_image(encode(rgb, "PNG"), max_pixels=BIG).phash
    for data in (palette, rgba):
        assert hamming_distance(hash_image(data, max_pixels=BIG).phash, reference) <= 4


def test_a_truncated_image_cannot_be_decoded_for_the_model_either() -> None:
    jpeg = encode(quadrants(400, 300), "JPEG")
    with pytest.raises(PipelineError) as err:
        make_thumbnail(jpeg[: len(jpeg) // 2], max_pixels=BIG)
    assert err.value.code is ErrorCode.IMAGE_UNDECODABLE
    assert err.value.message == "the image cannot be decoded"
    assert err.value.detail is not None and "truncated" in err.value.detail  # the decoder's own words, for logs
    with pytest.raises(PipelineError) as err:
        hash_image(jpeg[: len(jpeg) // 2], max_pixels=BIG)
    assert (err.value.code, err.value.message) == (ErrorCode.IMAGE_UNDECODABLE, "the image cannot be decoded")
    assert err.value.detail is not None and "truncated" in err.value.detail


# --- the model's thumbnail ----------------------------------------------------------------------------------------


def corners(image: Image.Image) -> list[tuple[int, ...]]:
    w, h = image.size
    rgb = image.convert("RGB")
    return [rgb.getpixel((x, y)) for x, y in ((w // 4, h // 4), (3 * w // 4, h // 4), (w // 4, 3 * h // 4))]


def close(a: list[tuple[int, ...]], b: list[tuple[int, ...]]) -> bool:
    return all(abs(p - q) <= 40 for pa, pb in zip(a, b, strict=True) for p, q in zip(pa, pb, strict=True))


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_the_thumbnail_is_upright_for_every_exif_orientation(orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(quadrants(64, 48), "JPEG", exif=exif, quality=95)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))  # Pillow's own reading is the reference
    thumb = Image.open(io.BytesIO(make_thumbnail(data, max_pixels=BIG)))
    assert thumb.size == upright.size
    assert close(corners(thumb), corners(upright))


@pytest.mark.parametrize(("size", "fmt", "mode", "expected"), [
    ((1200, 600), "JPEG", "RGB", (512, 256)),
    ((600, 1200), "PNG", "RGBA", (256, 512)),
    ((2400, 1800), "PNG", "P", (512, 384)),
    ((300, 200), "JPEG", "L", (300, 200)),  # never enlarged
    ((512, 100), "PNG", "L", (512, 100)),
])
def test_the_thumbnail_is_an_rgb_jpeg_at_most_512_on_its_long_side(size: tuple[int, int], fmt: str, mode: str,
                                                                   expected: tuple[int, int]) -> None:
    data = encode(quadrants(*size, mode=mode), fmt)
    thumb = Image.open(io.BytesIO(make_thumbnail(data, max_pixels=BIG)))
    assert (thumb.format, thumb.mode, thumb.size) == ("JPEG", "RGB", expected)
    assert max(expected) <= THUMBNAIL_MAX_PX
    assert close(corners(thumb), corners(quadrants(*expected, mode=mode)))


def test_the_thumbnail_data_url_is_its_jpeg_in_base64() -> None:
    jpeg = make_thumbnail(encode(quadrants(), "JPEG"), max_pixels=BIG)
    url = thumbnail_data_url(jpeg)
    prefix = "data:image/jpeg;base64,"
    assert url.startswith(prefix)
    assert base64.b64decode(url[len(prefix):], validate=True) == jpeg


def test_the_limits_are_read_from_the_settings_of_the_same_names(settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(max_image_pixels=11, max_image_width=12, max_image_height=13, max_image_frames=14,
                                max_image_aspect_ratio=15.5, max_full_decode_pixels=16, max_jpeg_scans=17,
                                max_image_metadata_bytes=18)
    assert ImageLimits.from_settings(settings) == ImageLimits(
        max_pixels=11, max_width=12, max_height=13, max_frames=14, max_aspect_ratio=15.5, max_full_decode_pixels=16,
        max_jpeg_scans=17, max_metadata_bytes=18)

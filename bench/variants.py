"""Re-uploads of the sample photos (samples/waste, or WASTE_DATA_DIR): one folder per photo, one file per way
people re-upload the same picture.

    python -m bench.variants --limit 120            # 12-megapixel phone uploads (the default), ~1.5 s per photo
    python -m bench.variants                        # all 90 sample photos: about 3 minutes on 2 cores
    python -m bench.variants --size native          # the photos' own size (384x512, 524x524): seconds

Each folder holds, for one photo (none of the files byte-identical to another):

| file             | what it is                                                                 |
|------------------|----------------------------------------------------------------------------|
| ``original.jpg`` | the phone upload: 4032x3024, mild sensor noise, quality 90 (bench.workload) |
| ``q70.jpg``      | the original re-encoded at quality 70 (a messenger app's re-compression)   |
| ``resize50.jpg`` | the original at 50% size, quality 90                                       |
| ``screenshot.png``| the original downscaled to 1179 px wide (a phone screen), saved as PNG    |
| ``bright10.jpg`` | brightness +10%, quality 90                                                |
| ``exif-rot.jpg`` | stored sideways with EXIF orientation 6, as phones write portrait shots    |
| ``crop5.jpg``    | 5% cropped off the width and the height (2.5% off each edge)               |
| ``text.jpg``     | a caption drawn over the lower part of the photo                           |

Generated once and cached in ``bench/.cache/variants/<size>/`` (gitignored); a 12 MP folder is about 13 MB
(1.2 GB for all 90 sample photos).
:func:`variant_folders` is what the evaluation and the tests use.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from bench import workload
from bench.workload import phone_upload, source_photos

CACHE_ROOT = Path(__file__).resolve().parent / ".cache" / "variants"
SCREEN_WIDTH = 1179  # an iPhone 15's screen width in pixels
SIZES = ("phone", "native")


def _jpeg(image: Image.Image, quality: int = 90, **kw: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality, **kw)
    return out.getvalue()


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=3)
    return out.getvalue()


def _resize(image: Image.Image, factor: float) -> Image.Image:
    return image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))),
                        Image.Resampling.LANCZOS)


def _screenshot(image: Image.Image) -> bytes:
    width = min(SCREEN_WIDTH, image.width)
    return _png(image.resize((width, round(image.height * width / image.width)), Image.Resampling.BICUBIC))


def _exif_rotated(image: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the sensor wrote the picture sideways
    return _jpeg(image.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())


def _crop(image: Image.Image, fraction: float = 0.05) -> bytes:
    dx, dy = round(image.width * fraction / 2), round(image.height * fraction / 2)
    return _jpeg(image.crop((dx, dy, image.width - dx, image.height - dy)))


def _text(image: Image.Image) -> bytes:
    out = image.copy()
    draw = ImageDraw.Draw(out)
    size = max(10, image.height // 12)
    font = ImageFont.load_default(size=size)
    draw.text((image.width // 20, image.height - 2 * size), "my recycling, day 12 #eco", font=font,
              fill=(255, 255, 255), stroke_width=max(1, size // 12), stroke_fill=(0, 0, 0))
    return _jpeg(out)


VARIANTS: dict[str, Callable[[Image.Image], bytes]] = {
    "q70.jpg": lambda im: _jpeg(im, quality=70),
    "resize50.jpg": lambda im: _jpeg(_resize(im, 0.5)),
    "screenshot.png": _screenshot,
    "bright10.jpg": lambda im: _jpeg(ImageEnhance.Brightness(im).enhance(1.10)),
    "exif-rot.jpg": _exif_rotated,
    "crop5.jpg": _crop,
    "text.jpg": _text,
}
ORIGINAL = "original.jpg"
NAMES = (ORIGINAL, *VARIANTS)


def cache_dir(size: str, *, mirror: bool = False) -> Path:
    """The cache folder of one size; for phone uploads it is named after bench.workload's generator parameters,
    so a change there never mixes old and new files."""
    suffix = "-mirror" if mirror else ""
    if size == "phone":
        generator = getattr(workload, "GENERATOR", 1)
        sigma = getattr(workload, "NOISE_SIGMA", 3.0)
        return CACHE_ROOT / f"phone-v{generator}-s{sigma}{suffix}"
    return CACHE_ROOT / f"{size}{suffix}"


def make_folder(source: Path, folder: Path, *, seed: int, size: str, mirror: bool = False) -> Path:
    """Write ``folder`` with every variant of ``source`` (skipped when it is already complete).

    ``mirror`` starts from the photo flipped left to right: a photo no other test or benchmark uploads (its pHash
    is far from the unflipped one's), for runs that need a cold cache on a stack other runs have warmed.
    """
    if all((folder / name).exists() for name in NAMES):
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    if size == "phone":
        original = phone_upload(source, seed=seed)
        if mirror:
            original = _jpeg(ImageOps.mirror(Image.open(io.BytesIO(original)).convert("RGB")))
    else:  # the photo's own size, re-encoded once like an upload
        image = Image.open(source).convert("RGB")
        original = _jpeg(ImageOps.mirror(image) if mirror else image)
    (tmp / ORIGINAL).write_bytes(original)
    image = Image.open(io.BytesIO(original)).convert("RGB")
    for name, make in VARIANTS.items():
        (tmp / name).write_bytes(make(image))
    if folder.exists():
        for stale in folder.iterdir():
            stale.unlink()
        folder.rmdir()
    tmp.rename(folder)
    return folder


def _make(args: tuple[Path, Path, int, str, bool]) -> Path:
    source, folder, seed, size, mirror = args
    return make_folder(source, folder, seed=seed, size=size, mirror=mirror)


def variant_folders(limit: int | None = None, *, size: str = "phone", workers: int | None = None,
                    offset: int = 0, mirror: bool = False) -> list[Path]:
    """One folder per photo (spread over the class folders), generated on first use and cached."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}")
    sources = source_photos()
    if limit is not None and limit < len(sources):
        step = max(1, len(sources) // limit)
        picked = list(enumerate(sources))[offset::step][:limit]
    else:
        picked = list(enumerate(sources))
    root = cache_dir(size, mirror=mirror)
    jobs = [(src, root / f"{i:03d}-{src.parent.name}-{src.stem}", i, size, mirror) for i, src in picked]
    missing = [j for j in jobs if not all((j[1] / n).exists() for n in NAMES)]
    if missing:
        workers = workers or min(len(missing), os.cpu_count() or 1)
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                list(pool.map(_make, missing))
        else:
            for job in missing:
                _make(job)
    return [j[1] for j in jobs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None,
                        help="photos to use (spread over the classes); all of them by default")
    parser.add_argument("--size", choices=SIZES, default="phone")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    parser.add_argument("--mirror", action="store_true", help="start from the photos flipped left to right")
    args = parser.parse_args(argv)
    started = time.monotonic()
    folders = variant_folders(args.limit, size=args.size, workers=args.workers, mirror=args.mirror)
    print(f"{len(folders)} folders x {len(NAMES)} files in {cache_dir(args.size, mirror=args.mirror)} "
          f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    for folder in folders:
        print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Realistic phone uploads made from the shared photos: 4032x3024, mild sensor noise, JPEG quality 90.

Generated once and cached in bench/.cache (about 2-3 MB each).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

CACHE_DIR = Path(__file__).resolve().parent / ".cache" / "phone"
PHONE_SIZE = (4032, 3024)
DATA_DIR = Path(os.environ.get("WASTE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "waste"))


def source_photos() -> list[Path]:
    files = sorted(DATA_DIR.glob("*/*.jpg"))
    if not files:
        raise FileNotFoundError(f"no photos under {DATA_DIR}")
    return files


def phone_upload(path: Path, seed: int) -> bytes:
    image = Image.open(path).convert("RGB").resize(PHONE_SIZE, Image.Resampling.BICUBIC)
    pixels = np.asarray(image, dtype=np.int16)
    noise = np.random.default_rng(seed).normal(0, 3.0, pixels.shape).astype(np.int16)
    noisy = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    noisy.save(out, format="JPEG", quality=90)
    return out.getvalue()


def phone_uploads(count: int) -> list[Path]:
    """``count`` distinct phone-sized JPEGs, spread over the class folders; cached on disk."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    sources = source_photos()
    step = max(1, len(sources) // count)
    paths = []
    for i, src in enumerate(sources[::step][:count]):
        target = CACHE_DIR / f"{i:03d}-{src.parent.name}-{src.stem}.jpg"
        if not target.exists():
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(phone_upload(src, seed=i))
            tmp.rename(target)
        paths.append(target)
    return paths

"""Realistic phone uploads made from the sample photos: 4032x3024, mild sensor noise, JPEG quality 90.

The photos are the repository's ``samples/waste`` (or ``WASTE_DATA_DIR``). They are small (384x512 and
524x524); each is upscaled to a 12-megapixel phone frame, given
Gaussian sensor noise (sigma 5 of 255, which brings a quality-90 JPEG to about 2.3 MB, like a real phone
photo) and encoded. Generated once, in parallel, and cached in ``bench/.cache`` under a folder named after
the parameters, so changing one never mixes old and new files.

Every bench run takes its photos from one deterministic list (:func:`phone_uploads`), so the set used for the
cache-hit phases and the sets used for the cache-miss bursts never share a source photo. A full run needs more
distinct photos than the 90 shipped ones: past them the list goes on with the photos turned by a quarter, a half
and three quarters (a different photo to pHash, see ``tools.photos``).
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from tools.photos import data_dir, sample_photos, turned

PHONE_SIZE = (4032, 3024)
JPEG_QUALITY = 90
NOISE_SIGMA = 5.0
# Bump GENERATOR when phone_upload() changes: the folder name is the cache key.
GENERATOR = 2
CACHE_DIR = (Path(__file__).resolve().parent / ".cache"
             / f"phone-v{GENERATOR}-{PHONE_SIZE[0]}x{PHONE_SIZE[1]}-q{JPEG_QUALITY}-s{NOISE_SIGMA}")
DATA_DIR = data_dir()


def source_photos() -> list[Path]:
    """The photos as they are (sorted): what bench.variants and the near-duplicate measurements start from."""
    return sample_photos(DATA_DIR)


def phone_upload(path: Path, seed: int, sigma: float = NOISE_SIGMA, quarter_turns: int = 0) -> bytes:
    image = turned(path, quarter_turns).resize(PHONE_SIZE, Image.Resampling.BICUBIC)
    pixels = np.asarray(image, dtype=np.float32)
    # float32 draws: half the time of float64 ones, and the noise is rounded to whole levels anyway.
    noise = np.random.default_rng(seed).standard_normal(pixels.shape, dtype=np.float32)
    noise *= sigma
    noise += pixels
    noisy = Image.fromarray(np.clip(np.rint(noise), 0, 255).astype(np.uint8))
    out = io.BytesIO()
    noisy.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _make(job: tuple[Path, Path, int, int]) -> None:
    src, target, seed, quarter_turns = job
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(phone_upload(src, seed=seed, quarter_turns=quarter_turns))
    tmp.rename(target)


def ordered_sources() -> list[tuple[Path, int]]:
    """Every source photo once, round-robin over the class folders (any prefix is spread over the classes), then
    the same order turned by one, two and three quarters: ``(path, quarter_turns)``, four times the photos."""
    by_class: dict[str, list[Path]] = {}
    for path in source_photos():
        by_class.setdefault(path.parent.name, []).append(path)
    queues = [by_class[name] for name in sorted(by_class)]
    ordered: list[Path] = []
    for i in range(max(len(q) for q in queues)):
        ordered.extend(q[i] for q in queues if i < len(q))
    return [(path, turns) for turns in range(4) for path in ordered]


def phone_uploads(count: int, *, workers: int | None = None) -> list[Path]:
    """The first ``count`` phone uploads of one fixed order: distinct source photos, spread over the classes.

    ``phone_uploads(n)`` is a prefix of ``phone_uploads(m)`` for n < m, so callers that need disjoint sets
    take one list and slice it, and a quick run generates nothing a full run would not reuse.
    """
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    sources = ordered_sources()
    if count > len(sources):
        raise ValueError(f"asked for {count} photos, only {len(sources)} exist ({len(sources) // 4} source photos, "
                         "each also turned three ways)")
    jobs: list[tuple[Path, Path, int, int]] = []
    paths = []
    for i, (src, turns) in enumerate(sources[:count]):
        target = CACHE_DIR / f"{i:03d}-{src.parent.name}-{src.stem}{f'-t{turns}' if turns else ''}.jpg"
        if not target.exists():
            jobs.append((src, target, i, turns))
        paths.append(target)
    if jobs:
        workers = workers or min(len(jobs), os.cpu_count() or 1)
        print(f"[bench] generating {len(jobs)} phone uploads in {CACHE_DIR} (once; cached) ...", flush=True)
        if workers <= 1:
            for job in jobs:
                _make(job)
        else:
            with ProcessPoolExecutor(workers) as pool:
                list(pool.map(_make, jobs))
    return paths

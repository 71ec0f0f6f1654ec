"""Hashing throughput: the original design's full decode vs the project's draft decode vs the decode floor."""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagehash
from PIL import Image

from streams.imaging import _DRAFT_MIN_PX, full_decode_phash, hamming_distance, hash_image

MAX_PIXELS = 50_000_000


def seed_way(data: bytes) -> str:
    """The original design: imagehash.phash(Image.open(f), hash_size=16) on a full decode."""
    return str(imagehash.phash(Image.open(io.BytesIO(data)), hash_size=16))


def project_way(data: bytes) -> str:
    return hash_image(data, max_pixels=MAX_PIXELS).phash


def floor_way(data: bytes) -> None:
    """Just decode at the scale the project decodes to: the most any hashing path could reach."""
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (_DRAFT_MIN_PX, _DRAFT_MIN_PX))
    image.load()


def rate(fn: Callable[[bytes], object], blobs: list[bytes], threads: int) -> float:
    started = time.perf_counter()
    if threads == 1:
        for blob in blobs:
            fn(blob)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fn, blobs))
    return len(blobs) / (time.perf_counter() - started)


def run(paths: list[Path], repeats: int = 5) -> dict[str, float]:
    blobs = [p.read_bytes() for p in paths]
    for fn in (seed_way, project_way, floor_way):  # warm caches and lazy imports
        fn(blobs[0])
    samples: dict[str, list[float]] = {k: [] for k in ("seed", "project", "floor", "project_2", "seed_2")}
    # Interleave the variants in each repeat so machine noise hits them alike.
    for _ in range(repeats):
        samples["seed"].append(rate(seed_way, blobs[: max(4, len(blobs) // 4)], 1))
        samples["project"].append(rate(project_way, blobs, 1))
        samples["floor"].append(rate(floor_way, blobs, 1))
        samples["project_2"].append(rate(project_way, blobs, 2))
        samples["seed_2"].append(rate(seed_way, blobs[: max(4, len(blobs) // 4)], 2))
    med = {k: statistics.median(v) for k, v in samples.items()}
    bit_diffs = [hamming_distance(project_way(b), full_decode_phash(b)) for b in blobs]
    return {
        "seed_img_s": round(med["seed"], 2),
        "project_img_s": round(med["project"], 2),
        "floor_img_s": round(med["floor"], 2),
        "project_vs_seed": round(med["project"] / med["seed"], 2),
        "project_vs_floor": round(med["project"] / med["floor"], 3),
        "two_core_img_s": round(med["project_2"], 2),
        "two_core_speedup": round(med["project_2"] / med["project"], 2),
        "seed_two_core_speedup": round(med["seed_2"] / med["seed"], 2),
        "max_bit_diff": max(bit_diffs),
        "mean_bit_diff": round(statistics.mean(bit_diffs), 2),
        "images": len(blobs),
        "repeats": repeats,
    }


if __name__ == "__main__":
    import json

    from bench.workload import phone_uploads

    print(json.dumps(run(phone_uploads(16), repeats=3), indent=2))

"""Hashing throughput: the original design's full decode vs the project's draft decode vs the decode floor."""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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


VARIANTS: tuple[tuple[str, Callable[[bytes], object], int], ...] = (
    ("seed", seed_way, 1),
    ("project", project_way, 1),
    ("floor", floor_way, 1),
    ("project_2", project_way, 2),
    ("seed_2", seed_way, 2),
)
CHUNK = 16  # images per interleaving slot (two threads each get 8: little idle tail at the slot's end)


def _timed(fn: Callable[[bytes], object], blobs: list[bytes], pool: ThreadPoolExecutor | None) -> float:
    started = time.perf_counter()
    if pool is None:
        for blob in blobs:
            fn(blob)
    else:
        list(pool.map(fn, blobs))
    return time.perf_counter() - started


def run(paths: list[Path], repeats: int = 5) -> dict[str, Any]:
    """Median images/s of each variant over ``repeats``.

    Noise on a shared 2-core VM comes in bursts of a second or two, so the variants are interleaved in slots
    of CHUNK images (rotating their order from slot to slot) instead of timing each over the whole set: a
    slow moment then slows every variant alike. A repeat's rate is its images over its summed time.
    """
    blobs = [p.read_bytes() for p in paths]
    chunks = [blobs[i:i + CHUNK] for i in range(0, len(blobs), CHUNK)]
    pool = ThreadPoolExecutor(2)
    try:
        for _, fn, threads in VARIANTS:  # warm caches, lazy imports and the pool's threads
            _timed(fn, blobs[:2], pool if threads == 2 else None)
        samples: dict[str, list[float]] = {name: [] for name, _, _ in VARIANTS}
        for _ in range(repeats):
            spent = dict.fromkeys(samples, 0.0)
            done = dict.fromkeys(samples, 0)
            for slot, chunk in enumerate(chunks):
                order = VARIANTS[slot % len(VARIANTS):] + VARIANTS[:slot % len(VARIANTS)]
                for name, fn, threads in order:
                    # Every method hashes every image: a ratio of rates over different images would mislead.
                    spent[name] += _timed(fn, chunk, pool if threads == 2 else None)
                    done[name] += len(chunk)
            for name in samples:
                samples[name].append(done[name] / spent[name])
    finally:
        pool.shutdown()
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
        "seed_two_core_img_s": round(med["seed_2"], 2),
        "seed_two_core_speedup": round(med["seed_2"] / med["seed"], 2),
        "max_bit_diff": max(bit_diffs),
        "mean_bit_diff": round(statistics.mean(bit_diffs), 2),
        "images": len(blobs),
        "repeats": repeats,
        "runs_img_s": {k: [round(x, 1) for x in v] for k, v in samples.items()},
    }


if __name__ == "__main__":
    import json

    from bench.workload import phone_uploads

    print(json.dumps(run(phone_uploads(16), repeats=3), indent=2))


# --- the formats phones send -----------------------------------------------------------------------------------

PHONE_FORMATS = ("JPEG", "WEBP", "HEIF", "AVIF", "PNG")


def format_costs(paths: list[Path], repeats: int = 3) -> dict[str, Any]:
    """What one 12 MP photo costs the worker to hash, per format: ms per image (1 core, median of repeats), and
    how many bits its pHash is from the JPEG's. JPEG decodes at 1/8 scale in libjpeg; the others decode whole
    (then reduce), which is why their header limit (MAX_FULL_DECODE_PIXELS) is lower.

    The encoded copies are made once (HEIF encoding takes seconds per photo) and kept in bench/.cache.
    """
    cache = Path(__file__).resolve().parent / ".cache" / "formats"
    cache.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[bytes]] = {fmt: [] for fmt in PHONE_FORMATS}
    for path in paths:
        source = Image.open(path).convert("RGB")
        for fmt in PHONE_FORMATS:
            target = cache / f"{path.stem}.{fmt.lower()}"
            if fmt == "JPEG":
                files[fmt].append(path.read_bytes())
                continue
            if not target.exists():
                out = io.BytesIO()
                source.save(out, fmt, **({} if fmt == "PNG" else {"quality": 80}))
                target.write_bytes(out.getvalue())
            files[fmt].append(target.read_bytes())
    out: dict[str, Any] = {"images": len(paths), "repeats": repeats, "size_px": "x".join(map(str, source.size))}
    reference = [project_way(b) for b in files["JPEG"]]
    for fmt, blobs in files.items():
        rates = []
        for _ in range(repeats):
            started = time.perf_counter()
            hashes = [project_way(b) for b in blobs]
            rates.append((time.perf_counter() - started) / len(blobs))
        out[fmt.lower()] = {
            "ms_per_image": round(statistics.median(rates) * 1000, 1),
            "mean_kb": round(sum(map(len, blobs)) / len(blobs) / 1024),
            "max_bits_from_jpeg": max(hamming_distance(a, b) for a, b in zip(hashes, reference, strict=True)),
        }
    jpeg_ms = out["jpeg"]["ms_per_image"]
    for fmt in PHONE_FORMATS:
        out[fmt.lower()]["vs_jpeg"] = round(out[fmt.lower()]["ms_per_image"] / jpeg_ms, 1)
    return out

"""How far apart are re-uploads of one photo, and how close do different photos come? Pick the near-duplicate T.

    python -m tools.evaluate_phash bench/.cache/variants/phone          # a root folder of item folders
    python -m tools.evaluate_phash photos/a photos/b photos/c --json    # item folders

One folder is one item: its files are re-uploads of the same photo. Different folders are different items.
Hashes are computed the way the pipeline computes them (:func:`streams.imaging.hash_image`: JPEG draft decode,
EXIF orientation, 256-bit pHash); ``--full-decode`` uses the original design's full decode instead.

Printed: for every threshold T in 0..64 the recall of re-uploads (pairs of files of one item within T bits, and
every file against its item's reference file) and the false-match rate (pairs of files of different items within
T bits); recall per file name (``q70.jpg``, ``crop5.jpg``... when the folders share names, as bench.variants makes
them); and the histogram of distances of same-item and different-item pairs.
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import json
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streams.imaging import full_decode_phash, hash_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
MAX_PIXELS = 50_000_000
REFERENCE_NAMES = ("original.jpg", "original.png")
PER_NAME_THRESHOLDS = (0, 2, 4, 6, 8, 10, 12, 16, 20, 24, 32)


@dataclass
class Item:
    name: str
    files: list[Path]
    hashes: list[str] = field(default_factory=list)

    @property
    def reference(self) -> int:
        """The file every other file of the item is compared with: ``original.*`` if present, else the first."""
        for i, f in enumerate(self.files):
            if f.name in REFERENCE_NAMES:
                return i
        return 0


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def collect_items(folders: Sequence[Path], *, exclude: Sequence[str] = ()) -> list[Item]:
    """Item folders, or a single root whose sub-folders are the items; files matching ``exclude`` are left out."""
    if len(folders) == 1 and not _images(folders[0]):
        folders = sorted(p for p in folders[0].iterdir() if p.is_dir() and not p.name.endswith(".tmp"))
    items = [Item(f.name, [p for p in _images(f) if not any(fnmatch.fnmatch(p.name, x) for x in exclude)])
             for f in folders]
    items = [i for i in items if i.files]
    if len(items) < 2:
        raise SystemExit("need at least two item folders with images")
    return items


def _hash_file(path: Path, *, full_decode: bool) -> str:
    data = path.read_bytes()
    return full_decode_phash(data) if full_decode else hash_image(data, max_pixels=MAX_PIXELS).phash


def hash_items(items: list[Item], *, full_decode: bool = False, workers: int = 2) -> None:
    paths = [f for item in items for f in item.files]
    with ThreadPoolExecutor(workers) as pool:  # Pillow releases the GIL while decoding
        hashes = list(pool.map(functools.partial(_hash_file, full_decode=full_decode), paths))
    it = iter(hashes)
    for item in items:
        item.hashes = [next(it) for _ in item.files]


def _as_words(hashes: Sequence[str]) -> np.ndarray:
    """256-bit hex hashes as an (n, 4) uint64 array."""
    return np.array([[int(h[i:i + 16], 16) for i in range(0, 64, 16)] for h in hashes], dtype=np.uint64)


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x).sum(axis=-1, dtype=np.int64)


def distance_histograms(items: list[Item]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Histograms (length 257) of same-item pair distances, different-item pair distances, and file-vs-reference."""
    same = np.zeros(257, dtype=np.int64)
    different = np.zeros(257, dtype=np.int64)
    vs_reference = np.zeros(257, dtype=np.int64)
    words = _as_words([h for item in items for h in item.hashes])
    owner = np.repeat(np.arange(len(items)), [len(item.hashes) for item in items])
    n = len(words)
    block = 256
    for start in range(0, n, block):
        rows = words[start:start + block]
        dist = _popcount(rows[:, None, :] ^ words[None, :, :])  # (block, n)
        row_idx = np.arange(start, min(start + block, n))
        upper = row_idx[:, None] < np.arange(n)[None, :]  # each unordered pair once
        same_item = owner[row_idx][:, None] == owner[None, :]
        same += np.bincount(dist[upper & same_item], minlength=257)
        different += np.bincount(dist[upper & ~same_item], minlength=257)
    offset = 0
    for item in items:
        ref = item.reference
        ref_words = words[offset + ref]
        for j in range(len(item.hashes)):
            if j != ref:
                vs_reference[int(_popcount(words[offset + j] ^ ref_words))] += 1
        offset += len(item.hashes)
    return same, different, vs_reference


def _rate(hist: np.ndarray, t: int) -> float:
    total = int(hist.sum())
    return float(hist[: t + 1].sum()) / total if total else 0.0


def evaluate(items: list[Item], *, max_t: int = 64) -> dict:  # type: ignore[type-arg]
    same, different, vs_reference = distance_histograms(items)
    per_name: dict[str, list[int]] = {}
    for item in items:
        ref = item.hashes[item.reference]
        for j, (path, h) in enumerate(zip(item.files, item.hashes, strict=True)):
            if j != item.reference:
                per_name.setdefault(path.name, []).append((int(h, 16) ^ int(ref, 16)).bit_count())
    thresholds = [
        {
            "t": t,
            "recall_pairs": round(_rate(same, t), 4),
            "recall_vs_reference": round(_rate(vs_reference, t), 4),
            "false_match_rate": _rate(different, t),
            "false_matches": int(different[: t + 1].sum()),
        }
        for t in range(max_t + 1)
    ]
    nonzero = np.nonzero(different)[0]
    same_nonzero = np.nonzero(same)[0]
    return {
        "items": len(items),
        "files": sum(len(i.files) for i in items),
        "same_item_pairs": int(same.sum()),
        "different_item_pairs": int(different.sum()),
        "closest_different_items": int(nonzero[0]) if len(nonzero) else None,
        "farthest_same_item": int(same_nonzero[-1]) if len(same_nonzero) else None,
        "thresholds": thresholds,
        "per_name_vs_reference": {
            name: {
                "files": len(ds),
                "median": statistics.median(ds),
                "max": max(ds),
                "recall": {str(t): round(sum(d <= t for d in ds) / len(ds), 4) for t in PER_NAME_THRESHOLDS},
            }
            for name, ds in sorted(per_name.items())
        },
        "histogram": {
            "same": {str(d): int(c) for d, c in enumerate(same) if c},
            "different": {str(d): int(c) for d, c in enumerate(different) if c},
        },
    }


def _bar(count: int, peak: int, width: int = 40) -> str:
    return "#" * max(1 if count else 0, round(width * count / peak)) if peak else ""


def render(report: dict, *, bucket: int = 4) -> str:  # type: ignore[type-arg]
    lines = [
        f"items {report['items']}, files {report['files']}, same-item pairs {report['same_item_pairs']}, "
        f"different-item pairs {report['different_item_pairs']}",
        f"closest pair of different items: {report['closest_different_items']} bits; "
        f"farthest pair of one item: {report['farthest_same_item']} bits",
        "",
        "   T  recall(pairs)  recall(vs ref)  false-match rate  false matches",
    ]
    for row in report["thresholds"]:
        lines.append(f"{row['t']:>4}  {row['recall_pairs']:>13.2%}  {row['recall_vs_reference']:>14.2%}  "
                     f"{row['false_match_rate']:>16.6%}  {row['false_matches']:>13}")
    per_name = report["per_name_vs_reference"]
    if per_name:
        lines += ["", "recall against the reference file, by file name (T = bits)",
                  f"{'file':<16}{'n':>5}{'median':>8}{'max':>6}  " + "".join(f"{'T' + t:>7}" for t in
                                                                          map(str, PER_NAME_THRESHOLDS))]
        for name, row in per_name.items():
            lines.append(f"{name:<16}{row['files']:>5}{row['median']:>8}{row['max']:>6}  "
                         + "".join(f"{row['recall'][str(t)]:>7.0%}" for t in PER_NAME_THRESHOLDS))
    same = Counter({int(d): c for d, c in report["histogram"]["same"].items()})
    diff = Counter({int(d): c for d, c in report["histogram"]["different"].items()})
    buckets = range(0, 257, bucket)
    rows = [(b, sum(same[d] for d in range(b, b + bucket)), sum(diff[d] for d in range(b, b + bucket)))
            for b in buckets]
    rows = [r for r in rows if r[1] or r[2]]
    peak_s = max((r[1] for r in rows), default=0)
    peak_d = max((r[2] for r in rows), default=0)
    lines += ["", f"distance histogram ({bucket}-bit buckets; bars scaled per column)",
              f"{'bits':>9}  {'same':>7} {'':<40}  {'different':>9}"]
    for b, s, d in rows:
        lines.append(f"{b:>4}-{b + bucket - 1:<4}  {s:>7} {_bar(s, peak_s):<40}  {d:>9} {_bar(d, peak_d)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="item folders, or one root folder of item folders")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--full-decode", action="store_true", help="hash with a full decode (the original design)")
    parser.add_argument("--max-t", type=int, default=64)
    parser.add_argument("--bucket", type=int, default=4, help="histogram bucket width in bits")
    parser.add_argument("--workers", type=int, default=2, help="hashing threads")
    parser.add_argument("--exclude", nargs="*", default=[], metavar="PATTERN",
                        help="leave out files whose names match (e.g. 'crop5.*' 'text.*')")
    args = parser.parse_args(argv)
    items = collect_items(args.folders, exclude=args.exclude)
    hash_items(items, full_decode=args.full_decode, workers=args.workers)
    report = evaluate(items, max_t=args.max_t)
    report["hash"] = "full-decode" if args.full_decode else "draft-decode (pipeline)"
    print(json.dumps(report, indent=2) if args.json else render(report, bucket=args.bucket))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reframed repeats: which matcher answers crops, small rotations, mirror images and letterboxed screenshots of a
cached photo, and how close do different photos (same board, same light) come to being accepted?

    python -m tools.evaluate_reframed                  # the 90 shipped photos (samples/waste or WASTE_DATA_DIR)
    python -m tools.evaluate_reframed --limit 30 --json

The lookalike set is made in memory from each photo (its own size, re-encoded at quality 90 as ``original``):
centred crops of 1, 3 and 5% (of width and height), off-centre crops of 2 and 5% (all from the top-left),
rotations of +1, -3 and +5 degrees (cropped to fill the frame, as phone editors do), the mirror image, the mirror
image cropped 3%, the photo letterboxed in a 1170x2532 phone screenshot (black, status bar and home indicator, PNG)
and in a white app frame with tool bars (JPEG), padded with a 10% white border, and re-encoded at 75% size and
quality 60. The *different photos* are the other photos of the set: TrashNet's share one white board and one
light, RealWaste's share their backgrounds, so every pair of them is a lookalike pair of another photo.

Methods, each as the pipeline would decide:

- ``phash``: the pipeline's pHash (draft decode), accepted within NEAR_DUPLICATE_MAX_DISTANCE (12) bits;
- ``phash-trim-flip``: pHash of the photo with its uniform frame trimmed, the query also mirrored, within 12;
- ``pdq-dihedral``: PDQ (``pdqhash``) of the trimmed photo against the 8 dihedral variants of the query, within
  31 bits (PDQ's usual match threshold);
- ``orb``: the reframed matcher (:mod:`streams.reframed`): candidates by shared visual words among the cached
  originals (the top ``--candidates`` with at least 2 shared words), accepted when the RANSAC and pixel checks
  agree;
- ``pipeline``: what the dedupe step answers from the cache: the pHash tiers, then ``orb`` when they miss.

Printed per method: recall per variant (a variant answered with *its own* photo), false hits (answered with
another photo: variants and originals of other photos), and the near-miss (the closest any different photo came).
For ``orb`` the near-miss is measured on every pair of different originals with the full check, not only on
candidates, and reports how far each check was from accepting.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from streams import reframed
from streams.imaging import ImageLimits, hash_image
from streams.reframed_index import MIN_VOTES
from tools.photos import sample_photos

LIMITS = ImageLimits(max_pixels=50_000_000)
PHASH_T = 12
PDQ_T = 31


# --- the lookalike set --------------------------------------------------------------------------------------------


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG", compress_level=3)
    return out.getvalue()


def crop(image: Image.Image, fraction: float, *, centred: bool) -> Image.Image:
    dx, dy = round(image.width * fraction), round(image.height * fraction)
    if centred:
        return image.crop((dx // 2, dy // 2, image.width - (dx - dx // 2), image.height - (dy - dy // 2)))
    return image.crop((dx, dy, image.width, image.height))


def rotate(image: Image.Image, degrees: float) -> Image.Image:
    """Rotated about the centre, cropped to the largest frame of the same aspect without corners, resized back."""
    w, h = image.size
    turned = image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=False)
    a = math.radians(abs(degrees))
    # the largest w' x h' (same aspect) inside the rotated frame: w'cos + h'sin <= w, w'sin + h'cos <= h
    k = min(w / (w * math.cos(a) + h * math.sin(a)), h / (w * math.sin(a) + h * math.cos(a)))
    cw, ch = w * k, h * k
    box = (round((w - cw) / 2), round((h - ch) / 2), round((w + cw) / 2), round((h + ch) / 2))
    return turned.crop(box).resize((w, h), Image.Resampling.LANCZOS)


def screenshot(image: Image.Image, *, dark: bool) -> Image.Image:
    """The photo shown full-width in a 1170x2532 phone screenshot: bars above and below, text in them."""
    frame_w, frame_h = 1170, 2532
    bg, fg = ((0, 0, 0), (255, 255, 255)) if dark else ((255, 255, 255), (30, 30, 30))
    frame = Image.new("RGB", (frame_w, frame_h), bg)
    draw = ImageDraw.Draw(frame)
    font = ImageFont.load_default(size=44)
    draw.text((90, 40), "9:41", font=font, fill=fg)
    draw.text((frame_w - 260, 40), "5G  87%", font=font, fill=fg)
    if not dark:  # an app's tool bar and tab bar
        draw.rectangle((0, 140, frame_w, 300), fill=(242, 242, 247))
        draw.text((60, 195), "< Photos        Edit", font=font, fill=(0, 122, 255))
        draw.rectangle((0, frame_h - 260, frame_w, frame_h), fill=(242, 242, 247))
        draw.text((90, frame_h - 200), "Share    Like    Info    Delete", font=font, fill=(0, 122, 255))
    photo = image.resize((frame_w, round(image.height * frame_w / image.width)), Image.Resampling.BICUBIC)
    frame.paste(photo, (0, (frame_h - photo.height) // 2))
    draw.rounded_rectangle((frame_w // 2 - 200, frame_h - 30, frame_w // 2 + 200, frame_h - 20), 5, fill=fg)
    return frame


def pad(image: Image.Image, fraction: float) -> Image.Image:
    border = round(max(image.size) * fraction)
    return ImageOps.expand(image, border=border, fill=(255, 255, 255))


VARIANTS: dict[str, Callable[[Image.Image], bytes]] = {
    "crop1c": lambda im: _jpeg(crop(im, 0.01, centred=True)),
    "crop3c": lambda im: _jpeg(crop(im, 0.03, centred=True)),
    "crop5c": lambda im: _jpeg(crop(im, 0.05, centred=True)),
    "crop2o": lambda im: _jpeg(crop(im, 0.02, centred=False)),
    "crop5o": lambda im: _jpeg(crop(im, 0.05, centred=False)),
    "rot+1": lambda im: _jpeg(rotate(im, 1)),
    "rot-3": lambda im: _jpeg(rotate(im, -3)),
    "rot+5": lambda im: _jpeg(rotate(im, 5)),
    "mirror": lambda im: _jpeg(ImageOps.mirror(im)),
    "mirror-crop3": lambda im: _jpeg(crop(ImageOps.mirror(im), 0.03, centred=True)),
    "screenshot-dark": lambda im: _png(screenshot(im, dark=True)),
    "screenshot-app": lambda im: _jpeg(screenshot(im, dark=False), 85),
    "pad10": lambda im: _jpeg(pad(im, 0.10)),
    "reencode": lambda im: _jpeg(im.resize((round(im.width * 0.75), round(im.height * 0.75)),
                                           Image.Resampling.LANCZOS), 60),
}


def lookalike_set(photos: list[Path]) -> list[dict[str, bytes]]:
    """For each photo: {"original": bytes, variant name: bytes, ...}."""
    out = []
    for path in photos:
        original = _jpeg(Image.open(path).convert("RGB"))
        image = Image.open(io.BytesIO(original)).convert("RGB")
        out.append({"original": original, **{name: make(image) for name, make in VARIANTS.items()}})
    return out


# --- signatures ----------------------------------------------------------------------------------------------------


@dataclass
class Signatures:
    phash: str
    phash_trim: list[str]  # upright, mirrored
    pdq: list[np.ndarray]  # 8 dihedral variants (the first: as it is)
    query: reframed.Query
    stored: reframed.Features
    timings_ms: dict[str, float] = field(default_factory=dict)


def _phash_of(grey: np.ndarray) -> str:
    import imagehash

    return str(imagehash.phash(Image.fromarray(grey), hash_size=16))


def signatures(data: bytes) -> Signatures:
    try:
        import pdqhash  # the bench extra (pyproject.toml); without it the pdq column is left out
    except ImportError:
        pdqhash = None
    timings: dict[str, float] = {}
    started = time.perf_counter()
    phash = hash_image(data, max_pixels=LIMITS.max_pixels).phash
    timings["phash"] = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    grey = reframed.decode_grey(data, limits=LIMITS)
    trimmed = reframed.trim_frame(grey)
    timings["decode+trim"] = (time.perf_counter() - started) * 1000
    phash_trim = [_phash_of(trimmed), _phash_of(np.ascontiguousarray(trimmed[:, ::-1]))]
    rgb = np.asarray(Image.fromarray(trimmed).convert("RGB"))
    vectors = pdqhash.compute_dihedral(rgb)[0] if pdqhash is not None else []
    started = time.perf_counter()
    query = reframed.query_features(grey)
    timings["orb-query"] = (time.perf_counter() - started) * 1000
    stored = reframed.stored_features(grey)
    return Signatures(phash, phash_trim, [np.asarray(v, dtype=bool) for v in vectors], query, stored, timings)


def _hamming_hex(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


# --- evaluation ------------------------------------------------------------------------------------------------


def evaluate(limit: int | None = None, *, candidates: int = 8, workers: int = 2,
             rule: reframed.Rule | None = None) -> dict:  # type: ignore[type-arg]
    rule = rule or reframed.Rule()
    photos = sample_photos()
    if limit is not None and limit < len(photos):
        step = len(photos) / limit
        photos = [photos[int(i * step)] for i in range(limit)]
    started = time.monotonic()
    sets = lookalike_set(photos)
    names = ["original", *VARIANTS]
    jobs = [(i, name, blobs[name]) for i, blobs in enumerate(sets) for name in names]
    with ThreadPoolExecutor(workers) as pool:
        sigs = list(pool.map(lambda job: signatures(job[2]), jobs))
    by = {(i, name): s for (i, name, _), s in zip(jobs, sigs, strict=True)}
    originals = [by[(i, "original")] for i in range(len(sets))]
    # The visual-word index of the cached originals: word -> photos posted under it.
    postings: dict[int, list[int]] = defaultdict(list)
    for i, sig in enumerate(originals):
        for word in reframed.indexed_words(sig.stored):
            postings[word].append(i)
    stored = [reframed.unpack(reframed.pack(sig.stored)) for sig in originals]  # as the index keeps them

    methods = ("phash", "phash-trim-flip", "pdq-dihedral", "orb", "pipeline")
    recall: dict[str, dict[str, list[bool]]] = {m: defaultdict(list) for m in methods}
    false_hits: dict[str, list[str]] = {m: [] for m in methods}
    closest_other: dict[str, float] = {"phash": 256, "phash-trim-flip": 256, "pdq-dihedral": 256}
    candidate_rank: dict[str, list[int]] = defaultdict(list)
    verify_ms: list[float] = []
    verified_per_query: list[int] = []

    def orb_lookup(sig: Signatures) -> tuple[int | None, list[int], reframed.Verdict | None]:
        votes: dict[int, int] = defaultdict(int)
        for word in reframed.query_words(sig.query):
            for j in postings.get(word, ()):
                votes[j] += 1
        ranked = [j for j in sorted(votes, key=lambda j: -votes[j])[:candidates] if votes[j] >= MIN_VOTES]
        for j in ranked:
            t0 = time.perf_counter()
            verdict = reframed.verify(sig.query, stored[j], rule)
            verify_ms.append((time.perf_counter() - t0) * 1000)
            if verdict.accepted:
                return j, ranked, verdict
        return None, ranked, None

    def orb_task(job: tuple[int, str]) -> tuple[int, str, int | None, list[int], reframed.Verdict | None]:
        i, name = job
        return (i, name, *orb_lookup(by[job]))

    queries = [(i, name) for i in range(len(sets)) for name in names if name != "original"]
    with ThreadPoolExecutor(workers) as pool:
        orb_results = list(pool.map(orb_task, queries))
    for i, name, accepted, ranked, _ in orb_results:
        recall["orb"][name].append(accepted == i)
        candidate_rank[name].append(ranked.index(i) + 1 if i in ranked else 0)
        if accepted is not None and accepted != i:
            false_hits["orb"].append(f"{name} of {photos[i].name} -> {photos[accepted].name}")
        verified_per_query.append(len(ranked))

    for i, name in queries:
        sig = by[(i, name)]
        own = originals[i]
        recall["phash"][name].append(_hamming_hex(sig.phash, own.phash) <= PHASH_T)
        recall["phash-trim-flip"][name].append(min(_hamming_hex(q, own.phash_trim[0]) for q in sig.phash_trim)
                                               <= PHASH_T)
        recall["pdq-dihedral"][name].append(_pdq_distance(sig, own) <= PDQ_T)
        # The pipeline: the pHash tiers first (within 12 bits), the reframed tier only when they miss.
        recall["pipeline"][name].append(recall["phash"][name][-1] or recall["orb"][name][-1])
        for j, other in enumerate(originals):
            if j == i:
                continue
            d = _hamming_hex(sig.phash, other.phash)
            closest_other["phash"] = min(closest_other["phash"], d)
            if d <= PHASH_T:
                false_hits["phash"].append(f"{name} of {photos[i].name} -> {photos[j].name}")
            d = min(_hamming_hex(q, other.phash_trim[0]) for q in sig.phash_trim)
            closest_other["phash-trim-flip"] = min(closest_other["phash-trim-flip"], d)
            if d <= PHASH_T:
                false_hits["phash-trim-flip"].append(f"{name} of {photos[i].name} -> {photos[j].name}")
            d = _pdq_distance(sig, other)
            closest_other["pdq-dihedral"] = min(closest_other["pdq-dihedral"], d)
            if d <= PDQ_T:
                false_hits["pdq-dihedral"].append(f"{name} of {photos[i].name} -> {photos[j].name}")

    # Different photos against each other with the full check (every pair, both ways, not only candidates).
    pairs = [(i, j) for i in range(len(sets)) for j in range(len(sets)) if i != j]

    def pair_task(pair: tuple[int, int]) -> tuple[int, int, reframed.Verdict]:
        i, j = pair
        return i, j, reframed.verify(originals[i].query, stored[j], rule)

    with ThreadPoolExecutor(workers) as pool:
        pair_verdicts = list(pool.map(pair_task, pairs))
    for i, j, verdict in pair_verdicts:
        if verdict.accepted:
            false_hits["orb"].append(f"original of {photos[i].name} -> {photos[j].name} (all-pairs)")
    false_hits["pipeline"] = false_hits["phash"] + false_hits["orb"]
    near = _near_misses([v for _, _, v in pair_verdicts], rule)
    own_verdicts = [reframed.verify(by[(i, name)].query, stored[i], rule) for i, name in queries]
    weakest = _weakest_accepts([v for v in own_verdicts if v.accepted])

    cost = {key: round(float(np.median([s.timings_ms[key] for s in sigs])), 2)
            for key in ("phash", "decode+trim", "orb-query")}
    cost["verify per candidate (median)"] = round(float(np.median(verify_ms)), 2) if verify_ms else 0.0
    cost["candidates verified per lookup (mean)"] = round(float(np.mean(verified_per_query)), 2)
    blob_sizes = [len(reframed.pack(s.stored)) for s in originals]
    return {
        "photos": len(sets),
        "variants": list(VARIANTS),
        "rule": rule.__dict__,
        "candidates": candidates,
        "recall": {m: {name: round(sum(v) / len(v), 4) for name, v in recall[m].items()} for m in methods},
        "recall_all": {m: round(sum(sum(v) for v in recall[m].values())
                                / sum(len(v) for v in recall[m].values()), 4) for m in methods},
        "false_hits": {m: len(v) for m, v in false_hits.items()},
        "false_hit_examples": {m: v[:5] for m, v in false_hits.items()},
        "closest_different_bits": closest_other,
        "orb_candidate_rank_misses": {name: sum(1 for r in ranks if r == 0) for name, ranks in candidate_rank.items()},
        "orb_different_pairs_checked": len(pairs),
        "orb_near_misses": near,
        "orb_weakest_accepts": weakest,
        "orb_missed": [f"{name} of {photos[i].name}: {v.describe()} ({v.reason})"
                       for (i, name), v in zip(queries, own_verdicts, strict=True) if not v.accepted][:20],
        "cost_ms": cost,
        "stored_bytes": {"median": int(np.median(blob_sizes)), "max": max(blob_sizes)},
        "indexed_words_per_photo": round(float(np.mean([len(reframed.indexed_words(s.stored))
                                                         for s in originals])), 1),
        "seconds": round(time.monotonic() - started, 1),
    }


def _pdq_distance(query: Signatures, cached: Signatures) -> int:
    if not cached.pdq:
        return 256
    ref = cached.pdq[0]
    return min(int(np.count_nonzero(v != ref)) for v in query.pdq)


def _near_misses(verdicts: list[reframed.Verdict], rule: reframed.Rule) -> dict:  # type: ignore[type-arg]
    """How close different photos came to each check: the most inliers any pair had; among pairs whose geometry
    passed, the best coverage and correlation."""
    geometric = [v for v in verdicts if v.reason in ("too little overlap", "pixels disagree", "accepted")]
    return {
        "max_inliers": max((v.inliers for v in verdicts), default=0),
        "max_matches": max((v.matches for v in verdicts), default=0),
        "pairs_passing_geometry": len(geometric),
        "max_correlation_after_geometry": round(max((v.correlation for v in geometric), default=-1.0), 3),
        "examples": [v.describe() + f" ({v.reason})"
                     for v in sorted(verdicts, key=lambda v: (-v.inliers, -v.correlation))[:3]],
    }


def _weakest_accepts(verdicts: list[reframed.Verdict]) -> dict:  # type: ignore[type-arg]
    if not verdicts:
        return {}
    return {"min_inliers": min(v.inliers for v in verdicts),
            "min_correlation": round(min(v.correlation for v in verdicts), 3),
            "min_coverage": round(min(v.coverage for v in verdicts), 3),
            "max_angle": round(max(abs(v.angle) for v in verdicts), 2)}


def render(report: dict) -> str:  # type: ignore[type-arg]
    methods = list(report["recall"])
    lines = [f"{report['photos']} photos x {len(report['variants'])} variants; orb verifies the top "
             f"{report['candidates']} candidates by shared visual words", "",
             "| variant | " + " | ".join(methods) + " |", "|---|" + "--:|" * len(methods)]
    for name in report["variants"]:
        lines.append(f"| {name} | " + " | ".join(f"{report['recall'][m][name]:.1%}" for m in methods) + " |")
    lines.append("| **all** | " + " | ".join(f"**{report['recall_all'][m]:.1%}**" for m in methods) + " |")
    lines.append("| false hits | " + " | ".join(str(report["false_hits"][m]) for m in methods) + " |")
    closest = report["closest_different_bits"]
    lines.append("| closest different photo | " + " | ".join(
        f"{closest[m]} bits" if m in closest else "see below" for m in methods) + " |")
    lines += ["", f"orb near-misses over {report['orb_different_pairs_checked']} pairs of different photos "
                  f"(full check): {json.dumps(report['orb_near_misses'], indent=1)}",
              f"orb weakest accepted repeat: {report['orb_weakest_accepts']}",
              f"orb candidates missing the true photo (per variant): {report['orb_candidate_rank_misses']}",
              f"cost (ms, median per photo): {report['cost_ms']}",
              f"stored features: {report['stored_bytes']} bytes; words posted per photo: "
              f"{report['indexed_words_per_photo']}", f"false hits: {report['false_hit_examples']}",
              "orb misses:", *("  " + m for m in report["orb_missed"]), f"({report['seconds']} s)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="photos (spread over the set); all by default")
    parser.add_argument("--candidates", type=int, default=8, help="orb: candidates verified per lookup")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = evaluate(args.limit, candidates=args.candidates, workers=args.workers)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The reframed-repeat matcher: local features (ORB) and a two-part check that two photos show the same picture.

pHash is a global fingerprint: a crop of a few percent, a rotation of a few degrees, a mirror image or a photo
letterboxed in a phone screenshot moves it by 30 to 128 bits, as far as a different photo (docs/NEAR_DUPLICATES.md).
This module is what the dedupe step asks when both pHash tiers missed, before paying for a model call:

1. :func:`query_features` decodes the upload at a reduced size (long side :data:`PROCESS_PX`), trims the uniform
   frame around the photo (letterbox bars, padding, a screenshot's status bar band) and extracts ORB keypoints, for
   the photo as it is and mirrored.
2. :func:`words` turns descriptors into visual words (bit-sampled LSH: :data:`WORD_BITS` fixed bits of the 256-bit
   descriptor); the index (:mod:`streams.reframed_index`) finds the cached photos sharing the most words.
3. :func:`verify` accepts a candidate only when **both** checks agree: a RANSAC similarity transform (rotation,
   scale, translation; the mirror is tried as a separate query) with enough inliers, a plausible angle and scale
   and enough of the candidate covered; and, after warping the query onto the candidate with that transform, the
   two pictures agree pixel for pixel at 32x32 (correlation of the overlap). Two different objects photographed
   on the same board can share background keypoints in one geometry; they cannot share their pixels.

Pure, synchronous and CPU-bound (OpenCV releases the GIL): callers run it in an executor. No asyncio, no Redis.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from streams.imaging import ImageLimits, _decode_reduced, _open_checked, _upright

cv2.setNumThreads(1)  # the executor gives the parallelism; OpenCV's own pool would oversubscribe the 2 cores

PROCESS_PX = 512  # long side of the trimmed photo the features are computed on
QUERY_KEYPOINTS = 400
STORED_KEYPOINTS = 160  # per cached photo, the strongest: 160 x (32 B descriptor + 4 B position) = 5.8 KB
INDEXED_KEYPOINTS = 64  # of those, how many are posted in the visual-word index
QUERY_WORD_KEYPOINTS = 200  # per orientation: the strongest keypoints of a query whose words are looked up
THUMB_PX = 32  # the grey thumbnail the pixel check compares
# The uniform frame: rows/columns whose grey standard deviation is below this (0-255) are frame, not photo.
_FRAME_STD = 3.0
_FRAME_GAP = 8  # uniform rows that separate a screenshot's bars from the photo
# Visual words: WORD_BITS bits of the descriptor at fixed positions (chosen below, spread over the 256).
WORD_BITS = 24
_WORD_POSITIONS = tuple((i * 97 + 13) % 256 for i in range(WORD_BITS))
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Rule:
    """What :func:`verify` accepts (settings REFRAMED_*)."""

    min_inliers: int = 20
    min_inlier_ratio: float = 0.35  # inliers / ratio-test matches
    max_angle_degrees: float = 10.0
    min_scale: float = 0.6
    max_scale: float = 1.7
    min_coverage: float = 0.4  # of the candidate's frame covered by the warped query
    min_correlation: float = 0.85  # of the two 32x32 thumbnails over the covered cells


@dataclass(frozen=True)
class Features:
    """Keypoints of one orientation of one photo, in the coordinates of its trimmed, resized frame."""

    points: np.ndarray  # (n, 2) float32
    descriptors: np.ndarray  # (n, 32) uint8
    width: int  # of the trimmed, resized frame
    height: int
    thumb: np.ndarray  # (THUMB_PX, THUMB_PX) uint8: the frame squeezed to 32x32
    grey: np.ndarray | None = None  # the frame itself (queries only: the pixel check warps it)


@dataclass(frozen=True)
class Query:
    upright: Features
    mirrored: Features


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    inliers: int = 0
    matches: int = 0
    angle: float = 0.0
    scale: float = 0.0
    coverage: float = 0.0
    correlation: float = -1.0
    mirrored: bool = False
    reason: str = ""

    def describe(self) -> str:
        return (f"orb+ransac inliers={self.inliers}/{self.matches} angle={self.angle:.1f} scale={self.scale:.2f} "
                f"coverage={self.coverage:.2f} correlation={self.correlation:.3f}"
                + (" mirrored" if self.mirrored else ""))


REJECTED = Verdict(False, reason="no features")


# --- decoding and framing ---------------------------------------------------------------------------------------


def decode_grey(data: bytes, *, limits: ImageLimits) -> np.ndarray:
    """The upload as an upright grey array of at least PROCESS_PX on its short side (reduced decode, same checks
    as hashing); raises PipelineError like :func:`streams.imaging.hash_image`."""
    image = _open_checked(data, limits)
    image = _upright(_decode_reduced(image, PROCESS_PX))
    return np.asarray(image.convert("L"))


def trim_frame(grey: np.ndarray) -> np.ndarray:
    """The photo without the uniform frame around it: bars, padding, a screenshot's status and home bars.

    Rows are split into runs of non-uniform rows separated by at least _FRAME_GAP uniform rows; the longest run is
    the photo (a status bar's text is a thin run of its own). Then the same for the columns of that run.
    """
    rows = _longest_busy_run(grey.std(axis=1))
    grey = grey[rows]
    cols = _longest_busy_run(grey.std(axis=0))
    return grey[:, cols]


def _longest_busy_run(std: np.ndarray) -> slice:
    busy = np.flatnonzero(std >= _FRAME_STD)
    n = len(std)
    if len(busy) == 0:
        return slice(0, n)
    # Runs of busy rows: a new run starts after a gap of at least _FRAME_GAP uniform rows.
    breaks = np.flatnonzero(np.diff(busy) > _FRAME_GAP)
    starts = np.concatenate(([busy[0]], busy[breaks + 1]))
    ends = np.concatenate((busy[breaks], [busy[-1]])) + 1
    longest = int(np.argmax(ends - starts))
    start, end = int(starts[longest]), int(ends[longest])
    if end - start < n // 4:  # nothing photo-like (a flat image): keep it whole
        return slice(0, n)
    return slice(start, end)


def _frame(grey: np.ndarray) -> np.ndarray:
    grey = trim_frame(grey)
    h, w = grey.shape
    scale = PROCESS_PX / max(h, w)
    if scale < 1:
        grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(grey)


def _orb(n: int) -> cv2.ORB:
    return cv2.ORB_create(nfeatures=n, fastThreshold=10, edgeThreshold=15, patchSize=31)  # type: ignore[attr-defined]


def _features(frame: np.ndarray, n: int, *, keep_grey: bool) -> Features:
    keypoints, descriptors = _orb(n).detectAndCompute(frame, None)
    if descriptors is None or not keypoints:
        points, descriptors = np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
    else:
        order = sorted(range(len(keypoints)), key=lambda i: -keypoints[i].response)[:n]
        points = np.array([keypoints[i].pt for i in order], np.float32)
        descriptors = descriptors[order]
    h, w = frame.shape
    thumb = cv2.resize(frame, (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_AREA)
    return Features(points, descriptors, w, h, thumb, frame if keep_grey else None)


def stored_features(grey: np.ndarray) -> Features:
    """What the index keeps of a photo that was paid for: its strongest STORED_KEYPOINTS, upright only."""
    return _features(_frame(grey), STORED_KEYPOINTS, keep_grey=False)


def query_features(grey: np.ndarray) -> Query:
    """The upload as it is and mirrored (a mirror image's descriptors are not a mirror of the descriptors)."""
    frame = _frame(grey)
    return Query(_features(frame, QUERY_KEYPOINTS, keep_grey=True),
                 _features(np.ascontiguousarray(frame[:, ::-1]), QUERY_KEYPOINTS, keep_grey=True))


def features_of_bytes(data: bytes, *, limits: ImageLimits) -> tuple[Query, Features]:
    """Both sets for an upload: the query (to look up) and what would be stored if it is paid for. One decode."""
    frame = _frame(decode_grey(data, limits=limits))
    stored = _features(frame, STORED_KEYPOINTS, keep_grey=False)
    return Query(_features(frame, QUERY_KEYPOINTS, keep_grey=True),
                 _features(np.ascontiguousarray(frame[:, ::-1]), QUERY_KEYPOINTS, keep_grey=True)), stored


# --- visual words -------------------------------------------------------------------------------------------------


def words(descriptors: np.ndarray) -> list[int]:
    """The visual word of each descriptor: WORD_BITS of its 256 bits at fixed positions, as an int."""
    if len(descriptors) == 0:
        return []
    bits = np.unpackbits(descriptors, axis=1)[:, _WORD_POSITIONS]
    weights = (1 << np.arange(WORD_BITS - 1, -1, -1)).astype(np.int64)
    return [int(w) for w in bits.astype(np.int64) @ weights]


def indexed_words(stored: Features) -> list[int]:
    """The distinct words a cached photo is posted under (its INDEXED_KEYPOINTS strongest keypoints)."""
    return sorted(set(words(stored.descriptors[:INDEXED_KEYPOINTS])))


def query_words(query: Query) -> list[int]:
    return sorted(set(words(query.upright.descriptors[:QUERY_WORD_KEYPOINTS]))
                  | set(words(query.mirrored.descriptors[:QUERY_WORD_KEYPOINTS])))


# --- verification -------------------------------------------------------------------------------------------------

_MATCHER = cv2.BFMatcher(cv2.NORM_HAMMING)


def verify(query: Query, candidate: Features, rule: Rule) -> Verdict:
    """The better verdict of the upright and the mirrored query against ``candidate``."""
    upright = _verify_one(query.upright, candidate, rule, mirrored=False)
    if upright.accepted:
        return upright
    mirrored = _verify_one(query.mirrored, candidate, rule, mirrored=True)
    if mirrored.accepted:
        return mirrored
    return max(upright, mirrored, key=lambda v: (v.inliers, v.correlation))


def _verify_one(query: Features, candidate: Features, rule: Rule, *, mirrored: bool) -> Verdict:
    if len(query.descriptors) < 2 or len(candidate.descriptors) < 2:
        return Verdict(False, mirrored=mirrored, reason="no features")
    pairs = _MATCHER.knnMatch(query.descriptors, candidate.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    if len(good) < max(4, rule.min_inliers):
        return Verdict(False, matches=len(good), inliers=0, mirrored=mirrored, reason="too few matches")
    src = query.points[[m.queryIdx for m in good]]
    dst = candidate.points[[m.trainIdx for m in good]]
    matrix, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=4.0,
                                               maxIters=2000, confidence=0.995)
    if matrix is None or mask is None:
        return Verdict(False, matches=len(good), mirrored=mirrored, reason="no transform")
    # Inliers count distinct keypoints on both sides: a degenerate fit that maps many query points onto one
    # candidate point (scale ~0) must not look like strong evidence.
    kept = [m for m, ok in zip(good, mask.ravel(), strict=True) if ok]
    inliers = min(len({m.queryIdx for m in kept}), len({m.trainIdx for m in kept}))
    a, b = float(matrix[0, 0]), float(matrix[1, 0])
    scale = math.hypot(a, b)
    angle = math.degrees(math.atan2(b, a))
    base: dict[str, Any] = dict(inliers=inliers, matches=len(good), angle=angle, scale=scale, mirrored=mirrored)
    if inliers < rule.min_inliers or inliers < rule.min_inlier_ratio * len(good):
        return Verdict(False, **base, reason="too few inliers")
    if abs(angle) > rule.max_angle_degrees or not rule.min_scale <= scale <= rule.max_scale:
        return Verdict(False, **base, reason="implausible transform")
    coverage, correlation = pixel_agreement(query, candidate, matrix)
    base.update(coverage=coverage, correlation=correlation)
    if coverage < rule.min_coverage:
        return Verdict(False, **base, reason="too little overlap")
    if correlation < rule.min_correlation:
        return Verdict(False, **base, reason="pixels disagree")
    return Verdict(True, **base, reason="accepted")


def pixel_agreement(query: Features, candidate: Features, matrix: np.ndarray) -> tuple[float, float]:
    """Warp the query into the candidate's frame, squeeze both to 32x32 and compare the covered cells:
    (share of cells covered, Pearson correlation over them)."""
    assert query.grey is not None
    size = (candidate.width, candidate.height)
    warped = cv2.warpAffine(query.grey, matrix, size, flags=cv2.INTER_AREA, borderValue=0)
    mask = cv2.warpAffine(np.full(query.grey.shape, 255, np.uint8), matrix, size, flags=cv2.INTER_NEAREST,
                          borderValue=0)
    warped = cv2.resize(warped, (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_AREA).astype(np.float32)
    covered = cv2.resize(mask, (THUMB_PX, THUMB_PX), interpolation=cv2.INTER_AREA) >= 250
    coverage = float(covered.mean())
    if covered.sum() < 16:
        return coverage, -1.0
    x = warped[covered]
    y = candidate.thumb.astype(np.float32)[covered]
    x, y = x - x.mean(), y - y.mean()
    denom = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return coverage, float((x * y).sum() / denom) if denom > 0 else -1.0


# --- storage --------------------------------------------------------------------------------------------------------


def pack(features: Features) -> bytes:
    """A compact blob: header, positions as uint16 (1/64 px), descriptors, thumbnail; zlib-compressed."""
    n = len(features.descriptors)
    header = struct.pack("<BHHH", _FORMAT_VERSION, features.width, features.height, n)
    points = np.clip(np.round(features.points * 64), 0, 65535).astype("<u2").tobytes()
    return zlib.compress(header + points + features.descriptors.tobytes() + features.thumb.tobytes(), 6)


def unpack(blob: bytes) -> Features:
    raw = zlib.decompress(blob)
    version, width, height, n = struct.unpack_from("<BHHH", raw)
    if version != _FORMAT_VERSION:
        raise ValueError(f"features format {version}")
    at = struct.calcsize("<BHHH")
    points = np.frombuffer(raw, "<u2", 2 * n, at).reshape(n, 2).astype(np.float32) / 64
    at += 4 * n
    descriptors = np.frombuffer(raw, np.uint8, 32 * n, at).reshape(n, 32).copy()
    at += 32 * n
    thumb = np.frombuffer(raw, np.uint8, THUMB_PX * THUMB_PX, at).reshape(THUMB_PX, THUMB_PX).copy()
    return Features(points, descriptors, width, height, thumb)


def image_of(data: bytes) -> Image.Image:  # for tools and tests
    return Image.open(io.BytesIO(data))

"""Synthetic 256-bit pHashes and cache entries, for the near-duplicate index's tests and benchmarks.

Real pHashes are close to uniform (the team's 330 photos' per-bit entropy sums to 253 of 256 bits), so uniform
random values stand in for them.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from models.classification import WasteCategory, WasteClassification
from models.records import CachedClassification


def random_hash(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def flip(phash: str, bits: int | Sequence[int], rng: random.Random | None = None) -> str:
    """``phash`` with bits flipped: ``bits`` distinct random ones drawn from ``rng``, or the bits at the positions
    ``bits`` lists (0 is the lowest). Flipping n distinct bits makes a hash exactly n away."""
    value = int(phash, 16)
    for b in bits if not isinstance(bits, int) else (rng or random.Random()).sample(range(256), bits):
        value ^= 1 << b
    return f"{value:064x}"


def cached_entry(phash: str, model_version: str, job_id: str | None = None) -> CachedClassification:
    """A cached answer for ``phash`` (what a near hit returns), paid by ``job_id``."""
    return CachedClassification(
        phash=phash, model_version=model_version, job_id=job_id or f"job-{uuid.uuid4().hex[:8]}",
        created_at=datetime.now(UTC),
        classification=WasteClassification(category=WasteCategory.GLASS, item_name="jar", recyclable=True,
                                           disposal_instructions="rinse", confidence=0.9),
    )

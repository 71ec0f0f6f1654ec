"""Small statistics helpers: percentiles with linear interpolation, medians of repeats."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence


def pct(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear interpolation between closest ranks (numpy's default)."""
    data = sorted(values)
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def ms(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value * 1000, digits)


def median_of(samples: Sequence[float | None], digits: int = 2) -> float | None:
    values = [v for v in samples if v is not None]
    return round(statistics.median(values), digits) if values else None


def latency_summary(seconds: Sequence[float]) -> dict[str, float | None]:
    return {
        "p50_ms": ms(pct(seconds, 50)),
        "p95_ms": ms(pct(seconds, 95)),
        "p99_ms": ms(pct(seconds, 99)),
        "max_ms": ms(max(seconds) if seconds else None),
        "n": len(seconds),
    }


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx

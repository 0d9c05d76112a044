"""Small statistics shared by the benchmarks: percentiles and Jain's fairness index.

Kept dependency-free (no numpy) because the broker does not otherwise need it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Quantiles:
    """The median and the tail of a sample, in seconds."""

    p50: float
    p99: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Quantiles:
        return cls(p50=percentile(values, 50), p99=percentile(values, 99))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (a value that was actually observed); NaN for no values.

    Nearest-rank rather than interpolation so that p99 of 400 jobs is the 396th, a job
    somebody really waited for.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def jain_index(shares: Sequence[float]) -> float:
    """Jain's fairness index (Σx)² / (n·Σx²): 1.0 when all shares are equal, 1/n when one
    party got everything. NaN when there is nothing to share."""
    total = sum(shares)
    squares = sum(x * x for x in shares)
    if not shares or squares == 0:
        return math.nan
    return total * total / (len(shares) * squares)

"""Latency histograms: fixed buckets, constant memory, percentiles within a few percent."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence

__all__ = ["BUCKET_BOUNDS", "LatencyHistogram"]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


# Upper bounds of the histogram buckets: the Renard R20 series (20 steps a decade, each
# about 12 % above the last) from 1 µs to 1000 s. It holds 1, 2.5 and 5 of every decade,
# so the usual Prometheus bucket boundaries are exact sums of these buckets. The bounds
# are parsed from decimal text so that 0.0025 is the same float as the literal 0.0025.
_R20 = (
    "1", "1.12", "1.25", "1.4", "1.6", "1.8", "2", "2.24", "2.5", "2.8",
    "3.15", "3.55", "4", "4.5", "5", "5.6", "6.3", "7.1", "8", "9",
)  # fmt: skip
BUCKET_BOUNDS: tuple[float, ...] = (
    *(float(f"{m}e{e}") for e in range(-6, 3) for m in _R20),
    1000.0,
)


class LatencyHistogram:
    """Durations in fixed buckets: constant memory, percentiles within a few percent.

    Bucket ``i`` counts the durations ``d`` with ``BUCKET_BOUNDS[i-1] < d <=
    BUCKET_BOUNDS[i]`` (Prometheus's ``le`` semantics); a last bucket takes everything
    above 1000 s. ``count``, ``sum``, ``min`` and ``max`` are exact.
    """

    __slots__ = ("count", "counts", "max", "min", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKET_BOUNDS) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = 0.0

    def record(self, seconds: float) -> None:
        """Add one duration."""
        self.counts[bisect_left(BUCKET_BOUNDS, seconds)] += 1
        self.count += 1
        self.sum += seconds
        if seconds > self.max:
            self.max = seconds
        if seconds < self.min:
            self.min = seconds

    def percentile(self, q: float) -> float | None:
        """The ``q``-quantile (``0 <= q <= 1``), interpolated in its bucket; None if empty."""
        counts = list(self.counts)
        total = sum(counts)
        if total == 0:
            return None
        target = q * total
        seen = 0
        for index, in_bucket in enumerate(counts):
            if in_bucket and seen + in_bucket >= target:
                lower = BUCKET_BOUNDS[index - 1] if index else 0.0
                upper = BUCKET_BOUNDS[index] if index < len(BUCKET_BOUNDS) else self.max
                value = lower + (upper - lower) * max(0.0, target - seen) / in_bucket
                return min(max(value, self.min), self.max)
            seen += in_bucket
        return self.max  # pragma: no cover - the loop always finds the bucket

    def cumulative(self, bounds: Sequence[float]) -> tuple[list[tuple[float, int]], int, float]:
        """``([(le, count <= le), ...], count, sum)`` for ``bounds`` (each in BUCKET_BOUNDS).

        The counts come from one copy of the buckets, so the last cumulative count never
        exceeds the returned ``count`` (which Prometheus requires).
        """
        counts = list(self.counts)
        total_sum = self.sum
        result: list[tuple[float, int]] = []
        running = 0
        index = 0
        for bound in bounds:
            stop = bisect_left(BUCKET_BOUNDS, bound) + 1
            running += sum(counts[index:stop])
            index = stop
            result.append((bound, running))
        return result, sum(counts), total_sum

    def summary(self) -> dict[str, float | int | None]:
        """Count, total, average, min, max and p50/p95/p99, in seconds."""
        count = self.count
        return {
            "count": count,
            "total_seconds": _round(self.sum),
            "avg_seconds": _round(self.sum / count) if count else None,
            "min_seconds": _round(self.min) if count else None,
            "max_seconds": _round(self.max) if count else None,
            "p50_seconds": _round(self.percentile(0.50)),
            "p95_seconds": _round(self.percentile(0.95)),
            "p99_seconds": _round(self.percentile(0.99)),
        }

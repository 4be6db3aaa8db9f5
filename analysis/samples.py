"""The samples model: what one version did in one window, validated once.

A *window* holds per-window increments for one version: requests, errors (in
total and by class), latency histograms, sum/count pairs for means and the
sums behind ratio metrics (:class:`RatioSums`). Counts
are increments over aligned windows (``increase(x[w])`` per version), never
rates, so that n travels with every number.

Latency histograms keep bucket counts with their upper bounds, as Prometheus
``le`` buckets do (Envoy ``upstream_rq_time`` in milliseconds, vLLM TTFT /
inter-token / end-to-end latency in seconds). Internally every bound is in
seconds; the empirical CDF at a bound is exactly ``count(le) / count``, so no
interpolation inside a bucket is ever needed for a decision.

Counter resets: increments are computed upstream as ``current - previous``; a
restarted process makes that negative. A negative increment is never summed:
:func:`counter_increase` reports a reset explicitly, and :func:`check_window`
marks a window that carries one so the caller drops it (see ``judge``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


class SamplesError(ValueError):
    """Malformed sample data (not a statistical outcome)."""


class BucketLayoutMismatch(SamplesError):
    """Two histograms compared or merged with different bucket bounds."""


class LatencyUnit(enum.Enum):
    MS = "ms"
    S = "s"

    @property
    def to_seconds(self) -> float:
        return 0.001 if self is LatencyUnit.MS else 1.0


@dataclass(frozen=True)
class Histogram:
    """Per-bucket (not cumulative) counts with their upper bounds in seconds.

    ``bounds`` is strictly increasing and ends with ``inf`` (the ``+Inf``
    bucket), so ``counts[i]`` is the number of observations in
    ``(bounds[i-1], bounds[i]]``.
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total_sum: float | None = None

    def __post_init__(self) -> None:
        if len(self.bounds) != len(self.counts) or not self.bounds:
            raise SamplesError("histogram needs one count per bound")
        if self.bounds[-1] != math.inf:
            raise SamplesError("histogram must end with a +Inf bucket")
        for lo, hi in zip(self.bounds, self.bounds[1:], strict=False):
            if not lo < hi:
                raise SamplesError("bucket bounds must be strictly increasing")
        if any(math.isnan(b) for b in self.bounds):
            raise SamplesError("bucket bound is NaN")

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> tuple[int, ...]:
        out: list[int] = []
        running = 0
        for c in self.counts:
            running += c
            out.append(running)
        return tuple(out)

    def same_layout(self, other: Histogram) -> bool:
        return self.bounds == other.bounds

    def plus(self, other: Histogram) -> Histogram:
        if not self.same_layout(other):
            raise BucketLayoutMismatch(
                f"bucket bounds differ: {list(self.bounds)} vs {list(other.bounds)}"
            )
        total: float | None = None
        if self.total_sum is not None and other.total_sum is not None:
            total = self.total_sum + other.total_sum
        return Histogram(
            self.bounds,
            tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)),
            total,
        )

    @staticmethod
    def empty(bounds: Sequence[float]) -> Histogram:
        return Histogram(tuple(bounds), (0,) * len(bounds), 0.0)


def histogram_from_cumulative(
    buckets: Mapping[float, int], unit: LatencyUnit, total_sum: float | None = None
) -> Histogram:
    """Build a :class:`Histogram` from Prometheus-style cumulative ``le`` counts.

    Cumulative counts must be non-negative and non-decreasing in the bound; a
    decrease means the counters were not taken from one scrape and is an error.
    """
    if math.inf not in buckets:
        raise SamplesError("buckets must include '+Inf'")
    bounds = sorted(buckets)
    scale = unit.to_seconds
    counts: list[int] = []
    previous = 0
    for b in bounds:
        c = buckets[b]
        if isinstance(c, bool) or not isinstance(c, int):
            raise SamplesError(f"bucket {b}: count must be an integer")
        if c < previous:
            raise SamplesError(
                f"bucket {b}: cumulative count {c} is below the previous bucket's {previous}"
            )
        counts.append(c - previous)
        previous = c
    scaled = tuple(b * scale if b != math.inf else math.inf for b in bounds)
    return Histogram(scaled, tuple(counts), None if total_sum is None else total_sum * scale)


@dataclass(frozen=True)
class SumCount:
    """A ``_sum`` / ``_count`` pair (optionally with a sum of squares)."""

    total: float
    count: int
    sum_squares: float | None = None

    def plus(self, other: SumCount) -> SumCount:
        sq: float | None = None
        if self.sum_squares is not None and other.sum_squares is not None:
            sq = self.sum_squares + other.sum_squares
        return SumCount(self.total + other.total, self.count + other.count, sq)


@dataclass(frozen=True)
class RatioSums:
    """One window's sums behind a ratio of per-request quantities (tokens / seconds).

    ``numerator`` = sum of y_i, ``denominator`` = sum of x_i over ``count``
    requests. The per-request second moments (sum of y_i^2, x_i^2, x_i y_i)
    are optional and go together; with them the ratio's variance comes from
    the requests themselves, without them from the spread between windows
    (``analysis.means.RatioMoments``).
    """

    numerator: float
    denominator: float
    count: int
    numerator_squares: float | None = None
    denominator_squares: float | None = None
    cross_products: float | None = None

    @property
    def has_moments(self) -> bool:
        return (self.numerator_squares is not None and self.denominator_squares is not None
                and self.cross_products is not None)


@dataclass(frozen=True)
class Window:
    """One version's increments over one window ending at time ``t`` (seconds)."""

    t: float
    version: str
    requests: int
    errors: int
    error_classes: Mapping[str, int] = field(default_factory=dict)
    histograms: Mapping[str, Histogram] = field(default_factory=dict)
    means: Mapping[str, SumCount] = field(default_factory=dict)
    weight: float | None = None  # configured traffic percent, for the SRM check
    ratios: Mapping[str, RatioSums] = field(default_factory=dict)

    def events(self, source: str | None) -> int:
        """Error count for a class (``None``: all errors)."""
        if source is None:
            return self.errors
        return self.error_classes.get(source, 0)


class Integrity(enum.Enum):
    OK = "ok"
    COUNTER_RESET = "counter_reset"


@dataclass(frozen=True)
class Increase:
    value: int
    reset: bool


def counter_increase(previous: int, current: int) -> Increase:
    """Increase of a monotone counter between two scrapes.

    A drop means the process restarted (the counter began again at zero).
    Prometheus' ``increase()`` then adds ``current``; we return it too but
    flag ``reset`` so a caller can drop the window instead of trusting a
    guessed value.
    """
    if current < previous:
        return Increase(current, True)
    return Increase(current - previous, False)


def check_window(
    *,
    requests: float,
    errors: float,
    error_classes: Mapping[str, float],
    bucket_counts: Sequence[float],
    sums: Sequence[float],
) -> Integrity:
    """Classify raw per-window increments: any negative increment is a reset.

    NaN and infinities are rejected outright (they are malformed input, not a
    reset). Callers drop a window classified ``COUNTER_RESET`` for every
    version at that time, which keeps the paired per-window tests valid.
    """
    values = [requests, errors, *error_classes.values(), *bucket_counts, *sums]
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            raise SamplesError("value must be finite (got NaN or infinity)")
    if any(v < 0 for v in values):
        return Integrity.COUNTER_RESET
    return Integrity.OK

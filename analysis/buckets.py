"""Bucket layouts: what a histogram's bounds can and cannot decide.

A test on bucket counts knows the empirical CDF exactly at the bounds and
nothing in between. Two consequences:

* **slow_rate** (the share of observations above a bound ``b``) is exact:
  ``count - cum(b)`` is a count of requests, tested like errors. It needs
  ``b`` to be a bound of the layout, and then it does not matter what the
  other bounds are. :func:`slow_count` computes it; a threshold that is not a
  bound is reported with its nearest bounds (:func:`threshold_problem`).
* **A quantile** is only known to lie in its bucket ``(lower, upper]``. With
  unlimited data the confidence sequences of ``analysis.latency`` close in on
  exactly that bucket, so a candidate identical to the baseline is shown
  within a relative margin m only when ``upper <= (1 + m) lower`` (or when
  ``upper - lower <= minEffect``). Envoy's default ``upstream_rq_time``
  bounds are 2 to 5 times apart: no p95 there can ever be shown within 25 %.
  :func:`quantile_resolution` says so at run time from the baseline's
  bucket; :func:`unresolvable_buckets` says it ahead of time for a known
  layout (``sluice validate``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from analysis.samples import Histogram

# Envoy's default histogram bounds (ms), used by upstream_rq_time unless the
# bootstrap's stats_config.histogram_bucket_settings says otherwise.
ENVOY_DEFAULT_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
    600000, 1800000, 3600000,
)  # fmt: skip

_REL_TOL = 1e-9  # bounds arrive as ms * 0.001; thresholds as parsed durations


def format_seconds(seconds: float) -> str:
    """``0.25`` -> ``250ms``, ``2.5`` -> ``2.5s``, ``0.0005`` -> ``500us``."""
    if math.isinf(seconds):
        return "+Inf"
    if seconds != 0 and abs(seconds) < 1e-3:
        return f"{seconds * 1e6:.4g}us"
    if abs(seconds) < 1.0:
        return f"{seconds * 1e3:.4g}ms"
    return f"{seconds:.4g}s"


def _finite(bounds: Sequence[float]) -> list[float]:
    return [b for b in bounds if math.isfinite(b)]


def find_bound(bounds: Sequence[float], x: float) -> int | None:
    """Index of the finite bound equal to ``x`` (to rounding), or None."""
    for i, b in enumerate(bounds):
        if math.isfinite(b) and math.isclose(b, x, rel_tol=_REL_TOL, abs_tol=1e-15):
            return i
    return None


def nearest_bounds(bounds: Sequence[float], x: float) -> tuple[float | None, float | None]:
    """The largest finite bound below ``x`` and the smallest above it (None: none)."""
    finite = _finite(bounds)
    below = [b for b in finite if b < x]
    above = [b for b in finite if b > x]
    return (max(below) if below else None, min(above) if above else None)


def threshold_problem(bounds: Sequence[float], x: float, histogram: str) -> str:
    """Why ``x`` cannot be a slow_rate threshold on this layout, naming the nearest bounds."""
    lo, hi = nearest_bounds(bounds, x)
    near = " and ".join(format_seconds(b) for b in (lo, hi) if b is not None) or "none"
    return (f"threshold {format_seconds(x)} is not a bucket bound of histogram {histogram} "
            f"(nearest bounds: {near}); set threshold to one of them")


def slow_count(h: Histogram, threshold_s: float) -> int | None:
    """Observations above the bound ``threshold_s`` (None: not a bound of ``h``)."""
    i = find_bound(h.bounds, threshold_s)
    if i is None:
        return None
    return sum(h.counts[i + 1:])


@dataclass(frozen=True)
class Resolution:
    """What a quantile's bucket lets a test show (run-time diagnosis)."""

    lower: float  # the baseline quantile's bucket (lower, upper], seconds
    upper: float
    pass_possible: bool  # can an identical candidate ever be shown non-inferior?
    harm_floor: float  # a candidate quantile must exceed this to be shown harmful (inf: never)

    @property
    def ratio(self) -> float:
        return self.upper / self.lower if self.lower > 0 else math.inf

    def explain(self, q: float, ni_margin: float, min_effect: float) -> str:
        name = f"p{q * 100:g}"
        bucket = f"({format_seconds(self.lower)}, {format_seconds(self.upper)}]"
        wide = f"{self.ratio:.2g}x wide" if math.isfinite(self.ratio) else "open-ended"
        absolute = f" or within minEffect {format_seconds(min_effect)}" if min_effect > 0 else ""
        harm = ("no harm can be shown either" if math.isinf(self.harm_floor) else
                f"harm shows only once the candidate's {name} exceeds "
                f"{format_seconds(self.harm_floor)}")
        near = self.upper if math.isfinite(self.upper) else self.lower
        return (f"buckets too coarse: the baseline's {name} lies in {bucket}, {wide}, so no "
                f"amount of data can show the candidate within {ni_margin:.0%}{absolute} "
                f"(that needs bounds at most {1 + ni_margin:.3g}x apart around it), and "
                f"{harm}; use a slow_rate metric at a bound near the {name} (threshold: "
                f"{format_seconds(near)}), exact with any buckets, or finer buckets (sluice "
                "bootstrap sets bounds about 12 % apart)")


def within_ratio(upper: float, lower: float, margin: float) -> bool:
    """``upper <= (1 + margin) lower``, forgiving rounding (bounds arrive as ms * 0.001)."""
    return upper <= (1.0 + margin) * lower * (1.0 + _REL_TOL)


def within_gap(upper: float, lower: float, min_effect: float) -> bool:
    """``upper - lower <= min_effect``, forgiving rounding."""
    return upper - lower <= min_effect + _REL_TOL * abs(upper)


def _pass_possible(lower: float, upper: float, ni_margin: float, min_effect: float) -> bool:
    return within_ratio(upper, lower, ni_margin) or within_gap(upper, lower, min_effect)


def harm_floor(bounds: Sequence[float], upper: float, harm_margin: float,
               min_effect: float) -> float:
    """Smallest bound b with b >= (1 + harm) upper and b - upper >= minEffect (inf: none).

    The quantile test proves harm from a pair of bounds with the candidate's
    quantile above one and the baseline's at or below the other; with the
    baseline's quantile bracketed by ``upper`` this is the lowest candidate
    quantile it can ever call harmful.
    """
    for b in sorted(_finite(bounds)):
        if b >= (1.0 + harm_margin) * upper and b - upper >= min_effect:  # as the test does
            return b
    return math.inf


def quantile_resolution(bounds: Sequence[float], counts: Sequence[float], q: float,
                        ni_margin: float, harm_margin: float,
                        min_effect: float) -> Resolution | None:
    """The bucket of the empirical q-quantile of ``counts`` and what it allows (None: empty)."""
    total = float(sum(counts))
    if total <= 0:
        return None
    running = 0.0
    lower = 0.0
    for b, c in zip(bounds, counts, strict=True):
        running += c
        if running >= q * total:
            upper = b
            break
        lower = b
    else:  # pragma: no cover - the +Inf bucket always completes the total
        upper = math.inf
    return Resolution(lower, upper, _pass_possible(lower, upper, ni_margin, min_effect),
                      harm_floor(bounds, upper, harm_margin, min_effect))


def unresolvable_buckets(bounds: Sequence[float], ni_margin: float, min_effect: float,
                         above: float = 0.0) -> list[tuple[float, float]]:
    """Buckets (lower, upper] of a layout, above ``above``, in which a quantile can never
    be shown within ``ni_margin`` (the layout-only version of :func:`quantile_resolution`)."""
    finite = sorted(_finite(bounds))
    return [(lo, hi) for lo, hi in itertools.pairwise(finite)
            if lo >= above and not _pass_possible(lo, hi, ni_margin, min_effect)]


def max_spacing(bounds: Sequence[float], above: float = 0.0) -> float:
    """Largest ratio of adjacent finite bounds at or above ``above``."""
    finite = sorted(b for b in _finite(bounds) if b >= above)
    return max((hi / lo for lo, hi in itertools.pairwise(finite) if lo > 0),
               default=math.inf)

"""Sample ratio mismatch: is the observed split the split that was pushed?

Two checks against the configured weights, both on request counts:

* fixed-horizon Pearson chi-square on the cumulative counts, expected counts
  summed window by window from the weights in force then (so a ramp is fine),
  flagged at p < 0.001 as GrowthBook's ``check_srm`` does;
* the sequential Dirichlet-multinomial Bayes factor (Lindon & Malek,
  "Anytime-Valid Inference for Multinomial Count Data", NeurIPS 2022, §4;
  Optimizely's ``ssrm``) with concentration 10,000. The Bayes factor of a
  conjugate Dirichlet(k pi) mixture against the multinomial(pi) null is a test
  martingale. Because the weights change during a ramp, each stretch of
  constant weights (an *epoch*) gets its own martingale started at 1; the
  product across epochs is still a test martingale (each factor has
  conditional expectation 1 given the past), so 1 / sup of the product is an
  anytime-valid p-value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import special

DEFAULT_CONCENTRATION = 10_000.0
DEFAULT_SRM_ALPHA = 0.001


def chi_square_srm(observed: Sequence[float], expected: Sequence[float]) -> tuple[float, float]:
    """Pearson chi-square statistic and p-value (df = categories with expectation - 1)."""
    if len(observed) != len(expected):
        raise ValueError("observed and expected differ in length")
    stat = 0.0
    used = 0
    for o, e in zip(observed, expected, strict=True):
        if e > 0:
            stat += (o - e) ** 2 / e
            used += 1
        elif o > 0:
            return (math.inf, 0.0)  # traffic where none was configured
    if used < 2:
        return (0.0, 1.0)
    return (stat, float(special.chdtrc(used - 1, stat)))


def dirichlet_multinomial_log_bf(
    counts: Sequence[float], probs: Sequence[float], concentration: float
) -> float:
    """log Bayes factor of Dirichlet(k p) - multinomial against multinomial(p).

    log BF = lgamma(k) - lgamma(k + n) + sum_i [lgamma(k p_i + x_i) - lgamma(k p_i)]
             - sum_i x_i log p_i   (categories with p_i = 0 must have x_i = 0).
    """
    n = sum(counts)
    out = special.gammaln(concentration) - special.gammaln(concentration + n)
    for x, p in zip(counts, probs, strict=True):
        if p <= 0:
            if x > 0:
                return math.inf
            continue
        out += special.gammaln(concentration * p + x) - special.gammaln(concentration * p)
        out -= x * math.log(p)
    return float(out)


@dataclass(frozen=True)
class SrmState:
    """Running SRM evidence over K versions (order fixed by the caller)."""

    concentration: float = DEFAULT_CONCENTRATION
    observed: tuple[float, ...] = ()
    expected: tuple[float, ...] = ()
    epoch_probs: tuple[float, ...] = ()
    epoch_counts: tuple[float, ...] = ()
    log_bf_closed: float = 0.0  # sum of log BFs of finished epochs
    log_sup: float = 0.0

    def update(self, counts: Sequence[float], weights: Sequence[float]) -> SrmState:
        """Add one window: request counts and configured weights (any scale)."""
        total_w = sum(weights)
        n = sum(counts)
        if total_w <= 0 or n <= 0:
            return self
        probs = tuple(w / total_w for w in weights)
        obs = tuple(counts) if not self.observed else tuple(
            a + b for a, b in zip(self.observed, counts, strict=True)
        )
        exp_window = tuple(n * p for p in probs)
        exp = exp_window if not self.expected else tuple(
            a + b for a, b in zip(self.expected, exp_window, strict=True)
        )
        closed = self.log_bf_closed
        if probs != self.epoch_probs:
            if self.epoch_counts:
                closed += dirichlet_multinomial_log_bf(
                    self.epoch_counts, self.epoch_probs, self.concentration
                )
            epoch_counts = tuple(float(c) for c in counts)
        else:
            epoch_counts = tuple(a + b for a, b in zip(self.epoch_counts, counts, strict=True))
        current = closed + dirichlet_multinomial_log_bf(epoch_counts, probs, self.concentration)
        return SrmState(
            self.concentration,
            obs,
            exp,
            probs,
            epoch_counts,
            closed,
            max(self.log_sup, current),
        )

    @property
    def sequential_pvalue(self) -> float:
        return min(1.0, math.exp(-self.log_sup))

    @property
    def chi_square(self) -> tuple[float, float]:
        if not self.observed:
            return (0.0, 1.0)
        return chi_square_srm(self.observed, self.expected)

    def mismatch(self, alpha: float = DEFAULT_SRM_ALPHA) -> bool:
        return self.sequential_pvalue < alpha or self.chi_square[1] < alpha

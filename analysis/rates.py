"""Error and event counts: the rate-ratio e-process plus reporting intervals.

``ErrorRateState`` accumulates paired windows (candidate and baseline at the
same time) and keeps:

* the one-sided harm e-process for H0: r <= 1 + harmMargin
  (``sequential.RateRatioHarm``; Lindon & Malek, NeurIPS 2022);
* the two-sided confidence sequence on r for reporting
  (``sequential.RateRatioCS``);
* totals, so the absolute rates can be bounded per arm with a beta-binomial
  mixture confidence sequence (Robbins 1970; Howard et al., Ann. Stat. 2021).
  Those bounds back ``minEffect``: when the baseline has (almost) no errors a
  relative margin means nothing, and non-inferiority can instead be shown by
  ``upper(p_c) - lower(p_b) <= minEffect``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import optimize

from analysis.sequential import RateRatioCS, RateRatioHarm

_PRIOR_A = 0.5  # Jeffreys-shaped mixing prior for the per-arm rate bound
_PRIOR_B = 0.5


def _bernoulli_log_m(p: float, s: float, t: float) -> float:
    """log of the Beta(a, b) mixture martingale for Bernoulli(p) with s of t."""
    a, b = _PRIOR_A, _PRIOR_B
    out = (
        math.lgamma(a + s) + math.lgamma(b + (t - s)) - math.lgamma(a + b + t)
        - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    )
    if s > 0:
        out -= s * math.log(p)
    if t - s > 0:
        out -= (t - s) * math.log1p(-p)
    return out


def bernoulli_cs(s: float, t: float, alpha: float) -> tuple[float, float]:
    """Time-uniform interval {p : M_t(p) < 1/alpha} for a Bernoulli rate.

    log M_t(p) is convex in p with its minimum at the MLE s/t, so each end is
    the single root of log M_t(p) = log(1/alpha) on its side of the MLE.
    """
    if t <= 0:
        return (0.0, 1.0)
    thr = -math.log(alpha)
    mle = s / t
    tiny, top = 1e-300, 1.0 - 1e-15

    def f(p: float) -> float:
        return _bernoulli_log_m(p, s, t) - thr

    if f(min(max(mle, tiny), top)) >= 0:
        return (mle, mle)  # empty set: only on the probability-alpha event
    lower = 0.0
    if s > 0 and f(tiny) > 0:
        lower = float(optimize.brentq(f, tiny, mle, xtol=1e-12, rtol=1e-9))
    upper = 1.0
    if s < t and f(top) > 0:
        upper = float(optimize.brentq(f, mle, top, xtol=1e-12, rtol=1e-9))
    return (lower, upper)


@dataclass(frozen=True)
class RateAssessment:
    events_candidate: int
    events_baseline: int
    n_candidate: float
    n_baseline: float
    rate_candidate: float
    rate_baseline: float
    estimate: float  # rate ratio
    interval: tuple[float, float]
    diff_upper: float  # upper bound on p_c - p_b
    harm_evalue: float
    harm_pvalue: float


@dataclass(frozen=True, eq=False)
class ErrorRateState:
    harm: RateRatioHarm
    cs: RateRatioCS
    events_c: int = 0
    events_b: int = 0
    n_c: float = 0.0
    n_b: float = 0.0

    @staticmethod
    def start(harm_margin: float) -> ErrorRateState:
        return ErrorRateState(RateRatioHarm.start(1.0 + harm_margin), RateRatioCS.start())

    def update(self, x_c: int, x_b: int, n_c: float, n_b: float) -> ErrorRateState:
        return ErrorRateState(
            self.harm.update(x_c, x_b, n_c, n_b),
            self.cs.update(x_c, x_b, n_c, n_b),
            self.events_c + x_c,
            self.events_b + x_b,
            self.n_c + n_c,
            self.n_b + n_b,
        )

    def assess(self, alpha: float) -> RateAssessment:
        rc = self.events_c / self.n_c if self.n_c else math.nan
        rb = self.events_b / self.n_b if self.n_b else math.nan
        if self.events_b > 0 and self.n_c > 0:
            estimate = rc / rb
        elif self.events_c > 0:
            estimate = math.inf
        else:
            estimate = math.nan
        # alpha split: half to the ratio interval, a quarter to each arm bound
        interval = self.cs.interval(alpha / 2)
        _, up_c = bernoulli_cs(self.events_c, self.n_c, alpha / 4)
        lo_b, _ = bernoulli_cs(self.events_b, self.n_b, alpha / 4)
        return RateAssessment(
            self.events_c,
            self.events_b,
            self.n_c,
            self.n_b,
            rc,
            rb,
            estimate,
            interval,
            up_c - lo_b,
            self.harm.evalue,
            self.harm.pvalue,
        )

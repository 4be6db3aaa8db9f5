"""Latency distributions from histogram buckets, anytime-valid.

Three tests, all using only the exact empirical CDF at bucket bounds:

* **Quantile shift** (the gate): a confidence sequence for each version's
  q-quantile (Howard & Ramdas, Bernoulli 2022, §2: at the true quantile xi,
  #{X_i <= xi} is Binomial(t, q), so any time-uniform boundary for Bernoulli(q)
  sums brackets xi at every time). We use the beta-binomial mixture
  martingale M_t(s) (``sequential.beta_binomial_log_m``), convex in s: a
  bucket bound b whose cumulative count N(b) lies left of the mixture's
  minimum with M_t(N(b)) >= 2/a is below xi, one right of it with
  M_t(N(b)) >= 2/a is at or above xi, simultaneously for all t and b with
  probability >= 1 - a/2 per version. Harm is
  ``xi_c > (1 + margin) xi_b`` and ``xi_c - xi_b > minEffect``; its anytime
  p-value is the smallest a at which the bracketing proves it. Resolution is
  the bucket width: a shift smaller than the gap between two bounds cannot
  be shown, whatever n (so coarse buckets hold rather than guess, and the
  assessment says so: ``analysis.buckets.quantile_resolution``).
* **Equality in distribution**: under H0 each observation's version label is
  Bernoulli(rho_t) whatever bucket it falls in (rho_t: the request share), so
  the product over buckets of two-sided rate-ratio mixtures (Lindon & Malek
  2022, per cell) is a test martingale when bucket counts are Poisson-thinned.
* **Stochastic order with a margin** (Lindon, Sanden & Shirikian, KDD 2022):
  regression when F_c(b) + eps_c < F_b(b) - eps_b - margin at some bound, with
  the time-uniform DKW band of Howard & Ramdas (2022), Theorem 2:
  eps_t = 0.85 sqrt((log log(e t) + 0.8 log(1612 / a)) / t). Reported only;
  ``tests/unit/analysis`` checks its coverage by simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from analysis.buckets import Resolution, quantile_resolution, within_gap, within_ratio
from analysis.samples import BucketLayoutMismatch, Histogram
from analysis.sequential import (
    FloatArray,
    _logsumexp,
    _readonly,
    beta_binomial_log_m,
    beta_binomial_side,
    rate_ratio_loglik,
)

# Beta prior concentration of the quantile mixture; ~k/10 .. 10k observations
# is where the boundary is tight (a few thousand per version in an hour).
QUANTILE_PRIOR_K = 200.0
_EQ_ALT = _readonly(np.concatenate([-np.linspace(0.1, 2.0, 10), np.linspace(0.1, 2.0, 10)]))


def quantile_evidence(
    cum: NDArray[np.float64], total: float, q: float, k: float = QUANTILE_PRIOR_K
) -> tuple[FloatArray, FloatArray]:
    """Per finite bound: log evidence that the bound is below / at-or-above xi_q.

    Returns (below, above), each >= 0 (log 1 where the bound sits on the other
    side of the mixture's minimum or total is 0).
    """
    if total <= 0:
        z = np.zeros(cum.shape)
        return z, z.copy()
    log_m = beta_binomial_log_m(cum, total, q, k)
    side = beta_binomial_side(cum, total, q, k)
    below = np.where(side < 0, np.maximum(log_m, 0.0), 0.0)
    above = np.where(side > 0, np.maximum(log_m, 0.0), 0.0)
    return below, above


def interpolated_quantile(bounds: FloatArray, cum: FloatArray, q: float) -> float:
    """Point estimate only (linear inside the bucket); never used to decide."""
    total = float(cum[-1]) if cum.size else 0.0
    if total <= 0:
        return math.nan
    target = q * total
    idx = int(np.searchsorted(cum, target, side="left"))
    finite = bounds[np.isfinite(bounds)]
    if idx >= finite.size:
        return float(finite[-1]) if finite.size else math.nan
    lo_b = 0.0 if idx == 0 else float(bounds[idx - 1])
    lo_c = 0.0 if idx == 0 else float(cum[idx - 1])
    hi_b, hi_c = float(bounds[idx]), float(cum[idx])
    if hi_c <= lo_c:
        return hi_b
    return lo_b + (hi_b - lo_b) * (target - lo_c) / (hi_c - lo_c)


_HR_SCALE = 0.85
_HR_LOG_C = math.log(1612.0)


def _howard_ramdas_band_log(t: float, log_inv_alpha: float) -> float:
    """The band at level exp(-log_inv_alpha), computed in log space.

    Strong evidence means tiny levels: exp(-log 1/a) underflows to 0 long before
    log 1/a is large, so the band is never computed from a itself.
    """
    loglog = math.log(math.log(math.e * max(t, 1.0)))
    return _HR_SCALE * math.sqrt((loglog + 0.8 * (_HR_LOG_C + log_inv_alpha)) / t)


def howard_ramdas_band(t: float, alpha: float) -> float:
    """Time-uniform DKW half-width (Howard & Ramdas 2022, Theorem 2)."""
    if t <= 0:
        return 1.0
    return _howard_ramdas_band_log(t, -math.log(alpha))


def _order_pvalue(gap: float, t_c: float, t_b: float) -> float:
    """Smallest a with eps_c(a/2) + eps_b(a/2) < gap, by bisection on log 1/a.

    Both bands grow like sqrt(log 1/a), so the bracket is finite: at
    s = 0.8 log(1612 * 2 / a) = (gap / 0.85)^2 * t_c the candidate's band alone
    reaches the gap. Underflow of the result to 0.0 is fine (a p-value).
    """
    if not (gap > 0 and t_c > 0 and t_b > 0) or not math.isfinite(gap):
        return 1.0
    half = math.log(2.0)  # each version's band at a/2

    def width(log_inv: float) -> float:
        return (_howard_ramdas_band_log(t_c, log_inv + half)
                + _howard_ramdas_band_log(t_b, log_inv + half))

    if width(0.0) >= gap:
        return 1.0
    lo = 0.0
    hi = (gap / _HR_SCALE) ** 2 * min(t_c, t_b) / 0.8 + 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if width(mid) < gap:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-9 * max(1.0, hi):
            break
    return min(1.0, math.exp(-lo))


@dataclass(frozen=True)
class LatencyAssessment:
    n_candidate: int
    n_baseline: int
    q_candidate: float
    q_baseline: float
    estimate: float  # ratio of interpolated quantiles
    interval: tuple[float, float]  # ratio interval from the quantile CSs
    harm_pvalue: float  # anytime, running minimum
    non_inferior: bool
    equality_evalue: float
    equality_pvalue: float
    order_pvalue: float
    upper_candidate: float = math.inf  # the bounds non-inferiority compares (seconds)
    lower_baseline: float = 0.0
    resolution: Resolution | None = None  # what the baseline quantile's bucket allows


@dataclass(frozen=True, eq=False)
class LatencyState:
    """Accumulated histograms and running evidence for one latency metric."""

    q: float
    harm_margin: float
    min_effect: float
    bounds: tuple[float, ...] | None = None
    cum_c: FloatArray | None = None  # per-bucket totals over all windows
    cum_b: FloatArray | None = None
    eq_ll_alt: FloatArray | None = None  # (buckets, alternatives)
    eq_ll_null: FloatArray | None = None  # (buckets,)
    eq_log_sup: float = 0.0
    harm_p: float = 1.0
    order_p: float = 1.0

    def update(
        self, hist_c: Histogram, hist_b: Histogram, req_c: float, req_b: float
    ) -> LatencyState:
        if not hist_c.same_layout(hist_b):
            raise BucketLayoutMismatch(
                "candidate and baseline latency buckets differ: "
                f"{list(hist_c.bounds)} vs {list(hist_b.bounds)}"
            )
        if self.bounds is not None and hist_c.bounds != self.bounds:
            raise BucketLayoutMismatch("latency bucket bounds changed between windows")
        xc = np.asarray(hist_c.counts, dtype=np.float64)
        xb = np.asarray(hist_b.counts, dtype=np.float64)
        cum_c = xc if self.cum_c is None else self.cum_c + xc
        cum_b = xb if self.cum_b is None else self.cum_b + xb
        n_c = req_c if req_c > 0 else float(xc.sum())
        n_b = req_b if req_b > 0 else float(xb.sum())
        ll_alt = self.eq_ll_alt if self.eq_ll_alt is not None else np.zeros((xc.size, _EQ_ALT.size))
        ll_null = self.eq_ll_null if self.eq_ll_null is not None else np.zeros(xc.size)
        eq_sup = self.eq_log_sup
        if n_c > 0 and n_b > 0:
            rho = n_c / (n_c + n_b)
            ll_alt = ll_alt + rate_ratio_loglik(xc, xb, np.full(xc.size, rho), _EQ_ALT)
            ll_null = ll_null + rate_ratio_loglik(xc, xb, np.full(xc.size, rho), np.zeros(1))[:, 0]
            eq_sup = max(eq_sup, _equality_log_e(ll_alt, ll_null))
        new = LatencyState(
            self.q,
            self.harm_margin,
            self.min_effect,
            hist_c.bounds,
            _readonly(cum_c),
            _readonly(cum_b),
            _readonly(ll_alt),
            _readonly(ll_null),
            eq_sup,
            self.harm_p,
            self.order_p,
        )
        harm_now = new._harm_pvalue_now()
        order_now = new._order_pvalue_now()
        return LatencyState(
            new.q, new.harm_margin, new.min_effect, new.bounds, new.cum_c, new.cum_b,
            new.eq_ll_alt, new.eq_ll_null, new.eq_log_sup,
            min(self.harm_p, harm_now), min(self.order_p, order_now),
        )  # fmt: skip

    def _cdf_counts(self) -> tuple[FloatArray, FloatArray, FloatArray, float, float]:
        assert self.cum_c is not None and self.cum_b is not None and self.bounds is not None
        b = np.asarray(self.bounds)
        cc, cb = np.cumsum(self.cum_c), np.cumsum(self.cum_b)
        return b, cc, cb, float(cc[-1]), float(cb[-1])

    def _harm_pvalue_now(self) -> float:
        b, cc, cb, t_c, t_b = self._cdf_counts()
        finite = np.isfinite(b)
        below_c, _ = quantile_evidence(cc[finite], t_c, self.q)
        _, above_b = quantile_evidence(cb[finite], t_b, self.q)
        fb = b[finite]
        # Pair (i, j): xi_c > fb[i] and xi_b <= fb[j]. Then fb[i] >= (1 + m) fb[j]
        # gives xi_c > (1 + m) xi_b, and fb[i] - fb[j] >= minEffect gives
        # xi_c - xi_b > minEffect; i == j is allowed, so one bound between the
        # two quantiles is enough (no double loss of bucket resolution).
        ok = (fb[:, None] >= (1.0 + self.harm_margin) * fb[None, :]) & (
            fb[:, None] - fb[None, :] >= self.min_effect
        )
        if not ok.any():
            return 1.0
        strength = np.minimum(below_c[:, None], above_b[None, :])
        best = float(np.max(np.where(ok, strength, 0.0)))
        # each version's bracket holds with prob >= 1 - a/2: p = 2 / e
        return min(1.0, 2.0 * math.exp(-best))

    def _order_pvalue_now(self) -> float:
        _, cc, cb, t_c, t_b = self._cdf_counts()
        if t_c <= 0 or t_b <= 0:
            return 1.0
        gap = float(np.max(cb / t_b - cc / t_c))
        return _order_pvalue(gap, t_c, t_b)

    def quantile_interval(self, which: str, alpha: float) -> tuple[float, float]:
        """(lower, upper) for one version's q-quantile at level 1 - alpha/2."""
        b, cc, cb, t_c, t_b = self._cdf_counts()
        cum, total = (cc, t_c) if which == "candidate" else (cb, t_b)
        finite = np.isfinite(b)
        below, above = quantile_evidence(cum[finite], total, self.q)
        thr = math.log(2.0 / alpha)
        fb = b[finite]
        lows = fb[below >= thr]
        highs = fb[above >= thr]
        low = float(lows.max()) if lows.size else 0.0
        high = float(highs.min()) if highs.size else math.inf
        return (low, high)

    def assess(self, alpha: float, ni_margin: float) -> LatencyAssessment:
        """Point estimates, ratio interval at level alpha, and non-inferiority."""
        if self.bounds is None:
            nan = math.nan
            return LatencyAssessment(
                0, 0, nan, nan, nan, (0.0, math.inf), 1.0, False, 1.0, 1.0, 1.0
            )
        b, cc, cb, t_c, t_b = self._cdf_counts()
        qc = interpolated_quantile(b, cc, self.q)
        qb = interpolated_quantile(b, cb, self.q)
        lo_c, hi_c = self.quantile_interval("candidate", alpha)
        lo_b, hi_b = self.quantile_interval("baseline", alpha)
        lo_ratio = lo_c / hi_b if hi_b > 0 and math.isfinite(hi_b) else 0.0
        hi_ratio = hi_c / lo_b if lo_b > 0 else math.inf
        non_inf = within_ratio(hi_c, lo_b, ni_margin) or within_gap(hi_c, lo_b, self.min_effect)
        estimate = qc / qb if qb > 0 else math.nan
        assert self.eq_ll_alt is not None and self.eq_ll_null is not None
        assert self.cum_b is not None
        eq_log = _equality_log_e(self.eq_ll_alt, self.eq_ll_null)
        resolution = quantile_resolution(self.bounds, [float(x) for x in self.cum_b], self.q,
                                         ni_margin, self.harm_margin, self.min_effect)
        return LatencyAssessment(
            int(t_c), int(t_b), qc, qb, estimate, (lo_ratio, hi_ratio), self.harm_p,
            bool(non_inf), math.exp(min(eq_log, 700.0)),
            min(1.0, math.exp(-self.eq_log_sup)), self.order_p, hi_c, lo_b, resolution,
        )  # fmt: skip


def _equality_log_e(ll_alt: FloatArray, ll_null: FloatArray) -> float:
    per_bucket = _logsumexp(ll_alt - ll_null[:, None]) - math.log(ll_alt.shape[1])
    return float(np.sum(per_bucket))

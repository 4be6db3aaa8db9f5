"""Anytime-valid building blocks: e-processes and confidence sequences.

Everything here is a pure function of counts, or a small immutable object with
an ``update`` that returns a new object. Functions broadcast over numpy arrays
so the calibration benchmark can run thousands of simulated canaries at once
through the very same code.

Validity rests on Ville's inequality: for a non-negative (super)martingale M
with M_0 = 1 under the null, P(sup_t M_t >= 1/a) <= a. Hence
p_t = min(1, 1 / max_{s<=t} M_s) is an anytime-valid p-value that never
increases, and {x : M_t(x) < 1/a} is a confidence sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import special

FloatArray = NDArray[np.float64]


def _readonly(a: FloatArray) -> FloatArray:
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------
# Rate ratio of event counts (Lindon & Malek, "Anytime-Valid Inference for
# Multinomial Count Data", NeurIPS 2022, §3; Netflix "Sequential A/B testing
# ... Part 2: counting processes").
# --------------------------------------------------------------------------


def rate_ratio_loglik(
    x_c: NDArray[np.float64] | float,
    x_b: NDArray[np.float64] | float,
    rho: NDArray[np.float64] | float,
    log_r: FloatArray,
) -> FloatArray:
    """Log-likelihood of one window's split of events at each log rate ratio.

    Given x_c + x_b events and the canary's exposure share rho, under rate
    ratio r the canary's events are Binomial(x_c + x_b, theta(r)) with
    theta(r) = rho r / (rho r + 1 - rho). Inputs broadcast against a trailing
    axis holding ``log_r``. Windows with rho in {0, 1} carry no information
    and contribute 0.
    """
    xc = np.asarray(x_c, dtype=np.float64)[..., None]
    xb = np.asarray(x_b, dtype=np.float64)[..., None]
    p = np.asarray(rho, dtype=np.float64)[..., None]
    inside = (p > 0.0) & (p < 1.0)
    p_safe = np.where(inside, p, 0.5)
    # log(rho r + 1 - rho) computed stably as logaddexp.
    log_norm = np.logaddexp(np.log(p_safe) + log_r, np.log1p(-p_safe))
    ll = xc * (np.log(p_safe) + log_r - log_norm) + xb * (np.log1p(-p_safe) - log_norm)
    return np.where(inside, ll, 0.0)


def _logsumexp(a: FloatArray, axis: int = -1) -> FloatArray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    out: FloatArray = np.log(np.sum(np.exp(a - m), axis=axis)) + np.squeeze(m, axis=axis)
    return out


def harm_alternatives(
    r0: float, points: int = 30, lo: float = 0.1, hi: float = 1.5
) -> FloatArray:
    """Log rate ratios of the one-sided mixture's alternatives, all above r0.

    The prior is uniform on log r - log r0 over [0.1, 1.5] (1.1x .. 4.5x the
    null). Larger effects are still caught quickly because their likelihood
    ratio against r0 grows with every window; the range was chosen by
    simulation (bench/calibration.py) to keep the time to detect a 2x rise
    short while the A/A rate stays near 2 %.
    """
    return _readonly(math.log(r0) + np.linspace(lo, hi, points))


@dataclass(frozen=True, eq=False)
class RateRatioHarm:
    """One-sided e-process for H0: rate ratio r <= r0 against r > r0.

    M_t = mean_k prod_s LR_s(r_k) / LR_s(r0) over alternatives r_k > r0. For
    any true r <= r0 each factor has expectation <= 1 (the binomial likelihood
    ratio of theta(r_k) > theta(r0) against theta(r0) is a supermartingale for
    every theta <= theta(r0)), so M is a test supermartingale for the whole
    composite null and the observed shares may change every window.
    """

    log_r0: float
    log_alt: FloatArray
    loglik_alt: FloatArray
    loglik_null: float
    log_sup: float = 0.0  # log max_{s<=t} M_s (M_0 = 1)

    @staticmethod
    def start(r0: float) -> RateRatioHarm:
        alt = harm_alternatives(r0)
        return RateRatioHarm(math.log(r0), alt, _readonly(np.zeros_like(alt)), 0.0)

    def update(self, x_c: int, x_b: int, n_c: float, n_b: float) -> RateRatioHarm:
        if n_c <= 0 or n_b <= 0 or x_c + x_b == 0:
            return self
        rho = n_c / (n_c + n_b)
        alt = self.loglik_alt + rate_ratio_loglik(x_c, x_b, rho, self.log_alt)
        null = self.loglik_null + float(
            rate_ratio_loglik(x_c, x_b, rho, np.array([self.log_r0]))[0]
        )
        log_m = float(_logsumexp(alt - null)) - math.log(alt.size)
        return RateRatioHarm(
            self.log_r0, self.log_alt, _readonly(alt), null, max(self.log_sup, log_m)
        )

    @property
    def log_evalue(self) -> float:
        return float(_logsumexp(self.loglik_alt - self.loglik_null)) - math.log(
            self.log_alt.size
        )

    @property
    def evalue(self) -> float:
        return math.exp(min(self.log_evalue, 700.0))

    @property
    def pvalue(self) -> float:
        """Anytime-valid p-value: min(1, 1 / sup_s M_s); never increases."""
        return min(1.0, math.exp(-self.log_sup))


def ratio_grid(half_width: float = math.log(100.0), points: int = 401) -> FloatArray:
    return _readonly(np.linspace(-half_width, half_width, points))


def _normal_prior(log_r: FloatArray, scale: float = 1.0) -> FloatArray:
    w = np.exp(-0.5 * (log_r / scale) ** 2)
    return _readonly(np.log(w / w.sum()))


@dataclass(frozen=True, eq=False)
class RateRatioCS:
    """Confidence sequence for the rate ratio by inverting mixture e-processes.

    For every grid value r_j, M_t(r_j) = sum_k pi_k exp(L_t(r_k) - L_t(r_j))
    with a fixed normal prior pi on log r is a test martingale under r = r_j,
    so {r_j : M_t(r_j) < 1/alpha} covers the true ratio at all times with
    probability >= 1 - alpha. The reported interval is the running
    intersection, widened to the neighbouring grid points because the truth
    may lie between them.
    """

    log_r: FloatArray
    log_prior: FloatArray
    loglik: FloatArray
    lower: float = 0.0
    upper: float = math.inf
    windows: int = 0

    @staticmethod
    def start() -> RateRatioCS:
        grid = ratio_grid()
        return RateRatioCS(grid, _normal_prior(grid), _readonly(np.zeros_like(grid)))

    def update(self, x_c: int, x_b: int, n_c: float, n_b: float) -> RateRatioCS:
        if n_c <= 0 or n_b <= 0 or x_c + x_b == 0:
            return self
        rho = n_c / (n_c + n_b)
        ll = _readonly(self.loglik + rate_ratio_loglik(x_c, x_b, rho, self.log_r))
        return RateRatioCS(self.log_r, self.log_prior, ll, self.lower, self.upper, self.windows + 1)

    def log_m(self) -> FloatArray:
        """log M_t(r_j) for every grid point."""
        mix = float(_logsumexp(self.log_prior + self.loglik))
        return mix - self.loglik

    def interval(self, alpha: float) -> tuple[float, float]:
        """Current (running-intersection) interval for r at level alpha."""
        inside = np.nonzero(self.log_m() < -math.log(alpha))[0]
        if inside.size == 0:  # only after a 1-alpha event; report a point
            return (self.lower, self.upper)
        step = float(self.log_r[1] - self.log_r[0])
        lo_idx, hi_idx = int(inside[0]), int(inside[-1])
        lo = 0.0 if lo_idx == 0 else math.exp(float(self.log_r[lo_idx]) - step)
        hi = math.inf if hi_idx == self.log_r.size - 1 else math.exp(
            float(self.log_r[hi_idx]) + step
        )
        return (max(lo, self.lower), min(hi, self.upper))

    def narrowed(self, alpha: float) -> RateRatioCS:
        lo, hi = self.interval(alpha)
        return RateRatioCS(self.log_r, self.log_prior, self.loglik, lo, hi, self.windows)


# --------------------------------------------------------------------------
# Bernoulli sums with known success probability: beta-binomial mixture
# (Robbins 1970; Howard, Ramdas, McAuliffe & Sekhon, "Time-uniform,
# nonparametric, nonasymptotic confidence sequences", Ann. Stat. 2021, §3.3).
# Used for fixed-quantile confidence sequences (Howard & Ramdas, "Sequential
# estimation of quantiles with applications to A/B-testing and best-arm
# identification", Bernoulli 2022, §2): at the true q-quantile xi,
# #{X_i <= xi} is a Binomial(t, q) sum for continuous F.
# --------------------------------------------------------------------------


def beta_binomial_log_m(
    s: NDArray[np.float64] | float, t: NDArray[np.float64] | float, q: float, k: float
) -> FloatArray:
    """log of the Beta(qk, (1-q)k) mixture martingale for s successes in t trials.

    M_t = B(a + s, b + t - s) / B(a, b) / (q^s (1 - q)^(t - s)); convex in s.
    """
    a, b = q * k, (1.0 - q) * k
    s_arr = np.asarray(s, dtype=np.float64)
    t_arr = np.asarray(t, dtype=np.float64)
    out: FloatArray = (
        special.betaln(a + s_arr, b + (t_arr - s_arr))
        - special.betaln(a, b)
        - s_arr * math.log(q)
        - (t_arr - s_arr) * math.log1p(-q)
    )
    return out


def beta_binomial_side(
    s: NDArray[np.float64] | float, t: NDArray[np.float64] | float, q: float, k: float
) -> FloatArray:
    """Sign of d/ds log M: negative left of the mixture's minimum, positive right."""
    a, b = q * k, (1.0 - q) * k
    s_arr = np.asarray(s, dtype=np.float64)
    t_arr = np.asarray(t, dtype=np.float64)
    d: FloatArray = (
        special.digamma(a + s_arr) - special.digamma(b + (t_arr - s_arr)) - math.log(q / (1 - q))
    )
    return np.sign(d)


# --------------------------------------------------------------------------
# Asymptotic confidence sequences for means (Waudby-Smith, Arnold, Wu, Wang &
# Ramdas, "Time-uniform central limit theory and asymptotic confidence
# sequences", Ann. Stat. 2024, Thm 2.2 with the Robbins normal mixture).
# --------------------------------------------------------------------------


def mixture_rho(alpha: float, n_star: float) -> float:
    """Mixing scale tuned so the boundary is tightest near n_star observations."""
    la = -2.0 * math.log(alpha)
    return math.sqrt((la + math.log(la + 1.0)) / n_star)


def asymptotic_halfwidth(sigma: float, n: float, alpha: float, rho: float) -> float:
    """Two-sided half-width of the Robbins normal-mixture boundary:

    sigma * sqrt(2 (n rho^2 + 1) / (n^2 rho^2) * log(sqrt(n rho^2 + 1) / alpha)).
    """
    if n <= 0:
        return math.inf
    nr = n * rho * rho
    return sigma * math.sqrt(2.0 * (nr + 1.0) / (n * nr) * math.log(math.sqrt(nr + 1.0) / alpha))


def asymptotic_pvalue(excess: float, sigma: float, n: float, rho: float) -> float:
    """Smallest alpha whose half-width is below ``excess`` (the estimate's distance
    from the null boundary, in the estimate's units); 1 when excess <= 0."""
    if excess <= 0 or n <= 0 or sigma <= 0:
        return 1.0 if excess <= 0 or n <= 0 else 0.0
    nr = n * rho * rho
    log_alpha = 0.5 * math.log(nr + 1.0) - (excess / sigma) ** 2 * n * nr / (2.0 * (nr + 1.0))
    return min(1.0, math.exp(log_alpha))


# --------------------------------------------------------------------------
# The normal mixture on an asymptotically normal estimate with standard
# error s: Lambda(theta0) = sqrt(s^2 / (s^2 + tau^2))
# * exp(tau^2 (est - theta0)^2 / (2 s^2 (s^2 + tau^2))), the mixture over
# N(theta0, tau^2) alternatives. With tau on the effect's own scale this is
# the mixture SPRT of Johari, Pekelis & Walsh ("Always valid inference",
# Oper. Res. 2022, §4); with tau = rho * sigma it is the asymptotic
# confidence sequence above (asymptotic_halfwidth(sigma, n, alpha, rho) ==
# normal_mixture_halfwidth(sigma / sqrt(n), rho * sigma, alpha)). The two
# differ only in where the mixture's scale comes from; see analysis.means.
# --------------------------------------------------------------------------


def _log_sqrt1p_sq(tau: float, s: float) -> float:
    """log sqrt(1 + (tau / s)^2) without overflow (tau, s > 0)."""
    r = tau / s
    return math.log(tau) - math.log(s) if r > 1e150 else 0.5 * math.log1p(r * r)


def normal_mixture_halfwidth(s: float, tau: float, alpha: float) -> float:
    """Two-sided half-width of {theta0 : Lambda(theta0) < 1/alpha}."""
    if not s > 0:
        return 0.0 if s == 0 else math.inf
    if not (math.isfinite(s) and tau > 0):
        return math.inf
    inv = s / tau
    w = inv * inv  # x * x saturates at inf; x ** 2 raises
    return s * math.sqrt(2.0 * (1.0 + w) * (_log_sqrt1p_sq(tau, s) - math.log(alpha)))


def normal_mixture_pvalue(excess: float, s: float, tau: float) -> float:
    """1 / Lambda at distance ``excess`` beyond the null boundary (1 when excess <= 0)."""
    if excess <= 0 or not tau > 0 or math.isnan(s):
        return 1.0
    if s <= 0:
        return 0.0
    z = excess / s
    inv = s / tau
    log_lambda = z * z / (2.0 * (1.0 + inv * inv)) - _log_sqrt1p_sq(tau, s)
    return min(1.0, math.exp(-min(log_lambda, 745.0)))

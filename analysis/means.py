"""Means and ratios of means (tokens per request, mean TTFT, tokens/s).

Asymptotic confidence sequences (Waudby-Smith, Arnold, Wu, Wang & Ramdas,
"Time-uniform central limit theory and asymptotic confidence sequences",
Ann. Stat. 2024; the form GrowthBook documents for its sequential tests) on
the log ratio of the two means, whose variance comes from the delta method:
Var(log m) ~ s^2 / (n m^2). A tokens/s metric is a ratio of two sums and is
handled the same way when its sum/count pair is (tokens, seconds).

Variance: from a sum of squares when the source exports one; otherwise from
the spread of per-window means (batch means), sum_w n_w (m_w - m)^2 / (W - 1),
which needs at least two windows and a roughly stationary mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from analysis.samples import SumCount
from analysis.sequential import asymptotic_halfwidth, asymptotic_pvalue, mixture_rho

DEFAULT_N_STAR = 1000.0


@dataclass(frozen=True)
class ArmMoments:
    n: int = 0
    total: float = 0.0
    sum_squares: float | None = 0.0
    windows: int = 0
    batch_sq: float = 0.0  # sum_w total_w^2 / n_w

    def add(self, sc: SumCount) -> ArmMoments:
        if sc.count <= 0:
            return self
        sq = None
        if self.sum_squares is not None and sc.sum_squares is not None:
            sq = self.sum_squares + sc.sum_squares
        return ArmMoments(
            self.n + sc.count,
            self.total + sc.total,
            sq,
            self.windows + 1,
            self.batch_sq + sc.total * sc.total / sc.count,
        )

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def variance(self) -> float:
        """Per-observation variance estimate (NaN when it cannot be estimated)."""
        if self.n < 2:
            return math.nan
        m = self.mean
        if self.sum_squares is not None and self.sum_squares > 0:
            return max(0.0, (self.sum_squares - self.n * m * m) / (self.n - 1))
        if self.windows < 2:
            return math.nan
        return max(0.0, (self.batch_sq - self.n * m * m) / (self.windows - 1))


@dataclass(frozen=True)
class MeanAssessment:
    mean_candidate: float
    mean_baseline: float
    estimate: float  # ratio candidate / baseline
    interval: tuple[float, float]
    diff_interval: tuple[float, float]
    harm_pvalue: float


@dataclass(frozen=True)
class MeanState:
    """Two arms plus the running-minimum anytime p-value for harm.

    ``higher_is_worse`` fixes the direction: harm is a ratio above
    1 + harm_margin (or below 1 - harm_margin when lower is worse).
    """

    harm_margin: float
    higher_is_worse: bool = True
    candidate: ArmMoments = ArmMoments()
    baseline: ArmMoments = ArmMoments()
    harm_p: float = 1.0
    n_star: float = DEFAULT_N_STAR

    def update(self, cand: SumCount, base: SumCount) -> MeanState:
        new = MeanState(
            self.harm_margin,
            self.higher_is_worse,
            self.candidate.add(cand),
            self.baseline.add(base),
            self.harm_p,
            self.n_star,
        )
        return MeanState(
            new.harm_margin,
            new.higher_is_worse,
            new.candidate,
            new.baseline,
            min(self.harm_p, new._harm_now()),
            new.n_star,
        )

    def _log_ratio(self) -> tuple[float, float, float] | None:
        """(log ratio, sigma for the CS, N) or None when not estimable."""
        c, b = self.candidate, self.baseline
        mc, mb = c.mean, b.mean
        vc, vb = c.variance, b.variance
        if not (mc > 0 and mb > 0) or math.isnan(vc) or math.isnan(vb):
            return None
        # (s / m)^2 rather than s^2 / m^2: m * m underflows for tiny means.
        cv_c, cv_b = math.sqrt(vc) / mc, math.sqrt(vb) / mb  # x * x saturates; x ** 2 raises
        rel_var = cv_c * cv_c / c.n + cv_b * cv_b / b.n
        n = float(c.n + b.n)
        log_ratio = math.log(mc) - math.log(mb)
        if not (math.isfinite(rel_var) and math.isfinite(log_ratio)):
            return None
        return (log_ratio, math.sqrt(n * rel_var), n)

    def _harm_now(self) -> float:
        lr = self._log_ratio()
        if lr is None:
            return 1.0
        est, sigma, n = lr
        rho = mixture_rho(0.05, self.n_star)
        if self.higher_is_worse:
            excess = est - math.log1p(self.harm_margin)
        else:
            if self.harm_margin >= 1:
                return 1.0
            excess = math.log1p(-self.harm_margin) - est
        return asymptotic_pvalue(excess, sigma, n, rho)

    def assess(self, alpha: float) -> MeanAssessment:
        c, b = self.candidate, self.baseline
        rho = mixture_rho(alpha, self.n_star)
        lr = self._log_ratio()
        if lr is None:
            ratio = c.mean / b.mean if b.n and c.n and b.mean != 0 else math.nan
            inf = (-math.inf, math.inf)
            return MeanAssessment(c.mean, b.mean, ratio, (0.0, math.inf), inf, self.harm_p)
        est, sigma, n = lr
        h = asymptotic_halfwidth(sigma, n, alpha, rho)
        diff_sigma = math.sqrt(n * (c.variance / c.n + b.variance / b.n))
        hd = asymptotic_halfwidth(diff_sigma, n, alpha, rho)
        diff = c.mean - b.mean
        return MeanAssessment(
            c.mean,
            b.mean,
            _exp(est),
            (_exp(est - h), _exp(est + h)),
            (diff - hd, diff + hd),
            self.harm_p,
        )


def _exp(x: float) -> float:
    """exp that saturates at inf instead of raising (a huge interval, not a crash)."""
    return math.inf if x > 709.0 else math.exp(x)

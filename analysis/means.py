"""Means and ratio metrics (tokens per request, mean TTFT, tokens per second).

Both are judged on the log of candidate / baseline, whose variance comes from
the delta method: Var(log m) ~ v / (n m^2), v the per-request variance of
the estimate m. The confidence sequence is a normal mixture on that estimate
(``sequential.normal_mixture_halfwidth``), with one of two mixing scales:

* **mixture SPRT** (Johari, Pekelis & Walsh, "Always valid inference", Oper.
  Res. 2022): the mixture's scale tau is set on the effect's own scale, here
  the non-inferiority margin, tau = |log(1 +- nonInferiorityMargin)|. The
  boundary of a normal mixture is tightest when tau is about the boundary's
  own width, so this one is near its best exactly when the interval reaches
  the margin, which is when a PASS is decided.
* **asymptotic confidence sequence** (Waudby-Smith, Arnold, Wu, Wang &
  Ramdas, Ann. Stat. 2024; GrowthBook's form): tau = rho * sigma with rho
  tuned to N* = 1000 observations, whatever the margin.

Rule: the mixture SPRT whenever the metric has a positive
``nonInferiorityMargin``, the asymptotic sequence when it is 0 (no effect
scale to tune to). The rule depends on the configuration only, never on the
data, so the chosen sequence keeps its level (picking the narrower of two
sequences look by look would not). ``tests/unit/analysis/test_ratios.py``
checks both cover at their level on simulated canaries and that the mixture
SPRT reaches a 5-25 % margin with up to ~45 % fewer requests when traffic is
high or noisy; where N* happens to match, the two coincide. The absolute
``minEffect`` criterion uses the same rule with tau = minEffect.

Variance of a mean: from a sum of squares when the source exports one;
otherwise from the spread of per-window means (batch means).

Ratio metrics (sum of y over sum of x per request, e.g. output tokens over
seconds): R = Y / X. Delta method: n Var(R) ~ Var(y - R x) / E[x]^2. With
per-request second moments (sum y^2, x^2, xy) that is computed directly;
without them (Prometheus exports sums and counts, not cross products) from
the windows as clusters: Var(R) ~ sum_w (Y_w - R X_w)^2 / X^2 * W / (W - 1),
the linearisation estimator for a ratio of cluster sums. It is right for
any window sizes, since Y_w - R X_w sums n_w independent zero-mean terms.
A variance from a few windows is itself too noisy for a sequence that is
looked at every window (simulated coverage at alpha 0.1 from the 3rd window:
84 %; from the 10th: 92 %), so the window method waits for
``MIN_RATIO_WINDOWS`` windows; until then the ratio is INCONCLUSIVE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from analysis.samples import RatioSums, SumCount
from analysis.sequential import mixture_rho, normal_mixture_halfwidth, normal_mixture_pvalue

DEFAULT_N_STAR = 1000.0
MIN_RATIO_WINDOWS = 10


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
class RatioMoments:
    """One arm of a ratio metric: sums, per-request moments and per-window moments."""

    n: int = 0
    num: float = 0.0  # sum of y
    den: float = 0.0  # sum of x
    yy: float | None = 0.0  # per-request sums of y^2, x^2, xy (None once a window lacks them)
    xx: float | None = 0.0
    xy: float | None = 0.0
    windows: int = 0
    w_yy: float = 0.0  # per-window sums of Y_w^2, X_w^2, X_w Y_w
    w_xx: float = 0.0
    w_xy: float = 0.0

    def add(self, rs: RatioSums) -> RatioMoments:
        if rs.count <= 0:
            return self
        per_request = self.yy is not None and rs.has_moments
        return RatioMoments(
            self.n + rs.count, self.num + rs.numerator, self.den + rs.denominator,
            _plus(self.yy, rs.numerator_squares, per_request),
            _plus(self.xx, rs.denominator_squares, per_request),
            _plus(self.xy, rs.cross_products, per_request),
            self.windows + 1,
            self.w_yy + rs.numerator * rs.numerator,
            self.w_xx + rs.denominator * rs.denominator,
            self.w_xy + rs.numerator * rs.denominator,
        )  # fmt: skip

    @property
    def mean(self) -> float:
        """The ratio Y / X (NaN without a positive denominator)."""
        return self.num / self.den if self.n and self.den > 0 else math.nan

    @property
    def variance(self) -> float:
        """n Var(R): the per-request variance of the ratio estimate (NaN: not estimable)."""
        r = self.mean
        if self.n < 2 or math.isnan(r):
            return math.nan
        if self.yy is not None and self.xx is not None and self.xy is not None:
            resid = self.yy - 2.0 * r * self.xy + r * r * self.xx  # sum (y - R x)^2
            mx = self.den / self.n
            if not mx > 0:  # underflow
                return math.nan
            out = max(0.0, resid / (self.n - 1)) / mx / mx
        elif self.windows < MIN_RATIO_WINDOWS:
            return math.nan
        else:
            resid = self.w_yy - 2.0 * r * self.w_xy + r * r * self.w_xx  # sum_w (Y_w - R X_w)^2
            scale = self.n / self.den * (self.windows / ((self.windows - 1) * self.den))
            out = max(0.0, resid) * scale
        # sums of squares past 1e308 give inf - inf: not estimable rather than 0
        return out if math.isfinite(out) and math.isfinite(resid) else math.nan


def _plus(acc: float | None, x: float | None, keep: bool) -> float | None:
    return acc + x if keep and acc is not None and x is not None else None


Arm = ArmMoments | RatioMoments


def _add(arm: Arm, x: SumCount | RatioSums) -> Arm:
    if isinstance(arm, ArmMoments) and isinstance(x, SumCount):
        return arm.add(x)
    if isinstance(arm, RatioMoments) and isinstance(x, RatioSums):
        return arm.add(x)
    raise TypeError(f"{type(x).__name__} does not fit a {type(arm).__name__} arm")


def msprt_scale(margin: float, higher_is_worse: bool) -> float | None:
    """The mixture SPRT's tau for a relative margin (None: use the asymptotic sequence)."""
    if not margin > 0:
        return None
    if higher_is_worse:
        return math.log1p(margin)
    return -math.log1p(-margin) if margin < 1 else math.log1p(margin)


@dataclass(frozen=True)
class MeanAssessment:
    mean_candidate: float
    mean_baseline: float
    estimate: float  # ratio candidate / baseline
    interval: tuple[float, float]
    diff_interval: tuple[float, float]
    harm_pvalue: float
    method: str = "asymptotic"  # "msprt" or "asymptotic"


@dataclass(frozen=True)
class MeanState:
    """Two arms plus the running-minimum anytime p-value for harm.

    ``higher_is_worse`` fixes the direction: harm is a ratio above
    1 + harm_margin (or below 1 - harm_margin when lower is worse). ``tau``
    (log-ratio units) selects the mixture SPRT, ``diff_tau`` (the metric's
    unit) the same for the difference; None: the asymptotic sequence.
    """

    harm_margin: float
    higher_is_worse: bool = True
    candidate: Arm = ArmMoments()
    baseline: Arm = ArmMoments()
    harm_p: float = 1.0
    n_star: float = DEFAULT_N_STAR
    tau: float | None = None
    diff_tau: float | None = None

    @staticmethod
    def start(harm_margin: float, ni_margin: float, min_effect: float, higher_is_worse: bool,
              ratio: bool = False) -> MeanState:
        """A metric's state with its sequences chosen by the module's rule."""
        arm: Arm = RatioMoments() if ratio else ArmMoments()
        return MeanState(harm_margin, higher_is_worse, arm, arm,
                         tau=msprt_scale(ni_margin, higher_is_worse),
                         diff_tau=min_effect if min_effect > 0 else None)

    def update(self, cand: SumCount | RatioSums, base: SumCount | RatioSums) -> MeanState:
        new = replace(self, candidate=_add(self.candidate, cand),
                      baseline=_add(self.baseline, base))
        return replace(new, harm_p=min(self.harm_p, new._harm_now()))

    def _log_ratio(self) -> tuple[float, float, float] | None:
        """(log ratio, its standard error, N) or None when not estimable."""
        c, b = self.candidate, self.baseline
        mc, mb = c.mean, b.mean
        vc, vb = c.variance, b.variance
        if not (mc > 0 and mb > 0) or math.isnan(vc) or math.isnan(vb):
            return None
        # (s / m)^2 rather than s^2 / m^2: m * m underflows for tiny means.
        cv_c, cv_b = math.sqrt(vc) / mc, math.sqrt(vb) / mb  # x * x saturates; x ** 2 raises
        rel_var = cv_c * cv_c / c.n + cv_b * cv_b / b.n
        log_ratio = math.log(mc) - math.log(mb)
        if not (math.isfinite(rel_var) and math.isfinite(log_ratio)):
            return None
        return (log_ratio, math.sqrt(rel_var), float(c.n + b.n))

    def _scale(self, se: float, n: float, alpha: float, tau: float | None) -> float:
        """The mixture's tau: the configured one, else the asymptotic rho * sigma."""
        return tau if tau is not None else mixture_rho(alpha, self.n_star) * se * math.sqrt(n)

    def _harm_now(self) -> float:
        lr = self._log_ratio()
        if lr is None:
            return 1.0
        est, se, n = lr
        if self.higher_is_worse:
            excess = est - math.log1p(self.harm_margin)
        else:
            if self.harm_margin >= 1:
                return 1.0
            excess = math.log1p(-self.harm_margin) - est
        return normal_mixture_pvalue(excess, se, self._scale(se, n, 0.05, self.tau))

    def assess(self, alpha: float) -> MeanAssessment:
        c, b = self.candidate, self.baseline
        method = "asymptotic" if self.tau is None else "msprt"
        lr = self._log_ratio()
        if lr is None:
            ratio = c.mean / b.mean if b.n and c.n and b.mean != 0 else math.nan
            inf = (-math.inf, math.inf)
            return MeanAssessment(c.mean, b.mean, ratio, (0.0, math.inf), inf, self.harm_p,
                                  method)
        est, se, n = lr
        h = normal_mixture_halfwidth(se, self._scale(se, n, alpha, self.tau), alpha)
        diff_se = math.sqrt(c.variance / c.n + b.variance / b.n)
        hd = normal_mixture_halfwidth(diff_se, self._scale(diff_se, n, alpha, self.diff_tau),
                                      alpha)
        diff = c.mean - b.mean
        return MeanAssessment(
            c.mean,
            b.mean,
            _exp(est),
            (_exp(est - h), _exp(est + h)),
            (diff - hd, diff + hd),
            self.harm_p,
            method,
        )


def _exp(x: float) -> float:
    """exp that saturates at inf instead of raising (a huge interval, not a crash)."""
    return math.inf if x > 709.0 else math.exp(x)

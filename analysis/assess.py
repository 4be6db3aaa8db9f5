"""One metric's numbers at one look, per kind, with the criteria that decide.

``assess_track`` turns a metric's accumulated state into an :class:`Assessed`:
estimate, interval, p-value, whether harm is shown, and each non-inferiority
criterion (the relative margin, the absolute ``minEffect``) with the numbers
it compares, so that a verdict's reason says which one decided and why.
Units: rates in percentage points, latency in durations, means and ratios in
their own unit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from analysis.buckets import format_seconds, within_gap, within_ratio
from analysis.latency import LatencyState
from analysis.means import MeanState
from analysis.rates import ErrorRateState
from analysis.spec import MetricKind, MetricSpec


def pct(x: float) -> str:
    return f"{x * 100:g}%"


def num(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.3g}"


def _points(x: float, sign: bool = False) -> str:
    return f"{x * 100:{'+' if sign else ''}.2g} points"


def _value(x: float) -> str:
    return f"{x:.4g}"


@dataclass(frozen=True)
class Check:
    """One criterion: ``left <= right`` (or ``>=`` when ``at_least``), and whether it held."""

    ok: bool
    left: str
    right: str
    at_least: bool = False

    def text(self) -> str:
        if self.at_least:
            return f"{self.left} {'>=' if self.ok else '<'} {self.right}"
        return f"{self.left} {'<=' if self.ok else '>'} {self.right}"


@dataclass(frozen=True)
class Assessed:
    what: str  # "error-rate ratio"
    n_candidate: float
    n_baseline: float
    estimate: float
    interval: tuple[float, float]
    pvalue: float
    evalue: float | None
    harmful: bool
    harm_text: str  # the harm criteria with their numbers
    checks: tuple[Check, ...]  # non-inferiority: any one that holds is enough
    details: Mapping[str, float] = field(default_factory=dict)
    note: str = ""  # why the metric may never pass (coarse buckets)

    @property
    def non_inferior(self) -> bool:
        return any(c.ok for c in self.checks)

    @property
    def ci(self) -> str:
        return f"{num(self.estimate)} ({num(self.interval[0])}-{num(self.interval[1])})"


def _relative(upper: float, ni: float) -> Check:
    return Check(upper <= 1 + ni, f"upper bound {num(upper)}",
                 f"{1 + ni:g} (1 + nonInferiorityMargin {pct(ni)})")


def _rates(spec: MetricSpec, st: ErrorRateState, alpha: float, alpha_harm: float) -> Assessed:
    a = st.assess(alpha)
    slow = spec.kind is MetricKind.SLOW_RATE
    what = (f"slow-request ratio (> {format_seconds(spec.threshold_s or 0.0)})" if slow
            else "error-rate ratio")
    diff = a.rate_candidate - a.rate_baseline
    relative_harm = a.harm_pvalue <= alpha_harm
    harmful = relative_harm and diff > spec.min_effect
    harm_text = f"harm beyond {pct(spec.harm_margin)} (p={a.harm_pvalue:.2g} <= {alpha_harm:.2g})"
    if spec.min_effect > 0:
        harm_text += (f" and difference {_points(diff, True)} > minEffect "
                      f"{_points(spec.min_effect)}")
    checks = [_relative(a.interval[1], spec.non_inferiority_margin)]
    if spec.min_effect > 0 or a.diff_upper <= 0:
        checks.append(Check(a.diff_upper <= spec.min_effect,
                            f"difference at most {_points(a.diff_upper, True)}",
                            f"minEffect {_points(spec.min_effect)}"))
    details = {"rate_candidate": a.rate_candidate, "rate_baseline": a.rate_baseline,
               "events_candidate": a.events_candidate, "events_baseline": a.events_baseline,
               "diff_upper": a.diff_upper}
    if slow:
        details = {"threshold_s": spec.threshold_s or 0.0, **details}
    return Assessed(what, a.n_candidate, a.n_baseline, a.estimate, a.interval, a.harm_pvalue,
                    a.harm_evalue, harmful, harm_text, tuple(checks), details)


def _latency(spec: MetricSpec, st: LatencyState, alpha: float, alpha_harm: float) -> Assessed:
    la = st.assess(alpha, spec.non_inferiority_margin)
    what = f"p{spec.quantile * 100:g} latency ratio"
    harm_text = f"harm beyond {pct(spec.harm_margin)}"
    if spec.min_effect > 0:
        harm_text += f" and beyond minEffect {format_seconds(spec.min_effect)}"
    harm_text += f" (p={la.harm_pvalue:.2g} <= {alpha_harm:.2g})"
    ni, hi_c, lo_b = spec.non_inferiority_margin, la.upper_candidate, la.lower_baseline
    checks = [Check(within_ratio(hi_c, lo_b, ni), f"upper bound {num(la.interval[1])}",
                    f"{1 + ni:g} (1 + nonInferiorityMargin {pct(ni)})")]
    gap = hi_c - lo_b
    if spec.min_effect > 0:
        checks.append(Check(within_gap(hi_c, lo_b, spec.min_effect),
                            f"difference at most {format_seconds(gap)}",
                            f"minEffect {format_seconds(spec.min_effect)}"))
    details: dict[str, float] = {
        "quantile": spec.quantile, "q_candidate_s": la.q_candidate,
        "q_baseline_s": la.q_baseline, "equality_evalue": la.equality_evalue,
        "equality_pvalue": la.equality_pvalue, "order_pvalue": la.order_pvalue}
    note = ""
    res = la.resolution
    enough = la.n_baseline >= max(spec.min_samples, 10.0 / (1.0 - spec.quantile))
    if res is not None and enough:
        details.update({"bucket_lower_s": res.lower, "bucket_upper_s": res.upper,
                        "harm_floor_s": res.harm_floor,
                        "coarse_buckets": 0.0 if res.pass_possible else 1.0})
        if not res.pass_possible:
            note = res.explain(spec.quantile, spec.non_inferiority_margin, spec.min_effect)
    return Assessed(what, la.n_candidate, la.n_baseline, la.estimate, la.interval,
                    la.harm_pvalue, None, la.harm_pvalue <= alpha_harm, harm_text,
                    tuple(checks), details, note)


def _means(spec: MetricSpec, st: MeanState, alpha: float, alpha_harm: float) -> Assessed:
    ma = st.assess(alpha)
    what = "ratio of ratios" if spec.kind is MetricKind.RATIO else "mean ratio"
    diff = ma.mean_candidate - ma.mean_baseline
    ni, me = spec.non_inferiority_margin, spec.min_effect
    lo, hi = ma.interval
    d_lo, d_hi = ma.diff_interval
    if st.higher_is_worse:
        worse = diff
        rel = _relative(hi, ni)
        absolute = Check(d_hi <= me, f"difference at most {_value(d_hi)}", f"minEffect {me:g}")
        beyond = f"harm beyond +{pct(spec.harm_margin)}"
    else:
        worse = -diff
        rel = Check(lo >= 1 - ni, f"lower bound {num(lo)}",
                    f"{1 - ni:g} (1 - nonInferiorityMargin {pct(ni)})", at_least=True)
        absolute = Check(d_lo >= -me, f"difference at least {_value(d_lo)}",
                         f"-minEffect {-me:g}", at_least=True)
        beyond = f"harm beyond -{pct(spec.harm_margin)}"
    harmful = ma.harm_pvalue <= alpha_harm and worse > me
    harm_text = f"{beyond} (p={ma.harm_pvalue:.2g} <= {alpha_harm:.2g})"
    if me > 0:
        harm_text += f" and difference {_value(diff)} beyond minEffect {me:g}"
    checks = (rel, absolute) if me > 0 or absolute.ok else (rel,)
    c, b = st.candidate, st.baseline
    details = {"mean_candidate": ma.mean_candidate, "mean_baseline": ma.mean_baseline,
               "msprt": 1.0 if ma.method == "msprt" else 0.0}
    return Assessed(what, c.n, b.n, ma.estimate, ma.interval, ma.harm_pvalue, None, harmful,
                    harm_text, checks, details)


def assess_state(spec: MetricSpec, st: ErrorRateState | LatencyState | MeanState,
                 alpha: float, alpha_harm: float) -> Assessed:
    if isinstance(st, ErrorRateState):
        return _rates(spec, st, alpha, alpha_harm)
    if isinstance(st, LatencyState):
        return _latency(spec, st, alpha, alpha_harm)
    return _means(spec, st, alpha, alpha_harm)

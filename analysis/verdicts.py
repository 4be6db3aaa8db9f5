"""Per-metric accumulation and verdicts (FAIL, PASS, INCONCLUSIVE, NODATA).

A verdict is a pure function of one metric's accumulated state:

* FAIL: anytime-valid evidence of harm beyond ``harmMargin`` at the metric's
  share of alpha (Bonferroni on e-values: reject when e >= m / alpha, i.e.
  p <= alpha / m with m gating metrics), and a difference beyond
  ``minEffect``. Harm p-values are running minima, so FAIL is sticky.
* NODATA: this look brought no data for a version, or one version has none
  at all. It holds; it never fails.
* INCONCLUSIVE: fewer than ``minSamples`` per version, or the interval still
  straddles the non-inferiority margin.
* PASS: the confidence sequence shows non-inferiority (upper bound within
  ``nonInferiorityMargin``, or the absolute difference within ``minEffect``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from analysis.latency import LatencyState
from analysis.means import MeanState
from analysis.rates import ErrorRateState
from analysis.samples import Window
from analysis.spec import Direction, MetricKind, MetricSpec

MetricState = ErrorRateState | LatencyState | MeanState


class Verdict(enum.Enum):
    FAIL = "FAIL"
    PASS = "PASS"
    INCONCLUSIVE = "INCONCLUSIVE"
    NODATA = "NODATA"


@dataclass(frozen=True)
class MetricVerdict:
    name: str
    kind: MetricKind
    gating: bool
    verdict: Verdict
    window: tuple[float, float] | None  # first and last window time accumulated
    n: Mapping[str, float]  # {"candidate": n, "baseline": n}
    estimate: float  # candidate / baseline (rate ratio, quantile ratio, mean ratio)
    interval: tuple[float, float]
    evalue: float | None
    pvalue: float
    alpha: float  # the metric's share of alpha for harm
    harm_margin: float
    non_inferiority_margin: float
    reason: str
    details: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class MetricTrack:
    spec: MetricSpec
    state: MetricState
    first_t: float | None = None
    last_t: float | None = None
    fresh: bool = False  # did the latest look bring data for both versions?


def start_track(spec: MetricSpec) -> MetricTrack:
    state: MetricState
    if spec.kind is MetricKind.ERROR_RATE:
        state = ErrorRateState.start(spec.harm_margin)
    elif spec.kind is MetricKind.LATENCY:
        state = LatencyState(spec.quantile, spec.harm_margin, spec.min_effect)
    else:
        state = MeanState(spec.harm_margin, spec.direction is Direction.HIGHER_IS_WORSE)
    return MetricTrack(spec, state)


def update_track(track: MetricTrack, t: float, cand: Window | None,
                 base: Window | None) -> MetricTrack:
    """Fold one look into a metric; a look missing either version is NODATA."""
    spec, st = track.spec, track.state
    new: MetricState | None = None
    if cand is not None and base is not None:
        if isinstance(st, ErrorRateState):
            new = st.update(cand.events(spec.source), base.events(spec.source),
                            cand.requests, base.requests)
        elif isinstance(st, LatencyState):
            key = spec.source or "latency"
            hc, hb = cand.histograms.get(key), base.histograms.get(key)
            if hc is not None and hb is not None:
                new = st.update(hc, hb, cand.requests, base.requests)
        else:
            key = spec.source or spec.name
            mc, mb = cand.means.get(key), base.means.get(key)
            if mc is not None and mb is not None:
                new = st.update(mc, mb)
    if new is None:
        return MetricTrack(spec, st, track.first_t, track.last_t, False)
    first = t if track.first_t is None else track.first_t
    return MetricTrack(spec, new, first, t, True)


def _pct(x: float) -> str:
    return f"{x * 100:g}%"


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.3g}"


def verdict_for(track: MetricTrack, alpha: float, alpha_harm: float) -> MetricVerdict:
    spec, st = track.spec, track.state
    window = None if track.first_t is None else (track.first_t, track.last_t or track.first_t)
    evalue: float | None = None
    details: dict[str, float] = {}
    if isinstance(st, ErrorRateState):
        a = st.assess(alpha)
        n_c, n_b = a.n_candidate, a.n_baseline
        estimate, interval, pvalue, evalue = a.estimate, a.interval, a.harm_pvalue, a.harm_evalue
        harmful = a.harm_pvalue <= alpha_harm and (a.rate_candidate - a.rate_baseline
                                                   > spec.min_effect)
        non_inf = interval[1] <= 1 + spec.non_inferiority_margin or a.diff_upper <= spec.min_effect
        details = {"rate_candidate": a.rate_candidate, "rate_baseline": a.rate_baseline,
                   "events_candidate": a.events_candidate, "events_baseline": a.events_baseline,
                   "diff_upper": a.diff_upper}
        what = "error-rate ratio"
    elif isinstance(st, LatencyState):
        la = st.assess(alpha, spec.non_inferiority_margin)
        n_c, n_b = la.n_candidate, la.n_baseline
        estimate, interval, pvalue = la.estimate, la.interval, la.harm_pvalue
        harmful = pvalue <= alpha_harm
        non_inf = la.non_inferior
        details = {"quantile": spec.quantile, "q_candidate_s": la.q_candidate,
                   "q_baseline_s": la.q_baseline, "equality_evalue": la.equality_evalue,
                   "equality_pvalue": la.equality_pvalue, "order_pvalue": la.order_pvalue}
        what = f"p{spec.quantile * 100:g} latency ratio"
    else:
        ma = st.assess(alpha)
        n_c, n_b = st.candidate.n, st.baseline.n
        estimate, interval, pvalue = ma.estimate, ma.interval, ma.harm_pvalue
        diff = ma.mean_candidate - ma.mean_baseline
        if st.higher_is_worse:
            harmful = pvalue <= alpha_harm and diff > spec.min_effect
            non_inf = (interval[1] <= 1 + spec.non_inferiority_margin
                       or ma.diff_interval[1] <= spec.min_effect)
        else:
            harmful = pvalue <= alpha_harm and -diff > spec.min_effect
            non_inf = (interval[0] >= 1 - spec.non_inferiority_margin
                       or ma.diff_interval[0] >= -spec.min_effect)
        details = {"mean_candidate": ma.mean_candidate, "mean_baseline": ma.mean_baseline}
        what = "mean ratio"
    ci = f"{_fmt(estimate)} ({_fmt(interval[0])}-{_fmt(interval[1])})"
    if harmful:
        v = Verdict.FAIL
        reason = (f"{what} {ci}: harm beyond {_pct(spec.harm_margin)}, "
                  f"p={pvalue:.2g} <= {alpha_harm:.2g}")
    elif not track.fresh or n_c <= 0 or n_b <= 0:
        v = Verdict.NODATA
        reason = ("no data for a version in this look" if not track.fresh
                  else "no traffic yet for a version")
    elif n_c < spec.min_samples or n_b < spec.min_samples:
        v = Verdict.INCONCLUSIVE
        reason = f"n={int(n_c)}/{int(n_b)} below minSamples {spec.min_samples}"
    elif non_inf:
        v = Verdict.PASS
        reason = f"{what} {ci} within non-inferiority margin {_pct(spec.non_inferiority_margin)}"
    else:
        v = Verdict.INCONCLUSIVE
        reason = (f"{what} {ci} not yet within non-inferiority margin "
                  f"{_pct(spec.non_inferiority_margin)}")
    return MetricVerdict(
        spec.name, spec.kind, spec.gating, v, window, {"candidate": n_c, "baseline": n_b},
        estimate, interval, evalue, pvalue, alpha_harm, spec.harm_margin,
        spec.non_inferiority_margin, reason, details,
    )


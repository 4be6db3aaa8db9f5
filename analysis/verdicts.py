"""Per-metric accumulation and verdicts (FAIL, PASS, INCONCLUSIVE, NODATA).

A verdict is a pure function of one metric's accumulated state:

* FAIL: anytime-valid evidence of harm beyond ``harmMargin`` at the metric's
  share of alpha (Bonferroni on e-values: reject when e >= m / alpha, i.e.
  p <= alpha / m with m gating metrics), and a difference beyond
  ``minEffect``. Harm p-values are running minima, so FAIL is sticky.
* NODATA: this look brought no data for a version, or one version has none
  at all, or the data cannot be read for this metric (a slow_rate threshold
  that is not a bucket bound, histograms whose layouts differ between the
  versions); the reason says which. It holds; it never fails.
* INCONCLUSIVE: fewer than ``minSamples`` per version, or the interval still
  straddles the non-inferiority margin.
* PASS: the confidence sequence shows non-inferiority (upper bound within
  ``nonInferiorityMargin``, or the absolute difference within ``minEffect``).

Reasons name the criterion that decided, with the numbers compared
(``analysis.assess``). A latency quantile whose buckets are too coarse ever
to show non-inferiority says so in its INCONCLUSIVE reason and in
``details["coarse_buckets"]`` rather than holding in silence.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from analysis.assess import assess_state
from analysis.buckets import slow_count, threshold_problem
from analysis.latency import LatencyState, interpolated_quantile
from analysis.means import MeanState
from analysis.rates import ErrorRateState
from analysis.samples import BucketLayoutMismatch, RatioSums, Window
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
    problem: str = ""  # why the latest look's data could not be used (NODATA's reason)


def start_track(spec: MetricSpec) -> MetricTrack:
    state: MetricState
    if spec.kind in (MetricKind.ERROR_RATE, MetricKind.SLOW_RATE):
        state = ErrorRateState.start(spec.harm_margin)
    elif spec.kind is MetricKind.LATENCY:
        state = LatencyState(spec.quantile, spec.harm_margin, spec.min_effect)
    else:
        state = MeanState.start(spec.harm_margin, spec.non_inferiority_margin, spec.min_effect,
                                spec.direction is Direction.HIGHER_IS_WORSE,
                                ratio=spec.kind is MetricKind.RATIO)
    return MetricTrack(spec, state)


def ratio_sums(spec: MetricSpec, w: Window) -> RatioSums | None:
    """A ratio metric's sums in one window: from two means, or from ``w.ratios``."""
    if spec.numerator is not None and spec.denominator is not None:
        y, x = w.means.get(spec.numerator), w.means.get(spec.denominator)
        if y is None or x is None:
            return None
        return RatioSums(y.total, x.total, min(y.count, x.count))
    return w.ratios.get(spec.source or spec.name)


def point_value(m: MetricSpec, w: Window) -> tuple[float, int] | None:
    """A metric's value in one window of one version, with its n (None: not measurable).

    Error and slow rates, the interpolated quantile, the mean, the ratio Y / X.
    """
    if m.kind is MetricKind.ERROR_RATE:
        return (w.events(m.source) / w.requests, w.requests) if w.requests else None
    if m.histogram is not None:
        h = w.histograms.get(m.histogram)
        if h is None or h.count == 0:
            return None
        if m.kind is MetricKind.SLOW_RATE:
            slow = slow_count(h, m.threshold_s or 0.0)
            return None if slow is None else (slow / h.count, h.count)
        q = interpolated_quantile(np.asarray(h.bounds), np.cumsum(h.counts).astype(float),
                                  m.quantile)
        return (q, h.count) if math.isfinite(q) else None
    if m.kind is MetricKind.RATIO:
        r = ratio_sums(m, w)
        return (r.numerator / r.denominator, r.count) if r and r.denominator > 0 else None
    sc = w.means.get(m.source or m.name)
    return (sc.total / sc.count, sc.count) if sc and sc.count else None


def _slow(spec: MetricSpec, st: ErrorRateState, cand: Window,
          base: Window) -> ErrorRateState | str | None:
    key = spec.histogram or "latency"
    hc, hb = cand.histograms.get(key), base.histograms.get(key)
    if hc is None or hb is None:
        return None
    threshold = spec.threshold_s or 0.0
    s_c, s_b = slow_count(hc, threshold), slow_count(hb, threshold)
    if s_c is None or s_b is None:
        return threshold_problem((hc if s_c is None else hb).bounds, threshold, key)
    return st.update(s_c, s_b, hc.count, hb.count)


def _fold(spec: MetricSpec, st: MetricState, cand: Window,
          base: Window) -> MetricState | str | None:
    """The new state, a problem (str) or None (no data) for one look of both versions."""
    if isinstance(st, ErrorRateState):
        if spec.kind is MetricKind.SLOW_RATE:
            return _slow(spec, st, cand, base)
        return st.update(cand.events(spec.source), base.events(spec.source),
                         cand.requests, base.requests)
    if isinstance(st, LatencyState):
        key = spec.histogram or "latency"
        hc, hb = cand.histograms.get(key), base.histograms.get(key)
        if hc is None or hb is None:
            return None
        try:
            return st.update(hc, hb, cand.requests, base.requests)
        except BucketLayoutMismatch as exc:
            return f"{key}: {exc}"
    if spec.kind is MetricKind.RATIO:
        rc, rb = ratio_sums(spec, cand), ratio_sums(spec, base)
        return st.update(rc, rb) if rc is not None and rb is not None else None
    key = spec.source or spec.name
    mc, mb = cand.means.get(key), base.means.get(key)
    return st.update(mc, mb) if mc is not None and mb is not None else None


def update_track(track: MetricTrack, t: float, cand: Window | None,
                 base: Window | None) -> MetricTrack:
    """Fold one look into a metric; a look missing either version is NODATA.

    Never raises on well-formed windows: data this metric cannot use (a
    threshold that is not a bucket bound, layouts that differ) is NODATA
    with the reason in ``problem``.
    """
    spec, st = track.spec, track.state
    new = _fold(spec, st, cand, base) if cand is not None and base is not None else None
    if new is None or isinstance(new, str):
        return MetricTrack(spec, st, track.first_t, track.last_t, False, new or "")
    first = t if track.first_t is None else track.first_t
    return MetricTrack(spec, new, first, t, True)


def verdict_for(track: MetricTrack, alpha: float, alpha_harm: float) -> MetricVerdict:
    spec, st = track.spec, track.state
    window = None if track.first_t is None else (track.first_t, track.last_t or track.first_t)
    a = assess_state(spec, st, alpha, alpha_harm)
    n_c, n_b = a.n_candidate, a.n_baseline
    head = f"{a.what} {a.ci}"
    if a.harmful:
        v = Verdict.FAIL
        reason = f"{head}: {a.harm_text}"
    elif not track.fresh or n_c <= 0 or n_b <= 0:
        v = Verdict.NODATA
        reason = (track.problem or "no data for a version in this look" if not track.fresh
                  else "no traffic yet for a version")
    elif n_c < spec.min_samples or n_b < spec.min_samples:
        v = Verdict.INCONCLUSIVE
        reason = f"n={int(n_c)}/{int(n_b)} below minSamples {spec.min_samples}"
    elif a.non_inferior:
        v = Verdict.PASS
        reason = f"{head}: non-inferior: " + " and ".join(c.text() for c in a.checks if c.ok)
    else:
        v = Verdict.INCONCLUSIVE
        reason = f"{head}: not yet non-inferior: " + "; ".join(c.text() for c in a.checks)
        if a.note:
            reason += f"; {a.note}"
    return MetricVerdict(
        spec.name, spec.kind, spec.gating, v, window, {"candidate": n_c, "baseline": n_b},
        a.estimate, a.interval, a.evalue, a.pvalue, alpha_harm, spec.harm_margin,
        spec.non_inferiority_margin, reason, a.details,
    )

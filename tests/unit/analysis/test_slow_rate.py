"""slow_rate: the share above a bucket bound, exact with any layout; coarse-bucket diagnosis."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.buckets import (
    ENVOY_DEFAULT_BUCKETS_MS,
    quantile_resolution,
    slow_count,
    threshold_problem,
    unresolvable_buckets,
)
from analysis.judge import Decision, Look, judge, start
from analysis.providers import ProviderError, Target
from analysis.providers.promql import plan
from analysis.rates import ErrorRateState
from analysis.samples import Histogram, Window
from analysis.spec import ExperimentSpec
from analysis.verdicts import Verdict, point_value
from controlplane.config.experiment import experiment_from_mapping

ENVOY = (*(b / 1000 for b in ENVOY_DEFAULT_BUCKETS_MS), math.inf)
TEN_PERCENT = (*(0.01 * 1.1**k for k in range(90)), math.inf)


def _spec(*metrics: dict[str, Any]) -> ExperimentSpec:
    doc = {"apiVersion": "sluice.dev/v1alpha1", "kind": "Experiment", "metadata": {"name": "x"},
           "spec": {"baseline": "b", "candidate": "c", "steps": [{"weight": 10, "soak": "1m"},
                                                                 {"weight": 50, "soak": "1m"}],
                    "metrics": list(metrics)}}
    return experiment_from_mapping(doc).analysis


SLOW = {"name": "slow", "kind": "slow_rate", "threshold": "500ms", "harmMargin": 0.0,
        "nonInferiorityMargin": 0.5, "minEffect": 0.005, "minSamples": 100}


def _window(t: float, version: str, bounds: tuple[float, ...], counts: tuple[int, ...],
            weight: float, name: str = "latency") -> Window:
    h = Histogram(bounds, counts)
    return Window(t, version, h.count, 0, histograms={name: h}, weight=weight)


def test_slow_count_is_total_minus_cumulative_count_at_the_bound() -> None:
    bounds = (0.1, 0.25, 0.5, 1.0, math.inf)
    h = Histogram(bounds, (50, 30, 12, 5, 3))  # cumulative 50, 80, 92, 97, 100
    assert slow_count(h, 0.5) == 100 - 92
    assert slow_count(h, 0.25) == 20
    assert slow_count(h, 1.0) == 3
    assert slow_count(h, 0.3) is None
    assert slow_count(Histogram((0.0005, 0.5, math.inf), (1, 2, 3)), 500 * 0.001) == 3
    assert point_value(_spec(SLOW).metrics[0], _window(60, "c", bounds, h.counts, 10)) == (
        0.08, 100)


def test_slow_rate_is_judged_exactly_like_an_error_rate_of_the_slow_counts() -> None:
    spec = _spec(SLOW)
    state = start(spec, 0.0)
    rate = ErrorRateState.start(0.0)
    bounds = (0.1, 0.25, 0.5, 1.0, math.inf)
    looks = [((40, 20, 15, 3, 2), (400, 250, 120, 20, 10)),
             ((45, 20, 11, 3, 1), (410, 240, 110, 30, 10)),
             ((30, 30, 20, 3, 2), (420, 230, 120, 20, 5))]
    for i, (c, b) in enumerate(looks, start=1):
        t = 60.0 * i
        state, j = judge(state, Look(t, _window(t, "c", bounds, c, 10),
                                     _window(t, "b", bounds, b, 90)))
        rate = rate.update(c[3] + c[4], b[3] + b[4], sum(c), sum(b))
    v = j.metrics[0]
    a = rate.assess(0.05)
    assert j.decision is Decision.HOLD
    assert v.details["events_candidate"] == 5 + 4 + 5 and v.details["events_baseline"] == 95
    assert v.n == {"candidate": 80 + 80 + 85, "baseline": 800 + 800 + 795}
    assert v.estimate == a.estimate and v.interval == a.interval and v.pvalue == a.harm_pvalue
    assert v.details["threshold_s"] == 0.5
    assert "slow-request ratio (> 500ms)" in v.reason


def test_a_threshold_that_is_not_a_bound_is_nodata_naming_the_nearest_bounds() -> None:
    # (validate rejects 300ms on Envoy's own histogram; a pod histogram's layout is unknown)
    spec = _spec({**SLOW, "threshold": "300ms", "source": "ttft"})
    state = start(spec, 0.0)
    counts = tuple([0] * 7 + [100, 20, 5] + [0] * 10)
    state, j = judge(state, Look(60.0, _window(60, "c", ENVOY, counts, 10, "ttft"),
                                 _window(60, "b", ENVOY, counts, 90, "ttft")))
    v = j.metrics[0]
    assert v.verdict is Verdict.NODATA and j.decision is Decision.HOLD
    assert v.reason == threshold_problem(ENVOY, 0.3, "ttft")
    assert "threshold 300ms is not a bucket bound" in v.reason
    assert "nearest bounds: 250ms and 500ms" in v.reason


def test_versions_may_have_different_layouts_when_both_have_the_bound() -> None:
    spec = _spec(SLOW)
    state = start(spec, 0.0)
    c = _window(60, "c", (0.5, math.inf), (90, 10), 10)
    b = _window(60, "b", (0.25, 0.5, 2.0, math.inf), (700, 200, 90, 10), 90)
    state, j = judge(state, Look(60.0, c, b))
    assert j.metrics[0].details["events_candidate"] == 10
    assert j.metrics[0].details["events_baseline"] == 100


def _coarsen(fine: tuple[float, ...], keep: list[bool], threshold: float) -> tuple[float, ...]:
    finite = [b for b, k in zip(fine[:-1], keep, strict=False) if k or b == threshold]
    return (*finite, math.inf)


def _regroup(fine: tuple[float, ...], counts: list[int], coarse: tuple[float, ...]) -> tuple[
        int, ...]:
    out = [0] * len(coarse)
    for b, c in zip(fine, counts, strict=True):
        out[int(np.searchsorted(np.asarray(coarse), b, side="left"))] += c
    return tuple(out)


FINE = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 2.0, math.inf)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 60), min_size=10, max_size=10),
                          st.lists(st.integers(0, 400), min_size=10, max_size=10)),
                min_size=1, max_size=6),
       st.lists(st.booleans(), min_size=9, max_size=9),
       st.lists(st.booleans(), min_size=9, max_size=9))
def test_slow_rate_verdicts_do_not_depend_on_the_other_bounds(
        looks: list[tuple[list[int], list[int]]], keep_a: list[bool], keep_b: list[bool]) -> None:
    layouts = [_coarsen(FINE, keep_a, 0.5), _coarsen(FINE, keep_b, 0.5)]
    results: list[list[Any]] = []
    for layout in layouts:
        state = start(_spec(SLOW), 0.0)
        seen = []
        for i, (c, b) in enumerate(looks, start=1):
            t = 60.0 * i
            state, j = judge(state, Look(
                t, _window(t, "c", layout, _regroup(FINE, c, layout), 10),
                _window(t, "b", layout, _regroup(FINE, b, layout), 90)))
            v = j.metrics[0]
            seen.append((j.decision, v.verdict, v.estimate, v.interval, v.pvalue, v.reason))
        results.append(seen)
    assert repr(results[0]) == repr(results[1])  # repr: NaN estimates compare equal


# --- coarse buckets -------------------------------------------------------------------


def _lognormal_counts(bounds: tuple[float, ...], n: int, scale: float = 1.0) -> tuple[int, ...]:
    from scipy import stats

    cdf = stats.lognorm.cdf(np.asarray(bounds[:-1]), s=0.6, scale=0.15 * scale)
    probs = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    return tuple(int(np.rint(n * p)) for p in probs)


def test_diagnosis_fires_on_envoy_default_buckets_for_a_ten_percent_margin() -> None:
    res = quantile_resolution(ENVOY, _lognormal_counts(ENVOY, 10_000), 0.95, 0.1, 0.0, 0.0)
    assert res is not None and not res.pass_possible
    assert (res.lower, res.upper) == (0.25, 0.5) and res.ratio == 2.0
    assert res.harm_floor == 0.5
    assert unresolvable_buckets(ENVOY, 0.1, 0.0, above=0.01)


def test_diagnosis_is_silent_on_ten_percent_spaced_buckets() -> None:
    res = quantile_resolution(TEN_PERCENT, _lognormal_counts(TEN_PERCENT, 10_000), 0.95, 0.1,
                              0.0, 0.0)
    assert res is not None and res.pass_possible
    assert unresolvable_buckets(TEN_PERCENT, 0.1, 0.0) == []


def _p95_spec(bounds_name: str) -> ExperimentSpec:
    return _spec({"name": f"p95-{bounds_name}", "kind": "latency", "quantile": 0.95,
                  "harmMargin": 0.0, "nonInferiorityMargin": 0.1, "minSamples": 300})


def _run_p95(bounds: tuple[float, ...], looks: int = 3) -> Any:
    state = start(_p95_spec("x"), 0.0)
    j = None
    for i in range(1, looks + 1):
        t = 60.0 * i
        state, j = judge(state, Look(t, _window(t, "c", bounds, _lognormal_counts(bounds, 500),
                                                10),
                                     _window(t, "b", bounds, _lognormal_counts(bounds, 4500),
                                             90)))
    assert j is not None
    return j.metrics[0]


def test_the_verdict_says_when_the_buckets_are_too_coarse_and_points_to_slow_rate() -> None:
    v = _run_p95(ENVOY)
    assert v.verdict is Verdict.INCONCLUSIVE
    assert v.details["coarse_buckets"] == 1.0
    assert (v.details["bucket_lower_s"], v.details["bucket_upper_s"]) == (0.25, 0.5)
    assert "buckets too coarse" in v.reason and "(250ms, 500ms], 2x wide" in v.reason
    assert "slow_rate" in v.reason and "threshold: 500ms" in v.reason
    fine = _run_p95(TEN_PERCENT)
    assert fine.details["coarse_buckets"] == 0.0 and "too coarse" not in fine.reason


def test_prometheus_reads_the_histogram_of_a_slow_rate_and_the_means_of_a_ratio() -> None:
    spec = _spec(SLOW, {"name": "tps", "kind": "ratio", "numerator": "output_tokens",
                        "denominator": "e2e", "direction": "lowerIsWorse",
                        "harmMargin": 0.1, "nonInferiorityMargin": 0.1})
    target = Target("chat", ("b", "c"), {"b": "chat/b", "c": "chat/c"}, spec.metrics, 60.0)
    found = {(q.slot, q.name) for q in plan(target)}
    assert {("hist", "latency"), ("sum", "output_tokens"), ("sum", "e2e"),
            ("count", "e2e")} <= found
    ratio_only = _spec({"name": "tps", "kind": "ratio", "harmMargin": 0.1,
                        "nonInferiorityMargin": 0.1})
    with pytest.raises(ProviderError, match="no built-in ratio 'tps'"):
        plan(Target("chat", ("b", "c"), {"b": "chat/b", "c": "chat/c"}, ratio_only.metrics,
                    60.0))

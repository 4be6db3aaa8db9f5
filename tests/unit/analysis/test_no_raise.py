"""The judge never raises on well-formed counts, however strong the evidence.

A crash on the decision path is worst exactly when the evidence of harm is
strongest (a rollback would be lost), so these cover extreme counts too.
"""

import functools
import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.judge import Decision, Look, judge, start
from analysis.latency import _order_pvalue, howard_ramdas_band
from analysis.samples import Histogram, RatioSums, SumCount, Window
from analysis.spec import ExperimentSpec
from controlplane.config.experiment import experiment_from_mapping

# Envoy's default upstream_rq_time bounds, in seconds.
ENVOY_BOUNDS = (0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, math.inf)


@functools.cache
def _spec(quantile: float = 0.95, harm: float = 0.2) -> ExperimentSpec:
    return _parse({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Experiment", "metadata": {"name": "x"},
        "spec": {
            "baseline": "b", "candidate": "c",
            "steps": [{"weight": 5, "soak": "10m"}, {"weight": 50, "soak": "10m"}],
            "metrics": [
                {"name": "errors", "kind": "error_rate", "harmMargin": 0.0,
                 "nonInferiorityMargin": 0.5, "minSamples": 300},
                {"name": "p", "kind": "latency", "quantile": quantile, "harmMargin": harm,
                 "nonInferiorityMargin": 0.25, "minSamples": 300},
                {"name": "tokens", "kind": "mean", "harmMargin": 0.1,
                 "nonInferiorityMargin": 0.1},
                {"name": "slow", "kind": "slow_rate", "threshold": "500ms", "harmMargin": harm,
                 "nonInferiorityMargin": 0.5, "minEffect": 0.001, "minSamples": 300},
                {"name": "slow-off-bound", "kind": "slow_rate", "threshold": "300ms",
                 "source": "ttft", "harmMargin": 0.0, "nonInferiorityMargin": 0.5},
                {"name": "tps", "kind": "ratio", "harmMargin": min(harm, 0.5),
                 "nonInferiorityMargin": 0.1, "direction": "lowerIsWorse"},
                {"name": "tps-means", "kind": "ratio", "numerator": "tokens",
                 "denominator": "seconds", "harmMargin": 0.0, "nonInferiorityMargin": 0.0,
                 "minEffect": 1.0},
            ],
        },
    })


def _counts(rng: np.random.Generator, n: int, scale: float) -> tuple[int, ...]:
    lat = np.exp(np.log(0.15) + 0.6 * rng.standard_normal(n)) * scale
    finite = np.asarray(ENVOY_BOUNDS[:-1])
    idx = np.searchsorted(finite, lat, side="left")
    return tuple(int(c) for c in np.bincount(idx, minlength=len(ENVOY_BOUNDS)))


def test_strong_latency_harm_on_envoy_default_buckets_does_not_crash() -> None:
    # The reported case: p95 harm margin 0.2, 100 req/s, candidate 1.25x slower.
    # Around look 43 the order test's bisection used to underflow exp(-log 1/a)
    # to 0 and divide by it.
    rng = np.random.default_rng(1)
    spec = _spec()
    state = start(spec, 0.0)
    for look in range(1, 61):
        n = int(rng.poisson(6000))
        nc = int(rng.binomial(n, 0.3))
        t = 60.0 * look
        c = Window(t, "c", nc, 0, histograms={"latency": Histogram(
            ENVOY_BOUNDS, _counts(rng, nc, 1.25))}, weight=30)
        b = Window(t, "b", n - nc, 0, histograms={"latency": Histogram(
            ENVOY_BOUNDS, _counts(rng, n - nc, 1.0))}, weight=70)
        state, j = judge(state, Look(t, c, b))
        assert j.decision in Decision


def test_order_pvalue_is_finite_for_overwhelming_evidence() -> None:
    assert _order_pvalue(0.9, 1e9, 1e9) == 0.0
    assert _order_pvalue(1e-6, 10, 10) == 1.0
    p = _order_pvalue(0.2, 5000, 5000)
    assert 0.0 < p < 1.0
    # the level found is where the two bands just reach the gap
    assert 2 * howard_ramdas_band(5000, p / 2) == __import__("pytest").approx(0.2, rel=1e-6)


_count = st.integers(min_value=0, max_value=10**15)
_hist = st.lists(_count, min_size=len(ENVOY_BOUNDS), max_size=len(ENVOY_BOUNDS))
_sum = st.floats(0, 1e300)
_ratio = st.tuples(_sum, _sum, _count, st.none() | st.tuples(_sum, _sum, _sum))
_side = st.tuples(_count, _count, _hist, _sum, _count, _ratio)
_look = st.one_of(st.none(), st.tuples(_side, _side))


@settings(max_examples=300, deadline=None)
@given(st.lists(_look, min_size=1, max_size=12), st.sampled_from([0.5, 0.9, 0.95, 0.99]),
       st.sampled_from([0.0, 0.05, 0.2, 1.0]))
def test_no_finite_non_negative_counts_make_a_verdict_raise(looks, quantile, harm) -> None:
    spec = _spec(quantile, harm)
    state = start(spec, 0.0)
    for i, look in enumerate(looks, start=1):
        t = 60.0 * i
        if look is None:
            state, j = judge(state, Look(t, None, None))
            continue
        windows = []
        for version, (requests, errors, hist, total, count, ratio) in zip("cb", look,
                                                                           strict=True):
            errors = min(errors, requests)
            h = Histogram(ENVOY_BOUNDS, tuple(hist))
            num, den, n, moments = ratio
            windows.append(Window(
                t, version, requests, errors,
                histograms={"latency": h, "ttft": h},
                means={"tokens": SumCount(total, count), "seconds": SumCount(den, count)},
                ratios={"tps": RatioSums(num, den, n, *(moments or (None, None, None)))}))
        state, j = judge(state, Look(t, windows[0], windows[1]))
        assert j.decision in Decision
        for v in j.metrics:
            assert not math.isnan(v.pvalue) and 0.0 <= v.pvalue <= 1.0


def _parse(doc: dict[str, Any]) -> ExperimentSpec:
    return experiment_from_mapping(doc).analysis

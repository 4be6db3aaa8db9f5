import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.latency import (
    LatencyState,
    howard_ramdas_band,
    interpolated_quantile,
    quantile_evidence,
)
from analysis.samples import BucketLayoutMismatch, Histogram

BOUNDS = tuple([2 ** (k / 8) / 1000 for k in range(32, 97)] + [math.inf])


def _probs(scale: float) -> np.ndarray:
    from scipy import stats

    cdf = stats.lognorm.cdf(np.asarray(BOUNDS[:-1]), s=0.6, scale=0.15 * scale)
    p = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    return p / p.sum()


def _run(rng: np.random.Generator, scale: float, looks: int = 30, nc: int = 150, nb: int = 450,
         margin: float = 0.0) -> LatencyState:
    s = LatencyState(0.95, margin, 0.0)
    pc, pb = _probs(scale), _probs(1.0)
    for _ in range(looks):
        hc = Histogram(BOUNDS, tuple(int(x) for x in rng.multinomial(nc, pc)))
        hb = Histogram(BOUNDS, tuple(int(x) for x in rng.multinomial(nb, pb)))
        s = s.update(hc, hb, nc, nb)
    return s


def test_quantile_evidence_sides() -> None:
    cum = np.array([10.0, 50.0, 94.0, 99.0, 100.0])
    below, above = quantile_evidence(cum, 100.0, 0.95)
    # far below the 95th percentile: evidence that the bound is below it
    assert below[0] > 5 and above[0] == 0.0
    assert below[-1] == 0.0 and above[-1] >= 0.0
    assert np.all(below >= 0) and np.all(above >= 0)


def test_interpolated_quantile_hand_computed() -> None:
    bounds = np.array([1.0, 2.0, math.inf])
    cum = np.array([50.0, 100.0, 100.0])
    assert interpolated_quantile(bounds, cum, 0.75) == pytest.approx(1.5)
    assert interpolated_quantile(bounds, cum, 0.25) == pytest.approx(0.5)


def test_a_quarter_slower_canary_is_detected_and_a_same_one_is_not() -> None:
    rng = np.random.default_rng(11)
    slow = _run(rng, 1.25)
    assert slow.harm_p < 0.01
    a = slow.assess(0.05, 0.1)
    assert a.estimate == pytest.approx(1.25, rel=0.1)
    assert a.interval[0] > 1.0 and not a.non_inferior
    same = _run(rng, 1.0)
    assert same.harm_p > 0.05
    s = same.assess(0.05, 0.35)  # bucket resolution (9 %) sets how tight this can be
    assert s.interval[0] <= 1.0 <= s.interval[1]
    assert s.non_inferior


def test_margin_protects_small_shifts() -> None:
    rng = np.random.default_rng(2)
    assert _run(rng, 1.05, margin=0.5).harm_p == 1.0


def test_aa_false_alarms_rare_by_simulation() -> None:
    rng = np.random.default_rng(4)
    alarms = sum(_run(rng, 1.0, looks=20).harm_p <= 0.05 for _ in range(60))
    assert alarms <= 3


def test_layout_differs_between_versions_is_an_error() -> None:
    s = LatencyState(0.95, 0.0, 0.0)
    with pytest.raises(BucketLayoutMismatch):
        s.update(Histogram((0.1, math.inf), (1, 1)), Histogram((0.2, math.inf), (1, 1)), 2, 2)
    s = s.update(Histogram((0.1, math.inf), (1, 1)), Histogram((0.1, math.inf), (1, 1)), 2, 2)
    with pytest.raises(BucketLayoutMismatch, match="changed"):
        s.update(Histogram((0.3, math.inf), (1, 1)), Histogram((0.3, math.inf), (1, 1)), 2, 2)


def test_equality_evalue_sees_a_distribution_change_in_both_directions() -> None:
    rng = np.random.default_rng(8)
    assert _run(rng, 1.3).assess(0.05, 0.1).equality_pvalue < 0.01
    assert _run(rng, 0.7).assess(0.05, 0.1).equality_pvalue < 0.01


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 40), min_size=4, max_size=4),
                          st.lists(st.integers(0, 40), min_size=4, max_size=4)),
                min_size=1, max_size=12))
def test_latency_pvalues_never_increase_and_evalues_non_negative(ws) -> None:
    bounds = (0.1, 0.2, 0.4, math.inf)
    s = LatencyState(0.9, 0.0, 0.0)
    last_h, last_o = 1.0, 1.0
    for c, b in ws:
        s = s.update(Histogram(bounds, tuple(c)), Histogram(bounds, tuple(b)), sum(c), sum(b))
        a = s.assess(0.05, 0.1)
        assert a.harm_pvalue <= last_h and a.order_pvalue <= last_o
        assert a.equality_evalue >= 0.0 and 0.0 <= a.equality_pvalue <= 1.0
        last_h, last_o = a.harm_pvalue, a.order_pvalue


def test_howard_ramdas_band_covers_uniformly_over_time_by_simulation() -> None:
    # Time-uniform DKW band (Howard & Ramdas 2022, Thm 2): the empirical CDF
    # of uniforms should stay within the band at every checkpoint in >= 95 %
    # of runs (in practice far more, the band is conservative).
    rng = np.random.default_rng(0)
    grid = np.linspace(0.0, 1.0, 201)
    checkpoints = [10, 20, 50, 100, 200, 500, 1000, 2000]
    failures = 0
    for _ in range(200):
        x = rng.random(2000)
        for t in checkpoints:
            ecdf = np.searchsorted(np.sort(x[:t]), grid, side="right") / t
            if np.max(np.abs(ecdf - grid)) > howard_ramdas_band(t, 0.05):
                failures += 1
                break
    assert failures <= 10
    assert howard_ramdas_band(1000, 0.05) == pytest.approx(
        0.85 * math.sqrt((math.log(math.log(math.e * 1000)) + 0.8 * math.log(1612 / 0.05)) / 1000)
    )


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 40), min_size=4, max_size=4),
                          st.lists(st.integers(0, 40), min_size=4, max_size=4)),
                min_size=1, max_size=10))
def test_swapping_labels_mirrors_latency_evidence(ws) -> None:
    bounds = (0.1, 0.2, 0.4, math.inf)
    a, b = LatencyState(0.9, 0.0, 0.0), LatencyState(0.9, 0.0, 0.0)
    for c, base in ws:
        hc, hb = Histogram(bounds, tuple(c)), Histogram(bounds, tuple(base))
        a, b = a.update(hc, hb, sum(c), sum(base)), b.update(hb, hc, sum(base), sum(c))
    ea, eb = a.assess(0.05, 0.1), b.assess(0.05, 0.1)
    assert ea.equality_evalue == pytest.approx(eb.equality_evalue, rel=1e-9)
    assert (ea.q_candidate, ea.q_baseline) == (eb.q_baseline, eb.q_candidate) or math.isnan(
        ea.q_candidate + ea.q_baseline)
    lo, hi = ea.interval
    lo2, hi2 = eb.interval
    assert lo2 == pytest.approx(0.0 if math.isinf(hi) else 1 / hi)
    assert hi2 == (math.inf if lo == 0 else pytest.approx(1 / lo))

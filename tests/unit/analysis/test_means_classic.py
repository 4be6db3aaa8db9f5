import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from analysis.classic import (
    KayentaClass,
    hodges_lehmann,
    kayenta_classify,
    mann_whitney,
    two_proportion_z,
    welch_z,
)
from analysis.means import ArmMoments, MeanState
from analysis.samples import SumCount


def _windows(rng: np.random.Generator, mean_c: float, mean_b: float, looks: int = 40):
    for _ in range(looks):
        c = rng.normal(mean_c, 20.0, 100)
        b = rng.normal(mean_b, 20.0, 300)
        yield (SumCount(float(c.sum()), c.size, float((c**2).sum())),
               SumCount(float(b.sum()), b.size, float((b**2).sum())))


def test_arm_variance_from_sum_of_squares_and_from_batch_means() -> None:
    x = np.array([1.0, 2.0, 4.0, 7.0])
    arm = ArmMoments().add(SumCount(float(x.sum()), 4, float((x**2).sum())))
    assert arm.mean == pytest.approx(3.5)
    assert arm.variance == pytest.approx(np.var(x, ddof=1))
    batches = ArmMoments()
    for total in (10.0, 14.0, 12.0):
        batches = batches.add(SumCount(total, 2, None))
    # window means 5, 7, 6 with n=2 each: sum n (m - 6)^2 / (W - 1) = 2 * 2 / 2
    assert batches.variance == pytest.approx(2.0)


def test_mean_harm_detected_and_equal_means_pass() -> None:
    rng = np.random.default_rng(1)
    worse, same = MeanState(0.05), MeanState(0.05)
    for c, b in _windows(rng, 230.0, 200.0):
        worse = worse.update(c, b)
    for c, b in _windows(rng, 200.0, 200.0):
        same = same.update(c, b)
    assert worse.harm_p < 0.01
    assert worse.assess(0.05).interval[0] > 1.05
    a = same.assess(0.05)
    assert same.harm_p > 0.05 and a.interval[0] < 1.0 < a.interval[1] < 1.05


def test_lower_is_worse_direction() -> None:
    rng = np.random.default_rng(2)
    tput = MeanState(0.05, higher_is_worse=False)
    for c, b in _windows(rng, 170.0, 200.0):
        tput = tput.update(c, b)
    assert tput.harm_p < 0.01
    up = MeanState(0.05, higher_is_worse=False)
    for c, b in _windows(rng, 230.0, 200.0):
        up = up.update(c, b)
    assert up.harm_p == 1.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=15),
       st.lists(st.integers(0, 5), min_size=1, max_size=15))
def test_mann_whitney_matches_scipy_with_ties(x, y) -> None:
    mine = mann_whitney(x, y)
    ref = stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic")
    assert mine.u == pytest.approx(ref.statistic)
    if not math.isnan(ref.pvalue):
        assert mine.pvalue == pytest.approx(ref.pvalue)


def test_hodges_lehmann_hand_computed() -> None:
    est, lo, hi = hodges_lehmann([3.0, 5.0], [1.0, 2.0], confidence=0.5)
    # pairwise differences 1, 2, 3, 4 -> median 2.5
    assert est == pytest.approx(2.5)
    assert lo <= est <= hi
    x = np.arange(20.0) + 10.0
    y = np.arange(20.0)
    est, lo, hi = hodges_lehmann(x, y)
    assert est == pytest.approx(10.0) and lo < 10.0 < hi


def test_kayenta_passes_sparse_error_series_that_doubled() -> None:
    # 60 windows, mostly zero errors: the rank test sees no shift
    rng = np.random.default_rng(0)
    cand = rng.binomial(30, 0.02, 60) / 30
    base = rng.binomial(570, 0.001, 60) / 570
    assert kayenta_classify(cand, base) is KayentaClass.PASS
    assert kayenta_classify([], base) is KayentaClass.NODATA
    assert kayenta_classify(np.full(30, 2.0) + np.arange(30) * 0.01,
                            np.ones(30) + np.arange(30) * 0.01) is KayentaClass.HIGH


def test_two_proportion_and_welch_z_hand_computed() -> None:
    z = float(two_proportion_z(20, 1000, 10, 1000))
    p = 30 / 2000
    assert z == pytest.approx((0.02 - 0.01) / math.sqrt(p * (1 - p) * 2 / 1000))
    assert float(two_proportion_z(0, 0, 0, 10)) == 0.0
    w = float(welch_z(np.array(2.0), np.array(4.0), np.array(100.0),
                      np.array(1.0), np.array(1.0), np.array(100.0)))
    assert w == pytest.approx(1.0 / math.sqrt(0.05))

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from analysis.srm import SrmState, chi_square_srm, dirichlet_multinomial_log_bf


def test_chi_square_matches_scipy() -> None:
    obs, exp = [480, 520, 1000], [500.0, 500.0, 1000.0]
    stat, p = chi_square_srm(obs, exp)
    ref = stats.chisquare(obs, exp)
    assert stat == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue)


def test_traffic_where_none_was_configured_is_a_mismatch() -> None:
    assert chi_square_srm([5, 10], [0.0, 15.0]) == (math.inf, 0.0)


def test_dirichlet_multinomial_bayes_factor_matches_scipy_pmfs() -> None:
    counts, probs, k = [30, 70], [0.4, 0.6], 50.0
    dm = stats.dirichlet_multinomial.logpmf(counts, np.array(probs) * k, sum(counts))
    mn = stats.multinomial.logpmf(counts, sum(counts), probs)
    assert dirichlet_multinomial_log_bf(counts, probs, k) == pytest.approx(dm - mn)


def test_clean_ramp_is_not_flagged_and_a_skewed_split_is() -> None:
    rng = np.random.default_rng(1)
    clean, skewed = SrmState(), SrmState()
    for w in [5] * 12 + [10] * 12 + [20] * 12 + [30] * 12 + [50] * 12:
        n = 6000
        c = rng.binomial(n, w / 100)
        clean = clean.update((c, n - c), (w, 100 - w))
        c2 = rng.binomial(n, 0.9 * w / 100)  # a tenth of the canary's traffic goes missing
        skewed = skewed.update((c2, n - c2), (w, 100 - w))
    assert not clean.mismatch(0.001)
    assert skewed.mismatch(0.001)
    assert skewed.chi_square[1] < 0.001 and skewed.sequential_pvalue < 0.001


def test_exact_split_over_a_ramp_is_clean() -> None:
    s = SrmState()
    for w in (5, 10, 20, 50):
        for _ in range(10):
            s = s.update((w * 10, (100 - w) * 10), (w, 100 - w))
    assert not s.mismatch(0.001)
    assert s.chi_square == (0.0, 1.0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 400), st.sampled_from([5, 20, 50])),
                min_size=1, max_size=20))
def test_sequential_srm_pvalue_never_increases(ws) -> None:
    s, last = SrmState(), 1.0
    for c, b, w in ws:
        s = s.update((c, b), (w, 100 - w))
        assert 0.0 <= s.sequential_pvalue <= last + 1e-15
        last = s.sequential_pvalue

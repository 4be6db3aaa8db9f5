import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from analysis.sequential import (
    RateRatioCS,
    RateRatioHarm,
    asymptotic_halfwidth,
    asymptotic_pvalue,
    beta_binomial_log_m,
    mixture_rho,
    rate_ratio_loglik,
)

windows = st.lists(
    st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 500), st.integers(0, 500)),
    min_size=1,
    max_size=25,
)


def test_loglik_differences_match_scipy_binomial() -> None:
    rho, xc, xb = 0.2, 7, 13
    log_r = np.log(np.array([0.5, 1.0, 2.0, 3.0]))
    ll = rate_ratio_loglik(xc, xb, rho, log_r)
    theta = rho * np.exp(log_r) / (rho * np.exp(log_r) + 1 - rho)
    ref = stats.binom.logpmf(xc, xc + xb, theta)
    # equal up to the binomial coefficient, which cancels in every ratio
    assert np.allclose(ll - ll[1], ref - ref[1])


def test_harm_evalue_hand_computed_single_window() -> None:
    e = RateRatioHarm.start(1.0).update(3, 1, 50, 50)
    # theta(r) = r / (r + 1) at rho = 1/2; LR(r) = (2 theta)^3 (2 (1 - theta))
    rs = np.exp(np.linspace(0.1, 1.5, 30))
    theta = rs / (rs + 1)
    expected = float(np.mean((2 * theta) ** 3 * (2 * (1 - theta))))
    assert e.evalue == pytest.approx(expected)
    assert e.pvalue == pytest.approx(min(1.0, 1 / expected))


def test_no_traffic_or_no_events_leaves_evidence_at_one() -> None:
    e = RateRatioHarm.start(1.1).update(0, 0, 100, 100).update(0, 0, 0, 0).update(3, 0, 0, 10)
    assert e.evalue == 1.0 and e.pvalue == 1.0


@settings(max_examples=60, deadline=None)
@given(windows, st.floats(0.0, 0.5))
def test_evalues_non_negative_and_anytime_pvalues_never_increase(ws, margin) -> None:
    e = RateRatioHarm.start(1.0 + margin)
    last = 1.0
    for xc, xb, nc, nb in ws:
        e = e.update(xc, xb, nc, nb)
        assert e.evalue >= 0.0
        assert e.pvalue <= last + 1e-15
        last = e.pvalue


@settings(max_examples=40, deadline=None)
@given(windows)
def test_swapping_labels_mirrors_the_rate_ratio_interval(ws) -> None:
    a, b = RateRatioCS.start(), RateRatioCS.start()
    for xc, xb, nc, nb in ws:
        a, b = a.update(xc, xb, nc, nb), b.update(xb, xc, nb, nc)
    lo, hi = a.interval(0.05)
    lo2, hi2 = b.interval(0.05)
    assert lo2 == pytest.approx(0.0 if math.isinf(hi) else 1 / hi)
    if lo == 0.0:
        assert math.isinf(hi2)
    else:
        assert hi2 == pytest.approx(1 / lo)


def test_aa_false_rejection_rate_is_below_alpha_by_simulation() -> None:
    rng = np.random.default_rng(3)
    runs, looks, rejected = 300, 40, 0
    for _ in range(runs):
        e = RateRatioHarm.start(1.0)
        for k in range(looks):
            w = 0.05 if k < 10 else 0.3
            n = rng.poisson(600)
            nc = rng.binomial(n, w)
            e = e.update(rng.binomial(nc, 0.01), rng.binomial(n - nc, 0.01), nc, n - nc)
        rejected += e.pvalue <= 0.05
    assert rejected / runs <= 0.05


def test_confidence_sequence_covers_and_detects() -> None:
    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(100):
        cs = RateRatioCS.start()
        for _ in range(30):
            nc, nb = 200, 800
            cs = cs.update(rng.binomial(nc, 0.04), rng.binomial(nb, 0.02), nc, nb).narrowed(0.05)
        lo, hi = cs.interval(0.05)
        covered += lo <= 2.0 <= hi
        assert lo > 1.0  # a doubled rate is visible after 30 looks
    assert covered >= 95


def test_beta_binomial_mixture_matches_numeric_integral() -> None:
    q, k, s, t = 0.9, 20.0, 80, 100
    a, b = q * k, (1 - q) * k

    def integrand(p: float) -> float:
        lr = (p / q) ** s * ((1 - p) / (1 - q)) ** (t - s)
        return float(lr * stats.beta.pdf(p, a, b))

    ref, _ = integrate.quad(integrand, 0, 1, limit=200)
    assert float(beta_binomial_log_m(s, t, q, k)) == pytest.approx(math.log(ref), rel=1e-6)


def test_asymptotic_halfwidth_hand_computed_and_pvalue_inverts_it() -> None:
    rho = mixture_rho(0.05, 1000)
    la = -2 * math.log(0.05)
    assert rho == pytest.approx(math.sqrt((la + math.log(la + 1)) / 1000))
    n, sigma = 400.0, 2.0
    nr = n * rho**2
    expected = sigma * math.sqrt(2 * (nr + 1) / (n * nr) * math.log(math.sqrt(nr + 1) / 0.05))
    h = asymptotic_halfwidth(sigma, n, 0.05, rho)
    assert h == pytest.approx(expected)
    assert asymptotic_pvalue(h, sigma, n, rho) == pytest.approx(0.05)
    assert asymptotic_pvalue(-1.0, sigma, n, rho) == 1.0

"""Ratio metrics (delta method) and the mixture SPRT against the asymptotic sequence."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from analysis.judge import Decision, Look, judge, start
from analysis.means import MIN_RATIO_WINDOWS, MeanState, RatioMoments
from analysis.samples import RatioSums, SumCount, Window
from analysis.sequential import (
    asymptotic_halfwidth,
    mixture_rho,
    normal_mixture_halfwidth,
    normal_mixture_pvalue,
)
from analysis.verdicts import Verdict
from controlplane.config.experiment import experiment_from_mapping

TPS = 40.0  # true tokens per second of the baseline


def _requests(rng: np.random.Generator, n: int, tps: float) -> tuple[np.ndarray, np.ndarray]:
    """(tokens y, seconds x) per request: x ~ Gamma(4, 0.5 s), y ~ Poisson(tps_i x).

    Each request's own speed tps_i varies around tps (Gamma, CV 0.5), as prompt
    lengths and batch sizes make it vary.
    """
    x = rng.gamma(4.0, 0.5, n)
    speed = tps * rng.gamma(4.0, 0.25, n)
    return rng.poisson(speed * x).astype(float), x


def _sums(y: np.ndarray, x: np.ndarray, moments: bool) -> RatioSums:
    if not moments:
        return RatioSums(float(y.sum()), float(x.sum()), y.size)
    return RatioSums(float(y.sum()), float(x.sum()), y.size, float((y * y).sum()),
                     float((x * x).sum()), float((x * y).sum()))


def test_per_request_variance_is_the_delta_method_known_answer() -> None:
    y = np.array([10.0, 30.0, 25.0, 80.0])
    x = np.array([1.0, 2.0, 1.5, 3.0])
    arm = RatioMoments().add(_sums(y, x, True))
    r = y.sum() / x.sum()
    assert arm.mean == pytest.approx(r)
    assert arm.variance == pytest.approx(np.var(y - r * x, ddof=1) / x.mean() ** 2)


def test_window_variance_is_the_cluster_linearisation_known_answer() -> None:
    windows = [(100.0, 3.0, 4), (260.0, 6.0, 7), (90.0, 2.5, 3), (40.0, 1.0, 1),
               (150.0, 4.0, 4)] * 2
    arm = RatioMoments()
    for i, (y, x, n) in enumerate(windows, start=1):
        arm = arm.add(RatioSums(y, x, n))
        assert math.isnan(arm.variance) == (i < MIN_RATIO_WINDOWS)
    big_y, big_x = sum(w[0] for w in windows), sum(w[1] for w in windows)
    r = big_y / big_x
    var_r = sum((y - r * x) ** 2 for y, x, _ in windows) / big_x**2 * 10 / 9
    assert arm.variance == pytest.approx(38 * var_r)


@pytest.mark.parametrize("moments", [True, False])
def test_delta_method_variance_matches_simulation(moments: bool) -> None:
    rng = np.random.default_rng(3)
    estimates, predicted = [], []
    for _ in range(600):
        arm = RatioMoments()
        for _ in range(20):  # 20 windows of 25 requests
            y, x = _requests(rng, 25, TPS)
            arm = arm.add(_sums(y, x, moments))
        estimates.append(arm.mean)
        predicted.append(arm.variance / arm.n)
    assert np.mean(estimates) == pytest.approx(TPS, rel=0.01)
    assert np.mean(predicted) == pytest.approx(np.var(estimates), rel=0.15)


def _windows(rng: np.random.Generator, tps_c: float, looks: int, moments: bool,
             n_c: int = 50, n_b: int = 450) -> list[tuple[RatioSums, RatioSums]]:
    """Per-look (candidate, baseline) sums; 10 % canary by default."""
    return [(_sums(*_requests(rng, n_c, tps_c), moments), _sums(*_requests(rng, n_b, TPS),
                                                                 moments))
            for _ in range(looks)]


def _track(windows: list[tuple[RatioSums, RatioSums]], margin: float) -> list[MeanState]:
    """States after each look; margin 0 selects the asymptotic sequence."""
    st = MeanState.start(0.0, margin, 0.0, higher_is_worse=False, ratio=True)
    out = []
    for c, b in windows:
        st = st.update(c, b)
        out.append(st)
    return out


@pytest.mark.parametrize(("moments", "margin"), [(True, 0.05), (False, 0.05), (True, 0.0)])
def test_ratio_confidence_sequence_covers_at_every_look(moments: bool, margin: float) -> None:
    # Time-uniform: the true ratio of ratios (0.9) must be inside at every look,
    # in >= 1 - alpha of runs.
    rng = np.random.default_rng(11 if moments else 12)
    alpha, runs, misses = 0.1, 150, 0
    for _ in range(runs):
        states = _track(_windows(rng, 0.9 * TPS, 25, moments), margin)
        for st in states:
            lo, hi = st.assess(alpha).interval
            if not lo <= 0.9 <= hi:
                misses += 1
                break
    assert misses / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def test_asymptotic_sequence_is_the_normal_mixture_with_tau_rho_sigma() -> None:
    for sigma, n, alpha in ((2.0, 500.0, 0.05), (0.3, 1e6, 0.01), (5.0, 10.0, 0.2)):
        rho = mixture_rho(alpha, 1000.0)
        s = sigma / math.sqrt(n)
        assert normal_mixture_halfwidth(s, rho * sigma, alpha) == pytest.approx(
            asymptotic_halfwidth(sigma, n, alpha, rho), rel=1e-12)
    # 1 / Lambda at the half-width is alpha
    assert normal_mixture_pvalue(normal_mixture_halfwidth(0.02, 0.1, 0.05), 0.02, 0.1) == (
        pytest.approx(0.05))


def _first_pass(states: list[MeanState], margin: float) -> int:
    for i, st in enumerate(states, start=1):
        if st.assess(0.05).interval[0] >= 1 - margin:
            return i
    return len(states) + 1


@pytest.mark.parametrize(("margin", "n_c", "gain"), [(0.05, 50, 1.0), (0.02, 600, 0.9)])
def test_msprt_tuned_to_the_margin_shows_non_inferiority_sooner(margin: float, n_c: int,
                                                               gain: float) -> None:
    # The same simulated canaries through both sequences: the mixture SPRT's
    # scale is the margin, the asymptotic one's is tuned to N* = 1000 requests.
    # Where a decision needs many times N* (small margins, high traffic) the
    # mixture SPRT gets there clearly sooner; elsewhere it is never later.
    wins = losses = 0
    looks_m, looks_a = [], []
    for seed in range(20):
        windows = _windows(np.random.default_rng(seed), TPS, 40, True, n_c, 9 * n_c)
        m, a = _first_pass(_track(windows, margin), margin), _first_pass(_track(windows, 0.0),
                                                                         margin)
        looks_m.append(m)
        looks_a.append(a)
        wins += m < a
        losses += m > a
    assert wins >= 3 * max(losses, 1)
    assert np.mean(looks_m) <= gain * np.mean(looks_a)


def test_early_on_the_asymptotic_sequence_is_the_narrower_one() -> None:
    # ... which is why the rule is fixed by configuration, not picked per look.
    windows = _windows(np.random.default_rng(1), TPS, 3, True)
    m, a = _track(windows, 0.05)[0].assess(0.05), _track(windows, 0.0)[0].assess(0.05)
    assert m.method == "msprt" and a.method == "asymptotic"
    assert m.interval[1] - m.interval[0] > a.interval[1] - a.interval[0]


def _spec(**metric: Any) -> Any:
    doc = {"apiVersion": "sluice.dev/v1alpha1", "kind": "Experiment", "metadata": {"name": "x"},
           "spec": {"baseline": "b", "candidate": "c", "steps": [{"weight": 10, "soak": "1m"}],
                    "metrics": [{"name": "tps", "kind": "ratio", "direction": "lowerIsWorse",
                                 "harmMargin": 0.05, "nonInferiorityMargin": 0.05,
                                 "minSamples": 200, **metric}]}}
    return experiment_from_mapping(doc).analysis


def _judge(spec: Any, tps_c: float, looks: int, from_means: bool) -> list[Any]:
    rng = np.random.default_rng(5)
    state, out = start(spec, 0.0), []
    for i in range(1, looks + 1):
        t = 60.0 * i
        windows = []
        for version, n, tps, weight in (("c", 100, tps_c, 10), ("b", 900, TPS, 90)):
            y, x = _requests(rng, n, tps)
            if from_means:
                w = Window(t, version, n, 0, means={
                    "output_tokens": SumCount(float(y.sum()), n),
                    "e2e": SumCount(float(x.sum()), n)}, weight=weight)
            else:
                w = Window(t, version, n, 0, ratios={"tps": _sums(y, x, True)}, weight=weight)
            windows.append(w)
        state, j = judge(state, Look(t, windows[0], windows[1]))
        out.append(j)
    return out


def test_ratio_metric_from_two_means_and_from_ratio_sums() -> None:
    from_means = _spec(numerator="output_tokens", denominator="e2e")
    healthy = _judge(from_means, TPS, 20, True)
    assert healthy[-1].decision is Decision.PROMOTE
    v = healthy[-1].metrics[0]
    assert v.verdict is Verdict.PASS and "ratio of ratios" in v.reason
    assert "lower bound" in v.reason and ">= 0.95 (1 - nonInferiorityMargin 5%)" in v.reason
    assert v.details["msprt"] == 1.0
    slower = _judge(_spec(), 0.8 * TPS, 20, False)
    assert any(j.decision is Decision.ROLLBACK for j in slower)
    failed = next(j for j in slower if j.decision is Decision.ROLLBACK).metrics[0]
    assert failed.verdict is Verdict.FAIL and "harm beyond -5%" in failed.reason

"""ETA to a decision: checked against simulated runs of the real judge."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from analysis.eta import describe, eta, project_error_rate
from analysis.judge import Look, judge, start
from analysis.samples import Window
from analysis.spec import Direction, ExperimentSpec
from analysis.verdicts import Verdict
from controlplane.config.experiment import experiment_from_mapping

LOOK_S = 60.0


def _spec(min_effect: float = 0.0) -> ExperimentSpec:
    return experiment_from_mapping({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Experiment", "metadata": {"name": "x"},
        "spec": {"baseline": "b", "candidate": "c", "steps": [{"weight": 20, "soak": "0s"}],
                 "metrics": [{"name": "errors", "kind": "error_rate", "harmMargin": 0.25,
                              "nonInferiorityMargin": 0.25, "minEffect": min_effect}]},
    }).analysis


def _run(ratio: float, rate: float, seed: int) -> list[tuple[float | None, float]]:
    """(predicted, actual) seconds to the decision, at 25 % and 50 % of the way."""
    rng = np.random.default_rng(seed)
    spec = _spec()
    state = start(spec, 0.0)
    predicted: list[float | None] = []
    for k in range(1, 2000):
        n = int(rng.poisson(rate * LOOK_S))
        nc = int(rng.binomial(n, 0.2))
        c = Window(LOOK_S * k, "c", nc, int(rng.binomial(nc, 0.01 * ratio)), weight=20)
        b = Window(LOOK_S * k, "b", n - nc, int(rng.binomial(n - nc, 0.01)), weight=80)
        state, j = judge(state, Look(LOOK_S * k, c, b))
        track = state.tracks[0]
        s = track.state
        e = eta(j.metrics[0], Direction.HIGHER_IS_WORSE, s.n_c / (LOOK_S * k),  # type: ignore[union-attr]
                s.n_b / (LOOK_S * k), interval_s=LOOK_S, state=s, alpha=0.05)  # type: ignore[union-attr,arg-type]
        predicted.append(e.decide_in_s)
        if j.decision.value in ("PROMOTE", "ROLLBACK"):
            checks = sorted({max(1, int(k * f)) for f in (0.25, 0.5)} - {k})
            return [(predicted[c0 - 1], (k - c0) * LOOK_S) for c0 in checks]
    return []


def test_predicted_decision_times_are_within_a_factor_of_two_in_most_runs() -> None:
    hits = total = 0
    for ratio in (1.0, 1.5, 2.0):
        for seed in range(16):
            for p, actual in _run(ratio, 100.0, seed):
                total += 1
                hits += p is not None and 0.5 <= p / actual <= 2.0
    assert total >= 60
    assert hits / total > 0.5, f"{hits} of {total}"


def test_decided_metrics_and_no_traffic() -> None:
    spec = _spec()
    state = start(spec, 0.0)
    state, j = judge(state, Look(60, Window(60, "c", 0, 0, weight=20),
                                 Window(60, "b", 0, 0, weight=80)))
    e = eta(j.metrics[0], Direction.HIGHER_IS_WORSE, 0.0, 0.0)
    assert e.decide_in_s is None and "not enough traffic" in e.evidence
    assert j.metrics[0].verdict is Verdict.NODATA


def test_a_candidate_beyond_the_margin_cannot_pass_but_can_fail() -> None:
    spec = _spec()
    state = start(spec, 0.0)
    rng = np.random.default_rng(3)
    for k in range(1, 4):
        c = Window(60.0 * k, "c", 1000, int(rng.binomial(1000, 0.03)), weight=20)
        b = Window(60.0 * k, "b", 4000, int(rng.binomial(4000, 0.01)), weight=80)
        state, _ = judge(state, Look(60.0 * k, c, b))
    s: Any = state.tracks[0].state
    passes, fails = project_error_rate(s, 0.05, 0.05, 0.25, 0.0, 1000 / 60, 4000 / 60)
    assert passes is None and fails is not None and fails < 3600
    assert describe(None) == "not at the current effect and traffic"
    assert describe(45) == "~45s" and describe(600) == "~10m" and describe(7200) == "~2.0h"
    assert math.isfinite(fails)


def test_a_candidate_no_worse_so_far_is_not_projected_to_fail() -> None:
    """0 errors in 7 requests against 0 in 77 (the smoothed rates differ tenfold)."""
    state = start(_spec(), 0.0)
    state, _ = judge(state, Look(60, Window(60, "c", 7, 0, weight=10),
                                 Window(60, "b", 77, 0, weight=90)))
    s: Any = state.tracks[0].state
    _, fails = project_error_rate(s, 0.05, 0.05, 0.25, 0.0, 7 / 60, 77 / 60)
    assert fails is None
    state, _ = judge(state, Look(120, Window(120, "c", 7, 3, weight=10),
                                 Window(120, "b", 77, 0, weight=90)))
    s = state.tracks[0].state
    _, fails = project_error_rate(s, 0.05, 0.05, 0.25, 0.0, 7 / 60, 77 / 60)
    assert fails is not None  # now it is doing worse: a rollback is projected

import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.judge import TRANSITIONS, Decision, Look, Phase, judge, start
from analysis.samples import Histogram, Window
from analysis.spec import ExperimentSpec
from analysis.verdicts import Verdict
from controlplane.config.experiment import experiment_from_mapping

BOUNDS = (0.05, 0.1, 0.2, 0.4, 0.8, math.inf)


def spec(**over: Any) -> ExperimentSpec:
    s: dict[str, Any] = {
        "baseline": "b", "candidate": "c",
        "steps": [{"weight": 10, "soak": "2m"}, {"weight": 50, "soak": "2m"}],
        "metrics": [
            {"name": "errors", "kind": "error_rate", "harmMargin": 0.0,
             "nonInferiorityMargin": 0.5, "minEffect": 0.01, "minSamples": 100},
            {"name": "lat", "kind": "latency", "harmMargin": 0.0,
             "nonInferiorityMargin": 1.5, "minSamples": 100},
        ],
    }
    s.update(over)
    return _parse({"apiVersion": "sluice.dev/v1alpha1", "kind": "Experiment",
                             "metadata": {"name": "t"}, "spec": s})


def window(t: float, v: str, n: int, e: int, lat: tuple[int, ...] | None = None,
           w: float | None = None) -> Window:
    hist = {} if lat is None else {"latency": Histogram(BOUNDS, lat)}
    return Window(t, v, n, e, histograms=hist, weight=w)


def lat_counts(n: int, slow: bool = False) -> tuple[int, ...]:
    share = (0.0, 0.0, 0.1, 0.2, 0.6, 0.1) if slow else (0.2, 0.5, 0.2, 0.07, 0.03, 0.0)
    counts = [int(n * s) for s in share]
    counts[0] += n - sum(counts)
    return tuple(counts)


def run(sp: ExperimentSpec, looks: int, err_c: float, slow: bool = False, nc: int = 200,
        nb: int = 1800, weight: float = 10.0, err_b: float = 0.01, send_weight: bool = True):
    rng = np.random.default_rng(0)
    state, out = start(sp, 0.0), []
    for k in range(1, looks + 1):
        t = 60.0 * k
        wc, wb = (weight, 100 - weight) if send_weight else (None, None)
        c = window(t, "c", nc, int(rng.binomial(nc, err_c)), lat_counts(nc, slow), wc)
        b = window(t, "b", nb, int(rng.binomial(nb, err_b)), lat_counts(nb), wb)
        state, j = judge(state, Look(t, c, b))
        out.append(j)
    return out


def test_transition_table_covers_running_and_absorbs_terminals() -> None:
    for d in Decision:
        assert (Phase.RUNNING, d) in TRANSITIONS
    assert TRANSITIONS[(Phase.ROLLED_BACK, Decision.ROLLBACK)][0] is Phase.ROLLED_BACK
    assert TRANSITIONS[(Phase.PROMOTED, Decision.PROMOTE)][0] is Phase.PROMOTED


def test_tripled_errors_roll_back_and_stay_rolled_back() -> None:
    js = run(spec(), 30, 0.03)
    first = next(i for i, j in enumerate(js) if j.decision is Decision.ROLLBACK)
    assert all(j.decision is Decision.ROLLBACK for j in js[first:])
    errors = js[first].metrics[0]
    assert errors.verdict is Verdict.FAIL and errors.pvalue <= 0.025
    assert errors.estimate > 1.5 and errors.interval[0] > 1.0
    assert errors.n["candidate"] > 0 and errors.window is not None
    assert "harm" in js[first].reason


def test_slow_candidate_rolls_back_on_latency() -> None:
    js = run(spec(), 10, 0.01, slow=True)
    assert js[-1].decision is Decision.ROLLBACK
    assert js[-1].metrics[1].verdict is Verdict.FAIL


def test_healthy_canary_advances_then_promotes() -> None:
    js = run(spec(), 30, 0.01, nc=1000, nb=9000, send_weight=False)  # SRM uses step weights
    decisions = [j.decision for j in js]
    assert Decision.ROLLBACK not in decisions
    # first: holds until minSamples and soak; then advances; the data keep 10 %,
    # so at the 50 % step the split no longer matches and SRM holds
    adv = decisions.index(Decision.ADVANCE)
    assert js[adv].t >= 120
    after = js[adv + 2]
    assert after.decision is Decision.HOLD and "sample ratio mismatch" in after.reason
    promote = run(spec(steps=[{"weight": 10, "soak": "1m"}]), 30, 0.01, nc=1000, nb=9000)
    assert promote[-1].decision is Decision.PROMOTE


def test_missing_version_is_nodata_and_holds() -> None:
    sp = spec()
    state = start(sp, 0.0)
    state, j = judge(state, Look(60.0, None, window(60.0, "b", 1000, 50, lat_counts(1000))))
    assert j.decision is Decision.HOLD
    assert all(m.verdict is Verdict.NODATA for m in j.metrics)
    assert "no data" in j.reason


def test_counter_reset_window_is_excluded_and_holds() -> None:
    sp = spec()
    state = start(sp, 0.0)
    c = window(60.0, "c", 100, 1, lat_counts(100))
    b = window(60.0, "b", 900, 9, lat_counts(900))
    state, j = judge(state, Look(60.0, c, b, excluded="counter reset"))
    assert j.decision is Decision.HOLD and "excluded" in j.reason
    assert j.metrics[0].n["candidate"] == 0


def test_zero_errors_on_both_sides_pass_by_min_effect() -> None:
    js = run(spec(), 20, 0.0, nc=500, nb=4500, err_b=0.0)
    errs = js[-1].metrics[0]
    assert errs.verdict is Verdict.PASS
    assert math.isnan(errs.estimate)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 15), st.sampled_from([None, 5.0, 50.0]))
def test_zero_traffic_gives_nodata_and_never_rolls_back(looks: int, w: float | None) -> None:
    sp = spec()
    state = start(sp, 0.0)
    for k in range(1, looks + 1):
        t = 60.0 * k
        empty = (0,) * len(BOUNDS)
        state, j = judge(state, Look(t, window(t, "c", 0, 0, empty, w),
                                     window(t, "b", 0, 0, empty, None if w is None else 100 - w)))
        assert j.decision is Decision.HOLD
        assert all(m.verdict is Verdict.NODATA for m in j.metrics)


def test_srm_holds_but_never_rolls_back() -> None:
    js = run(spec(), 20, 0.01, nc=100, nb=1900, weight=10.0)  # 5 % observed vs 10 % configured
    assert all(j.decision is Decision.HOLD for j in js[3:])
    assert js[-1].srm.mismatch and "sample ratio mismatch" in js[-1].reason


def _parse(doc: dict[str, Any]) -> ExperimentSpec:
    return experiment_from_mapping(doc).analysis

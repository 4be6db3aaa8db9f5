"""The judge: one look in, one decision out, with the numbers behind it.

``start(spec, t0)`` gives a :class:`JudgeState`; ``judge(state, look)`` returns
the next state and a :class:`Judgment`. Pure: time is the look's ``t``.

Decision rules (in this order):

1. ROLLBACK when a gating metric FAILs (anytime-valid evidence of harm).
2. HOLD when the look's window was excluded (counter reset), a gating metric
   has NODATA, the split does not match the configured weights (SRM), a
   gating metric is INCONCLUSIVE, or the step's soak time is not over.
3. ADVANCE otherwise, or PROMOTE when the current step is the last.

NODATA and SRM hold; they never roll back by themselves. Step progress is an
explicit transition table (``TRANSITIONS``); ROLLED_BACK and PROMOTED absorb.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from analysis.samples import Window
from analysis.spec import ExperimentSpec
from analysis.srm import SrmState
from analysis.verdicts import (
    MetricTrack,
    MetricVerdict,
    Verdict,
    start_track,
    update_track,
    verdict_for,
)


class Decision(enum.Enum):
    ROLLBACK = "ROLLBACK"
    HOLD = "HOLD"
    ADVANCE = "ADVANCE"
    PROMOTE = "PROMOTE"


class Phase(enum.Enum):
    RUNNING = "running"
    ROLLED_BACK = "rolled_back"
    PROMOTED = "promoted"


class StepMove(enum.Enum):
    STAY = "stay"
    NEXT = "next"


# (phase, decision) -> (next phase, step move). Every legal pair is listed;
# terminal phases only ever repeat their own decision (see ``judge``).
TRANSITIONS: Mapping[tuple[Phase, Decision], tuple[Phase, StepMove]] = {
    (Phase.RUNNING, Decision.HOLD): (Phase.RUNNING, StepMove.STAY),
    (Phase.RUNNING, Decision.ADVANCE): (Phase.RUNNING, StepMove.NEXT),
    (Phase.RUNNING, Decision.PROMOTE): (Phase.PROMOTED, StepMove.STAY),
    (Phase.RUNNING, Decision.ROLLBACK): (Phase.ROLLED_BACK, StepMove.STAY),
    (Phase.ROLLED_BACK, Decision.ROLLBACK): (Phase.ROLLED_BACK, StepMove.STAY),
    (Phase.PROMOTED, Decision.PROMOTE): (Phase.PROMOTED, StepMove.STAY),
}


@dataclass(frozen=True)
class Look:
    """What arrived for one look: each version's window (None: missing)."""

    t: float
    candidate: Window | None
    baseline: Window | None
    excluded: str | None = None  # why the window is unusable (e.g. counter reset)


@dataclass(frozen=True)
class SrmReport:
    chi_square: float
    chi_square_pvalue: float
    sequential_pvalue: float
    mismatch: bool
    observed_share: float | None  # candidate share of requests so far


@dataclass(frozen=True)
class Judgment:
    t: float
    decision: Decision
    reason: str
    step: int  # index into spec.steps at the time of the look
    weight: float  # the step's candidate percent
    metrics: tuple[MetricVerdict, ...]
    srm: SrmReport


@dataclass(frozen=True, eq=False)
class JudgeState:
    spec: ExperimentSpec
    phase: Phase
    step: int
    step_started: float
    tracks: tuple[MetricTrack, ...]
    srm: SrmState
    terminal_reason: str = ""


def start(spec: ExperimentSpec, t0: float) -> JudgeState:
    return JudgeState(spec, Phase.RUNNING, 0, t0, tuple(start_track(m) for m in spec.metrics),
                      SrmState())


def _weights(spec: ExperimentSpec, step: int, cand: Window, base: Window) -> tuple[float, float]:
    """Configured (candidate, baseline) percent: from the samples, else the step."""
    wc, wb = cand.weight, base.weight
    if wc is None and wb is None:
        wc = spec.steps[step].weight
    if wc is None:
        assert wb is not None
        wc = 100.0 - wb
    if wb is None:
        wb = 100.0 - wc
    return (wc, wb)


def _srm_report(srm: SrmState, alpha: float) -> SrmReport:
    chi, chi_p = srm.chi_square
    share = None
    if srm.observed and sum(srm.observed) > 0:
        share = srm.observed[0] / sum(srm.observed)
    return SrmReport(chi, chi_p, srm.sequential_pvalue, srm.mismatch(alpha), share)


def verdicts(state: JudgeState) -> tuple[MetricVerdict, ...]:
    """Verdicts of every metric at the state's alpha, Bonferroni over gating metrics."""
    spec = state.spec
    m = max(1, len(spec.gating_metrics))
    return tuple(
        verdict_for(tr, spec.alpha, spec.alpha / m if tr.spec.gating else spec.alpha)
        for tr in state.tracks
    )


def _names(vs: list[MetricVerdict]) -> str:
    return ", ".join(v.name for v in vs)


def _decide(state: JudgeState, look: Look, vs: tuple[MetricVerdict, ...],
            srm: SrmReport) -> tuple[Decision, str]:
    spec = state.spec
    gating = [v for v in vs if v.gating]
    failed = [v for v in gating if v.verdict is Verdict.FAIL]
    if failed:
        return Decision.ROLLBACK, "; ".join(f"{v.name}: {v.reason}" for v in failed)
    if look.excluded:
        return Decision.HOLD, f"window at t={look.t:g} excluded: {look.excluded}"
    nodata = [v for v in gating if v.verdict is Verdict.NODATA]
    if nodata:
        return Decision.HOLD, f"no data: {_names(nodata)}"
    if srm.mismatch and spec.check_srm:
        share = "n/a" if srm.observed_share is None else f"{srm.observed_share:.3f}"
        return Decision.HOLD, (
            f"sample ratio mismatch (candidate share {share}; chi-square "
            f"p={srm.chi_square_pvalue:.2g}, sequential p={srm.sequential_pvalue:.2g})"
        )
    open_ = [v for v in gating if v.verdict is not Verdict.PASS]
    if open_:
        return Decision.HOLD, "; ".join(f"{v.name}: {v.reason}" for v in open_)
    step = spec.steps[state.step]
    soaked = look.t - state.step_started
    if soaked < step.soak_s:
        return Decision.HOLD, (
            f"soak {soaked:g}s of {step.soak_s:g}s at step {state.step + 1} ({step.weight:g}%)"
        )
    if state.step == len(spec.steps) - 1:
        return Decision.PROMOTE, "every gating metric non-inferior at the last step"
    return Decision.ADVANCE, (
        f"every gating metric non-inferior; advancing to {spec.steps[state.step + 1].weight:g}%"
    )


def judge(state: JudgeState, look: Look) -> tuple[JudgeState, Judgment]:
    """Fold one look into the state and decide.

    Total on well-formed windows: histograms whose layouts differ between the
    versions (comparing them would be a guess) or a slow_rate threshold that
    is not a bucket bound make that metric NODATA, with the reason.
    """
    spec = state.spec
    weight = spec.steps[state.step].weight
    tracks, srm_state = state.tracks, state.srm
    usable = look.excluded is None and state.phase is Phase.RUNNING
    if usable:
        tracks = tuple(
            update_track(tr, look.t, look.candidate, look.baseline) for tr in state.tracks
        )
        if look.candidate is not None and look.baseline is not None:
            wc, wb = _weights(spec, state.step, look.candidate, look.baseline)
            srm_state = srm_state.update(
                (look.candidate.requests, look.baseline.requests), (wc, wb)
            )
    elif look.excluded is not None:
        tracks = tuple(MetricTrack(tr.spec, tr.state, tr.first_t, tr.last_t, False)
                       for tr in tracks)
    interim = JudgeState(spec, state.phase, state.step, state.step_started, tracks, srm_state,
                         state.terminal_reason)
    vs = verdicts(interim)
    srm = _srm_report(srm_state, spec.srm_alpha)
    if state.phase is Phase.ROLLED_BACK:
        decision, reason = Decision.ROLLBACK, state.terminal_reason
    elif state.phase is Phase.PROMOTED:
        decision, reason = Decision.PROMOTE, state.terminal_reason
    else:
        decision, reason = _decide(interim, look, vs, srm)
    phase, move = TRANSITIONS[(state.phase, decision)]
    step, started = state.step, state.step_started
    if move is StepMove.NEXT:
        step, started = step + 1, look.t
    terminal = state.terminal_reason
    if phase is not Phase.RUNNING and state.phase is Phase.RUNNING:
        terminal = f"{decision.value.lower()} at t={look.t:g}: {reason}"
    new = JudgeState(spec, phase, step, started, tracks, srm_state, terminal)
    return new, Judgment(look.t, decision, reason, state.step, weight, vs, srm)

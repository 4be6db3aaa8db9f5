"""The rollout state machine: every legal transition in one table (pure).

A run moves through phases; what it does to traffic in each phase is the
strategy's plan (``plans.py``); what happens between looks is the runner's
(``runner.py``). Inputs are events with a time (wall-clock seconds) and a
reason; the output is the next state. Nothing here reads a clock or does I/O.

Rules the table encodes:

- A safety rollback (harm proven by the statistics, a guard, or an abort)
  is legal from every non-terminal phase: a pause or a promotion gate never
  blocks it.
- ``PROMOTE`` only comes from the judge at the last step (every gating metric
  passed); with ``pauseBeforePromotion`` it parks the run in ``PAUSED`` with
  the gate set, and only ``APPROVE`` (``sluice promote``) goes on.
- A step's clock starts at ``APPLIED``: when every connected proxy has ACKed
  the step's traffic. Until then the step is not judged.
- ``SUCCEEDED``, ``ROLLED_BACK`` and ``FAILED`` absorb every event.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace


class Phase(enum.Enum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    HOLDING = "Holding"
    PAUSED = "Paused"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED)

    @property
    def judging(self) -> bool:
        """Phases in which looks are taken and judged."""
        return self in (Phase.PROGRESSING, Phase.HOLDING, Phase.PAUSED)


class Event(enum.Enum):
    START = "start"
    APPLIED = "applied"  # every connected proxy ACKed the current traffic
    WAIT = "wait"  # the step goes on: soak, minimum samples, evidence still building
    HOLD = "hold"  # cannot judge: no data, a backend outage, a split that does not match
    ADVANCE = "advance"  # the judge: next step
    PROMOTE = "promote"  # the judge: every gating metric passed at the last step
    CONCLUDE = "conclude"  # an A/B test ended without promoting the candidate
    ROLLBACK = "rollback"  # harm proven, a guard tripped, or the stall budget ran out
    PAUSE = "pause"  # manual, or the stall budget ran out with onStall: pause
    RESUME = "resume"
    APPROVE = "approve"  # manual approval of a pending promotion (the gate)
    ABORT = "abort"  # manual: roll back
    DONE = "done"  # the outcome's traffic is applied everywhere
    FAIL = "fail"  # the run cannot go on (its service or versions are gone)


class Move(enum.Enum):
    STAY = "stay"
    NEXT = "next"  # next step; its clock starts at APPLIED
    GATE = "gate"  # park at the promotion gate


class Outcome(enum.Enum):
    CANDIDATE = "candidate"
    BASELINE = "baseline"


P, E = Phase, Event
_LIVE = (P.PROGRESSING, P.HOLDING, P.PAUSED)

# (phase, event) -> (next phase, step move, outcome set by this transition).
# Pairs not listed are ignored (the state does not change): e.g. HOLD while paused.
TRANSITIONS: Mapping[tuple[Phase, Event], tuple[Phase, Move, Outcome | None]] = {
    (P.PENDING, E.START): (P.PROGRESSING, Move.STAY, None),
    (P.PENDING, E.ABORT): (P.ROLLING_BACK, Move.STAY, Outcome.BASELINE),
    (P.PENDING, E.FAIL): (P.FAILED, Move.STAY, None),
    **{(p, E.APPLIED): (p, Move.STAY, None) for p in _LIVE},
    (P.PROGRESSING, E.WAIT): (P.PROGRESSING, Move.STAY, None),
    (P.HOLDING, E.WAIT): (P.PROGRESSING, Move.STAY, None),
    (P.PROGRESSING, E.HOLD): (P.HOLDING, Move.STAY, None),
    (P.HOLDING, E.HOLD): (P.HOLDING, Move.STAY, None),
    (P.PROGRESSING, E.ADVANCE): (P.PROGRESSING, Move.NEXT, None),
    (P.HOLDING, E.ADVANCE): (P.PROGRESSING, Move.NEXT, None),
    (P.PROGRESSING, E.PROMOTE): (P.PROMOTING, Move.STAY, Outcome.CANDIDATE),
    (P.HOLDING, E.PROMOTE): (P.PROMOTING, Move.STAY, Outcome.CANDIDATE),
    (P.PROGRESSING, E.CONCLUDE): (P.PROMOTING, Move.STAY, Outcome.BASELINE),
    (P.HOLDING, E.CONCLUDE): (P.PROMOTING, Move.STAY, Outcome.BASELINE),
    **{(p, E.ROLLBACK): (P.ROLLING_BACK, Move.STAY, Outcome.BASELINE)
       for p in (*_LIVE, P.PROMOTING)},
    **{(p, E.ABORT): (P.ROLLING_BACK, Move.STAY, Outcome.BASELINE)
       for p in (*_LIVE, P.PROMOTING)},
    (P.PROGRESSING, E.PAUSE): (P.PAUSED, Move.STAY, None),
    (P.HOLDING, E.PAUSE): (P.PAUSED, Move.STAY, None),
    (P.PAUSED, E.RESUME): (P.PROGRESSING, Move.STAY, None),
    (P.PAUSED, E.APPROVE): (P.PROMOTING, Move.STAY, Outcome.CANDIDATE),
    **{(p, E.FAIL): (P.FAILED, Move.STAY, None) for p in (*_LIVE, P.PROMOTING, P.ROLLING_BACK)},
    (P.PROMOTING, E.DONE): (P.SUCCEEDED, Move.STAY, None),
    (P.ROLLING_BACK, E.DONE): (P.ROLLED_BACK, Move.STAY, None),
}

# With pauseBeforePromotion, the judge's PROMOTE parks the run instead.
GATED = {
    (P.PROGRESSING, E.PROMOTE): (P.PAUSED, Move.GATE, None),
    (P.HOLDING, E.PROMOTE): (P.PAUSED, Move.GATE, None),
}


@dataclass(frozen=True)
class RolloutState:
    run: str  # identifies one run of an experiment
    phase: Phase = Phase.PENDING
    step: int = 0
    step_started: float | None = None  # None until every proxy ACKed the step's traffic
    reason: str = ""
    started_at: float = 0.0
    updated_at: float = 0.0
    gate: bool = False  # waiting at the promotion gate (only APPROVE goes on)
    outcome: Outcome | None = None  # which version the run ends on
    stalled_since: float | None = None  # holding for lack of data since
    # Strategy progress within a step: synchronized ("", "blackout", "switched"),
    # rolling ("", "draining", "updating", "judging").
    stage: str = ""
    pods: tuple[tuple[str, str], ...] = ()  # rolling: "address:port" -> PodState value
    ramp: float | None = None  # promoting or rolling back in steps: the candidate's share now

    @property
    def applied(self) -> bool:
        return self.step_started is not None

    def to_json(self) -> dict[str, object]:
        return {
            "run": self.run, "phase": self.phase.value, "step": self.step,
            "stepStarted": self.step_started, "reason": self.reason,
            "startedAt": self.started_at, "updatedAt": self.updated_at, "gate": self.gate,
            "outcome": self.outcome.value if self.outcome else None,
            "stalledSince": self.stalled_since, "stage": self.stage,
            "pods": dict(self.pods), "ramp": self.ramp,
        }

    @staticmethod
    def from_json(d: Mapping[str, object]) -> RolloutState:
        def num(key: str) -> float | None:
            v = d.get(key)
            return float(v) if isinstance(v, int | float) else None

        outcome = d.get("outcome")
        step = d.get("step", 0)
        return RolloutState(
            run=str(d["run"]),
            phase=Phase(str(d["phase"])),
            step=step if isinstance(step, int) else 0,
            step_started=num("stepStarted"),
            reason=str(d.get("reason", "")),
            started_at=num("startedAt") or 0.0,
            updated_at=num("updatedAt") or 0.0,
            gate=bool(d.get("gate", False)),
            outcome=Outcome(str(outcome)) if outcome else None,
            stalled_since=num("stalledSince"),
            stage=str(d.get("stage", "")),
            pods=tuple((str(k), str(v)) for k, v in dict(d.get("pods") or {}).items()),  # type: ignore[call-overload]
            ramp=num("ramp"),
        )


def transition(state: RolloutState, event: Event, t: float, reason: str = "", *,
               gated: bool = False, last_step: int | None = None) -> RolloutState:
    """The next state; the same state when the pair is not in the table.

    ``gated``: the experiment has ``pauseBeforePromotion``. ``last_step``: the
    index of the last step, so that ADVANCE never runs past it.
    """
    key = (state.phase, event)
    found = (GATED.get(key) if gated else None) or TRANSITIONS.get(key)
    if found is None or (state.gate and event is E.RESUME):
        return state  # at the gate only APPROVE (or a rollback) moves on
    if event is E.APPROVE and not state.gate:
        return state  # approval exists only for a promotion the judge already allowed
    phase, move, outcome = found
    step, started = state.step, state.step_started
    if move is Move.NEXT:
        if last_step is not None and step >= last_step:
            return state
        step, started = step + 1, None
    stage = "" if move is Move.NEXT or ending_phase(phase) else state.stage
    if event is E.APPLIED:
        if started is not None:
            return state
        started = t
    ending = ending_phase(phase)
    return replace(
        state,
        phase=phase,
        step=step,
        step_started=started,
        reason=reason or (state.reason if event is E.APPLIED else event.value),
        started_at=t if event is E.START else state.started_at,
        updated_at=t,
        gate=move is Move.GATE or (state.gate and phase is P.PAUSED),
        outcome=outcome or state.outcome,
        stalled_since=None if ending or move is Move.NEXT else state.stalled_since,
        stage=stage,
    )


def ending_phase(phase: Phase) -> bool:
    return phase.terminal or phase in (P.PROMOTING, P.ROLLING_BACK)


def stalled(state: RolloutState, t: float, starving: bool) -> RolloutState:
    """Tracks since when the run has held for lack of data (or of proxy ACKs)."""
    if not starving:
        return state if state.stalled_since is None else replace(state, stalled_since=None)
    if state.stalled_since is not None:
        return state
    return replace(state, stalled_since=t)

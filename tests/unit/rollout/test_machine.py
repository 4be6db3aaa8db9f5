"""The rollout state machine: its table, its gate, and properties over random histories."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.rollout.machine import (
    GATED,
    TRANSITIONS,
    Event,
    Outcome,
    Phase,
    RolloutState,
    transition,
)

E, P = Event, Phase


def at(phase: Phase, **kw: object) -> RolloutState:
    return RolloutState(run="r", phase=phase, **kw)  # type: ignore[arg-type]


def test_every_listed_pair_goes_where_the_table_says() -> None:
    for (phase, event), (target, _, outcome) in TRANSITIONS.items():
        after = transition(at(phase, step_started=1.0, gate=event is E.APPROVE), event, 5.0,
                           "why")
        assert after.phase is target, (phase, event)
        if outcome is not None:
            assert after.outcome is outcome


def test_unlisted_pairs_change_nothing_and_terminals_absorb() -> None:
    for phase in Phase:
        for event in Event:
            if (phase, event) in TRANSITIONS:
                continue
            state = at(phase, step_started=1.0)
            assert transition(state, event, 5.0, "x") is state, (phase, event)
    paused = at(P.PAUSED)
    assert transition(paused, E.APPROVE, 5.0) is paused  # no gate: nothing to approve
    for phase in (P.SUCCEEDED, P.ROLLED_BACK, P.FAILED):
        assert not any(p is phase for p, _ in TRANSITIONS)


def test_a_safety_rollback_is_legal_from_every_live_phase_even_paused_or_gated() -> None:
    for phase in (P.PROGRESSING, P.HOLDING, P.PAUSED, P.PROMOTING):
        after = transition(at(phase, gate=phase is P.PAUSED), E.ROLLBACK, 1.0, "harm")
        assert after.phase is P.ROLLING_BACK and after.outcome is Outcome.BASELINE


def test_the_step_clock_starts_when_proxies_acked_not_at_the_advance() -> None:
    s = transition(at(P.PROGRESSING, step_started=10.0), E.ADVANCE, 60.0, "ok", last_step=3)
    assert (s.step, s.step_started) == (1, None)
    s = transition(s, E.APPLIED, 61.5)
    assert s.step_started == 61.5
    assert transition(s, E.APPLIED, 70.0) is s  # only once per step


def test_advance_never_runs_past_the_last_step() -> None:
    s = at(P.PROGRESSING, step=2, step_started=1.0)
    assert transition(s, E.ADVANCE, 2.0, last_step=2) is s


def test_the_promotion_gate_waits_for_approval_only() -> None:
    s = transition(at(P.HOLDING, step_started=1.0), E.PROMOTE, 5.0, "all passed", gated=True)
    assert (s.phase, s.gate) == (P.PAUSED, True)
    for event in (E.RESUME, E.ADVANCE, E.PROMOTE, E.HOLD, E.WAIT):
        assert transition(s, event, 6.0, gated=True) is s
    approved = transition(s, E.APPROVE, 7.0, "by alice")
    assert (approved.phase, approved.outcome, approved.gate) == (
        P.PROMOTING, Outcome.CANDIDATE, False)
    assert set(GATED) == {(P.PROGRESSING, E.PROMOTE), (P.HOLDING, E.PROMOTE)}


def test_approve_outside_the_gate_only_from_paused() -> None:
    assert transition(at(P.PROGRESSING), E.APPROVE, 1.0).phase is P.PROGRESSING


def test_state_round_trips_through_json() -> None:
    s = RolloutState("r", P.PAUSED, 2, 10.5, "why", 1.0, 11.0, True, Outcome.CANDIDATE, 9.0,
                     "draining", (("10.0.0.1:80", "draining"),))
    assert RolloutState.from_json(s.to_json()) == s


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(Event)), max_size=40), st.booleans())
def test_rolled_back_and_succeeded_runs_never_move_again(events, gated) -> None:
    state = at(P.PENDING)
    ended: RolloutState | None = None
    for i, event in enumerate(events):
        state = transition(state, event, float(i), gated=gated, last_step=3)
        if ended is not None:
            assert state == ended
        elif state.phase.terminal:
            ended = state
        if state.phase in (P.ROLLING_BACK, P.ROLLED_BACK):
            assert state.outcome is Outcome.BASELINE


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from([e for e in Event if e is not E.PROMOTE]), max_size=40),
       st.booleans())
def test_without_the_judges_promote_the_candidate_never_wins(events, gated) -> None:
    state = at(P.PENDING)
    for i, event in enumerate(events):
        state = transition(state, event, float(i), gated=gated, last_step=3)
        assert state.outcome is not Outcome.CANDIDATE

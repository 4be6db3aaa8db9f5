"""Promotions and rollbacks that respect the receiving version's capacity (the I/O side).

When a run enters Promoting or RollingBack, ``begin`` decides whether the
whole shift fits the receiver's capacity (``capacity.fits``); if not, the run
keeps a ramp (the candidate's share) and ``step`` moves it by at most
``maxStep`` points per interval — re-checking capacity each time — while the
analysis keeps looking (a promotion ramp can still turn into a rollback).
Rolling updates move pods, not weights, and never ramp.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from controlplane.experiment import ShiftSettings, Strategy
from controlplane.rollout.capacity import Shift, fits
from controlplane.rollout.machine import Outcome, Phase, RolloutState

if TYPE_CHECKING:
    from controlplane.rollout.runner import Runner


def _settings(runner: Runner, state: RolloutState) -> ShiftSettings:
    e = runner.experiment
    return e.rollback if state.phase is Phase.ROLLING_BACK else e.promotion


def _target(state: RolloutState) -> float:
    return 100.0 if state.outcome is Outcome.CANDIDATE and state.phase is Phase.PROMOTING \
        else 0.0


def _shares(runner: Runner) -> dict[str, float]:
    override = runner.deps.store.override(runner.service_name)
    return override.weight_map if override is not None else {}


def begin(runner: Runner, before: RolloutState, after: RolloutState,
          from_guard: bool) -> RolloutState:
    """The state to enter Promoting / RollingBack with: a ramp when the receiver lacks
    the capacity to take the whole shift at once."""
    if after.phase not in (Phase.PROMOTING, Phase.ROLLING_BACK) or after.phase is before.phase:
        return after
    if runner.experiment.strategy is Strategy.ROLLING:
        return replace(after, ramp=None)
    settings = _settings(runner, after)
    if after.phase is Phase.ROLLING_BACK and from_guard and settings.immediate_on_guard:
        return replace(after, ramp=None)
    svc = runner.service()
    shares = _shares(runner)
    candidate = shares.get(runner.experiment.candidate, 0.0)
    target = _target(after)
    receiver = runner.experiment.candidate if target == 100.0 else runner.experiment.baseline
    if svc is None or fits(svc, shares, receiver, 100.0, settings.headroom):
        return replace(after, ramp=None)
    step = settings.max_step if target == 100.0 else -settings.max_step
    ramp = max(0.0, min(100.0, candidate + step))
    runner.report["ramp"] = {"receiver": receiver, "from": candidate, "maxStep":
                             settings.max_step, "intervalS": settings.interval_ms / 1000,
                             "why": f"{receiver} lacks the capacity to take it all at once"}
    return replace(after, ramp=ramp)


def pending(state: RolloutState) -> bool:
    return state.ramp is not None and state.ramp != _target(state)


async def step(runner: Runner) -> None:
    """One ramp step: wait an interval (looking, when promoting), then move."""
    state = runner.state
    settings = _settings(runner, state)
    await runner.wait_synced(settings.interval_ms / 1000)
    deadline = runner.deps.wall() + settings.interval_ms / 1000
    if await runner.serve_commands(deadline):
        return
    if state.phase is Phase.PROMOTING:
        await runner.look()
        if runner.state.phase is not Phase.PROMOTING:
            return
    state = runner.state
    assert state.ramp is not None
    target = _target(state)
    receiver = runner.experiment.candidate if target == 100.0 else runner.experiment.baseline
    svc = runner.service()
    shares = _shares(runner)
    moved = abs(target - state.ramp)
    if svc is not None and fits(svc, shares, receiver, 100.0, settings.headroom):
        nxt = target
    else:
        nxt = target if moved <= settings.max_step else (
            state.ramp + settings.max_step if target > state.ramp
            else state.ramp - settings.max_step)
    runner.report.setdefault("ramp", {})["at"] = nxt
    runner.set_state(replace(state, ramp=nxt,
                             reason=f"{state.reason.split(' [ramp')[0]} [ramp: candidate "
                             f"{state.ramp:g}% -> {nxt:g}%]"))


__all__ = ["Shift", "begin", "pending", "step"]

"""What each strategy does to a service's traffic in each state of a run (pure).

``traffic(experiment, service, state)`` is the ``TrafficOverride`` the store
applies over the declared service. It depends only on the experiment, the
declared service and the run's state, so a restart re-applies exactly what
was in force (never a default split).
"""

from __future__ import annotations

import enum
from dataclasses import replace

from controlplane.experiment import Experiment, Strategy
from controlplane.model import (
    Cohort,
    Endpoint,
    EndpointHealth,
    Mirror,
    ModelService,
    TrafficShape,
    Unavailable,
)
from controlplane.rollout.machine import Outcome, Phase, RolloutState
from controlplane.store import TrafficOverride


class PodState(enum.Enum):
    """Where one pod is in a rolling update."""

    BASELINE = "baseline"
    DRAINING = "draining"  # still in the baseline, marked DRAINING: no new requests
    UPDATING = "updating"  # in no cluster while its hook runs and it starts
    CANDIDATE = "candidate"  # serving as the candidate version
    REVERTING = "reverting"  # rolling back: still in the candidate's cluster, DRAINING


def owner(experiment: Experiment) -> str:
    return f"experiment/{experiment.name}"


def pod_key(endpoint: Endpoint) -> str:
    return f"{endpoint.address}:{endpoint.port}"


def step_weight(experiment: Experiment, step: int) -> float:
    steps = experiment.analysis.steps
    return steps[min(step, len(steps) - 1)].weight


def traffic(experiment: Experiment, service: ModelService,
            state: RolloutState) -> TrafficOverride:
    b, c = experiment.baseline, experiment.candidate
    who = owner(experiment)
    if experiment.strategy is Strategy.ROLLING and state.pods:
        return _rolling(experiment, service, state)
    if state.ramp is not None and state.phase in (Phase.PROMOTING, Phase.ROLLING_BACK):
        return TrafficOverride.of(who, {b: 100.0 - state.ramp, c: state.ramp})
    if state.phase in (Phase.PROMOTING, Phase.SUCCEEDED):
        winner = c if state.outcome is not Outcome.BASELINE else b
        return TrafficOverride.of(who, {winner: 100.0})
    if state.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.FAILED):
        return TrafficOverride.of(who, {b: 100.0})
    strategy = experiment.strategy
    if strategy is Strategy.ABTEST and experiment.abtest is not None:
        match = experiment.abtest.match
        if match is not None:
            shape = TrafficShape(cohorts=(Cohort(match.header, match.value, c),))
            return TrafficOverride.of(who, {b: 100.0, c: 0.0}, traffic=shape)
    if strategy is Strategy.BLUEGREEN and experiment.bluegreen is not None:
        percent = experiment.bluegreen.mirror_percent
        if state.step == 0:
            shape = TrafficShape(mirrors=(Mirror(c, percent),))
            return TrafficOverride.of(who, {b: 100.0, c: 0.0}, traffic=shape)
        # After the switch the baseline stays warm on mirrored copies, so the
        # comparison goes on through the rollback window.
        return TrafficOverride.of(who, {b: 0.0, c: 100.0},
                                  traffic=TrafficShape(mirrors=(Mirror(b, percent),)))
    if strategy is Strategy.SYNCHRONIZED:
        if state.stage == "switched":
            return TrafficOverride.of(who, {b: 0.0, c: 100.0})
        if state.stage == "blackout":
            return TrafficOverride.of(who, {b: 100.0, c: 0.0},
                                      traffic=TrafficShape(unavailable=Unavailable()))
        return TrafficOverride.of(who, {b: 100.0, c: 0.0})
    if strategy is Strategy.ROLLING:
        return TrafficOverride.of(who, {b: 100.0, c: 0.0})
    w = step_weight(experiment, state.step)
    return TrafficOverride.of(who, {b: 100.0 - w, c: w})


# --- rolling ---------------------------------------------------------------------------


def fleet(experiment: Experiment, service: ModelService) -> tuple[Endpoint, ...]:
    """The pods a rolling update goes through: the baseline's declared endpoints."""
    return service.version(experiment.baseline).endpoints


def initial_pods(experiment: Experiment, service: ModelService) -> tuple[tuple[str, str], ...]:
    return tuple((pod_key(e), PodState.BASELINE.value) for e in fleet(experiment, service))


def batches(pods: int, max_unavailable: int) -> int:
    return max(1, -(-pods // max(1, max_unavailable)))


def batch_of(experiment: Experiment, service: ModelService, step: int) -> tuple[str, ...]:
    """The pods updated in step ``step`` (0-based), in declared order."""
    keys = [pod_key(e) for e in fleet(experiment, service)]
    size = experiment.rolling.max_unavailable if experiment.rolling else 1
    return tuple(keys[step * size:(step + 1) * size])


def _rolling(experiment: Experiment, service: ModelService,
             state: RolloutState) -> TrafficOverride:
    where = dict(state.pods)
    base: list[Endpoint] = []
    cand: list[Endpoint] = []
    for endpoint in fleet(experiment, service):
        at = PodState(where.get(pod_key(endpoint), PodState.BASELINE.value))
        if at is PodState.BASELINE:
            base.append(endpoint)
        elif at is PodState.DRAINING:
            base.append(replace(endpoint, health=EndpointHealth.DRAINING))
        elif at is PodState.CANDIDATE:
            cand.append(endpoint)
        elif at is PodState.REVERTING:
            cand.append(replace(endpoint, health=EndpointHealth.DRAINING))
    total_b = sum(e.weight for e in base if e.health is not EndpointHealth.DRAINING)
    total_c = sum(e.weight for e in cand if e.health is not EndpointHealth.DRAINING)
    if total_b + total_c == 0:
        weights = {experiment.baseline: 100.0, experiment.candidate: 0.0}
    else:
        share = round(100.0 * total_c / (total_b + total_c), 2)
        weights = {experiment.baseline: 100.0 - share, experiment.candidate: share}
    return TrafficOverride.of(
        owner(experiment), weights,
        endpoints=((experiment.baseline, tuple(base)), (experiment.candidate, tuple(cand))),
    )


def with_pods(state: RolloutState, keys: tuple[str, ...], to: PodState) -> RolloutState:
    pods = dict(state.pods)
    for key in keys:
        pods[key] = to.value
    return replace(state, pods=tuple(pods.items()))


def pods_in(state: RolloutState, *states: PodState) -> tuple[str, ...]:
    wanted = {s.value for s in states}
    return tuple(k for k, v in state.pods if v in wanted)

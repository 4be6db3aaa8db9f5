"""The weight computation of policy response_time: properties and behaviour."""

from __future__ import annotations

import itertools
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.routing.weights import (
    DRIFT,
    UINT32_MAX,
    EndpointWeight,
    Sample,
    SignalState,
    Tuning,
    signal_state,
    update,
)

T = Tuning()
KEYS = [f"10.0.0.{i}:8000" for i in range(1, 7)]


def sample(rt: float, rate: float = 20.0, window: float = 2.0, errors: float = 0.0) -> Sample:
    """A window where ``rate`` requests/s took ``rt`` s each (in flight = rate × rt)."""
    completed = rate * window
    return Sample(completed=completed, busy=completed * rt, errors=errors, spacing=0.5)


def run(priors: dict[str, int], rts: list[dict[str, float]],
        state: dict[str, EndpointWeight] | None = None,
        tuning: Tuning = T) -> list[dict[str, EndpointWeight]]:
    out = []
    current = state or {}
    for i, step in enumerate(rts):
        current = update(current, priors, {k: sample(v) for k, v in step.items()}, 2.0 * i,
                         tuning)
        out.append(current)
    return out


def test_a_slow_endpoint_loses_weight_within_a_few_updates_and_regains_it() -> None:
    priors = {k: 100 for k in KEYS[:3]}
    slow = [{KEYS[0]: 0.6, KEYS[1]: 0.2, KEYS[2]: 0.2}] * 4
    history = run(priors, slow)
    assert [h[KEYS[0]].weight for h in history][-1] < 50
    assert all(h[KEYS[1]].weight >= 100 for h in history)
    recovered = run(priors, [{k: 0.2 for k in KEYS[:3]}] * 30, history[-1])
    assert recovered[-1][KEYS[0]].weight >= 0.8 * recovered[-1][KEYS[1]].weight


def test_errors_count_against_an_endpoint() -> None:
    priors = {k: 100 for k in KEYS[:2]}
    samples = {KEYS[0]: sample(0.2, errors=30.0), KEYS[1]: sample(0.2)}
    state: dict[str, EndpointWeight] = {}
    for i in range(3):
        state = update(state, priors, samples, 2.0 * i, T)
    assert state[KEYS[0]].weight < state[KEYS[1]].weight


def test_pod_metrics_lower_a_pod_with_a_queue() -> None:
    priors = {k: 100 for k in KEYS[:2]}
    queued = Sample(40, 8, spacing=0.5, waiting=4.0, kv_usage=0.5)
    samples = {KEYS[0]: queued, KEYS[1]: sample(0.2)}
    state: dict[str, EndpointWeight] = {}
    for i in range(3):
        state = update(state, priors, samples, 2.0 * i, T)
    assert state[KEYS[0]].weight < 100 <= state[KEYS[1]].weight


def test_a_new_endpoint_starts_at_the_mean_ratio_of_the_others() -> None:
    priors = {KEYS[0]: 200, KEYS[1]: 100}
    state = {KEYS[0]: EndpointWeight(300), KEYS[1]: EndpointWeight(150)}
    grown = update(state, {**priors, KEYS[2]: 100}, {}, 0.0, T)
    assert grown[KEYS[2]].weight == 150  # prior 100 × the others' ratio 1.5
    assert signal_state(grown[KEYS[2]], None, 0.0, T) is SignalState.NEW
    first = update({}, priors, {}, 0.0, T)
    assert {k: s.weight for k, s in first.items()} == priors


def test_stale_and_garbage_signals_keep_the_last_weight() -> None:
    priors = {k: 100 for k in KEYS[:3]}
    history = run(priors, [{KEYS[0]: 0.8, KEYS[1]: 0.2, KEYS[2]: 0.2}] * 3)
    before = history[-1]
    garbage = Sample(completed=math.nan, busy=1.0)
    later = update(before, priors, {KEYS[0]: garbage}, 100.0, T)
    assert {k: s.weight for k, s in later.items()} == {k: s.weight for k, s in before.items()}
    assert signal_state(later[KEYS[0]], garbage, 100.0, T) is SignalState.GARBAGE
    assert signal_state(later[KEYS[1]], None, 100.0, T) is SignalState.STALE


def test_removed_endpoints_are_forgotten() -> None:
    state = {KEYS[0]: EndpointWeight(100), KEYS[1]: EndpointWeight(100)}
    assert set(update(state, {KEYS[0]: 100}, {}, 0.0, T)) == {KEYS[0]}


# --------------------------------------------------------------------------- properties

priors_st = st.lists(st.sampled_from([100, 150, 200, 300]), min_size=2, max_size=6).map(
    lambda ws: {KEYS[i]: w for i, w in enumerate(ws)})
rt_st = st.floats(0.01, 20.0)


@st.composite
def histories(draw: st.DrawFn) -> tuple[dict[str, int], list[dict[str, Sample | None]]]:
    priors = draw(priors_st)
    steps = []
    for _ in range(draw(st.integers(1, 12))):
        step: dict[str, Sample | None] = {}
        for key in priors:
            kind = draw(st.sampled_from(["rt", "rt", "rt", "none", "sparse"]))
            if kind == "rt":
                step[key] = sample(draw(rt_st), rate=draw(st.floats(0.5, 50.0)))
            elif kind == "sparse":
                step[key] = Sample(completed=1, busy=draw(st.floats(0, 5)), spacing=0.5)
        steps.append(step)
    return priors, steps


@settings(max_examples=200, deadline=None)
@given(histories())
def test_bounded_step_floor_and_positive_weights(
        history: tuple[dict[str, int], list[dict[str, Sample | None]]]) -> None:
    priors, steps = history
    state: dict[str, EndpointWeight] = {}
    for i, samples in enumerate(steps):
        new = update(state, priors, samples, 2.0 * i, T)
        assert set(new) == set(priors)
        # Bounded in the same way whichever common rescale (a power of two) happened.
        assert any(_bounded(state, new, samples, 2.0 * i, k) for k in (0.25, 0.5, 1, 2, 4))
        state = new


def _bounded(state: dict[str, EndpointWeight], new: dict[str, EndpointWeight],
             samples: dict[str, Sample | None], now: float, rescale: float) -> bool:
    mean = sum(s.weight for s in new.values()) / len(new)
    for key, s in new.items():
        if s.weight < 1:
            return False
        if key not in state:
            continue
        old = state[key].weight * rescale
        fresh = signal_state(new[key], samples.get(key), now, T) is SignalState.OK
        # A move is bounded by max_step, unless it lifts an endpoint to the floor.
        if not old / T.max_step - 1 <= s.weight <= max(old * T.max_step, T.floor * mean) + 1:
            return False
        if fresh and s.weight < T.floor * mean - 1:
            return False
        if not fresh and abs(s.weight - old) > max(1, rescale):  # stale: last weight kept
            return False
    return True


def queueing_samples(weights: dict[str, int], capacity: dict[str, float], rate: float,
                     noise: list[float]) -> dict[str, Sample | None]:
    """One window of pods that slow down as they fill (M/M/1-like: rt = 0.5 / (1 − ρ))."""
    total = sum(weights.values())
    out: dict[str, Sample | None] = {}
    for j, (key, w) in enumerate(weights.items()):
        arrivals = rate * w / total
        rho = min(0.95, arrivals / capacity[key])
        out[key] = sample(0.5 / (1 - rho) * noise[j % len(noise)], rate=arrivals)
    return out


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(5.0, 40.0), min_size=2, max_size=5),
       st.lists(st.sampled_from([100, 200, 300]), min_size=5, max_size=5),
       st.lists(st.floats(0.9, 1.1), min_size=400, max_size=400))
def test_the_weights_scale_stays_anchored_to_the_priors(
        speeds: list[float], declared: list[int], noise: list[float]) -> None:
    """Pods whose speeds do not match their priors, under noise, for hundreds of updates:
    the weights' total stays within DRIFT× the priors' (uint32 is far away)."""
    keys = KEYS[:len(speeds)]
    priors = dict(zip(keys, declared, strict=False))
    capacity = dict(zip(keys, speeds, strict=True))
    anchor = sum(priors.values())
    state: dict[str, EndpointWeight] = {}
    for i in range(0, len(noise), 2):
        weights = {k: state[k].weight if k in state else priors[k] for k in keys}
        state = update(state, priors, queueing_samples(weights, capacity, 0.6 * sum(speeds),
                                                       noise[i:i + 2]), 2.0 * i, T)
        total = sum(s.weight for s in state.values())
        assert anchor / DRIFT - len(keys) <= total <= DRIFT * anchor + len(keys)


def test_a_pod_pushed_down_and_climbing_back_does_not_ratchet_every_weight_up() -> None:
    """The case that grew weights past a million within 500 updates: priors 2:1:1, true
    speeds 3:2:1, ±5 % noise."""
    priors = dict(zip(KEYS, [200, 100, 100], strict=False))
    capacity = dict(zip(KEYS, [30.0, 20.0, 10.0], strict=False))
    rng = random.Random(1)
    noise = [rng.uniform(0.95, 1.05) for i in range(2400)]
    state: dict[str, EndpointWeight] = {}
    for i in range(800):
        weights = {k: state[k].weight if k in state else priors[k] for k in priors}
        state = update(state, priors, queueing_samples(weights, capacity, 60.0,
                                                       noise[3 * i:3 * i + 3]), 2.0 * i, T)
    assert sum(s.weight for s in state.values()) <= DRIFT * 400 + 3
    weights = {k: s.weight for k, s in state.items()}
    assert weights[KEYS[0]] > weights[KEYS[1]] > weights[KEYS[2]]  # fastest most


@settings(max_examples=200, deadline=None)
@given(priors_st, st.lists(st.lists(st.floats(1.0, 1.0 + T.hysteresis), min_size=6,
                                    max_size=6), min_size=1, max_size=15),
       st.floats(0.05, 5.0))
def test_noise_within_the_hysteresis_never_moves_a_weight(
        priors: dict[str, int], noise: list[list[float]], base: float) -> None:
    """No flapping: response times that stay within a factor 1 + hysteresis of each
    other (any pattern, any amount of traffic) leave every weight where it is."""
    state = {k: EndpointWeight(w) for k, w in priors.items()}
    keys = list(priors)
    for i, row in enumerate(noise):
        samples: dict[str, Sample | None] = {
            k: sample(base * row[j], rate=5.0 + 10 * j) for j, k in enumerate(keys)}
        new = update(state, priors, samples, 2.0 * i, T)
        assert {k: s.weight for k, s in new.items()} == priors
        state = new


@settings(max_examples=100, deadline=None)
@given(priors_st, st.floats(0.05, 5.0), st.lists(st.floats(0.7, 1.4), min_size=20,
                                                  max_size=20))
def test_noisy_equal_pods_do_not_oscillate(priors: dict[str, int], base: float,
                                           noise: list[float]) -> None:
    """Equal pods under ±40 % noise per window: no weight reverses direction twice."""
    state: dict[str, EndpointWeight] = {}
    keys = list(priors)
    moves: dict[str, list[int]] = {k: [] for k in keys}
    for i, factor in enumerate(noise):
        samples: dict[str, Sample | None] = {
            k: sample(base * (factor if j == i % len(keys) else 1.0)) for j, k in enumerate(keys)}
        new = update(state, priors, samples, 2.0 * i, T)
        for k in keys:
            if k in state and new[k].weight != state[k].weight:
                moves[k].append(1 if new[k].weight > state[k].weight else -1)
        state = new
    for k, seq in moves.items():
        reversals = sum(1 for a, b in itertools.pairwise(seq) if a != b)
        assert reversals <= 1, (k, seq)


def test_weights_never_pass_uint32_whatever_the_priors() -> None:
    """Priors near the limit (discovered pods are never validated): the total, and so
    every locality's, stays under Envoy's uint32 limit while one pod gains."""
    priors = {KEYS[0]: 2_000_000_000, KEYS[1]: 2_000_000_000}
    state: dict[str, EndpointWeight] = {}
    for i in range(200):
        state = update(state, priors, {KEYS[0]: sample(0.1), KEYS[1]: sample(1.0)},
                       2.0 * i, T)
        assert sum(s.weight for s in state.values()) <= UINT32_MAX
    assert state[KEYS[0]].weight > 5 * state[KEYS[1]].weight

"""Endpoint weights from measured response times and load (pure; time is an argument).

The policy ``response_time``: every update (``ResponseTimeTuning.interval``)
each endpoint's windows of load reports (from every proxy: requests completed,
errors, requests in flight integrated over time) are added to decayed sums
(older windows fade by ``1 - 1/memory`` per update, so a lightly used endpoint
accumulates enough requests to be measured), and Little's law turns them into
a mean time in system ``rt``. Weights then move so that response times even
out: an endpoint slower than the traffic-weighted mean gets less, a faster one
more::

    target_i = w_i * (mean_score / score_i) ** gain,   score_i = rt_i / headroom_i

where ``mean_score`` is the mean of ``score`` weighted by the current weights
(a barely used endpoint's noisy estimate moves it little) and ``headroom`` is 1
unless the pods' own metrics are known: ``1 - max(waiting / 5, kv_usage / 0.8)``,
floored at 0.05 (the recipe of the leading LLM routers). Then, in this order:

- hysteresis and noise: a move away from the endpoint's prior share must exceed
  ``hysteresis`` *and* ``z`` standard errors of its estimate (in-flight readings
  and completions are about Poisson), so noise never moves a weight; in
  particular, if every response time lies within a factor ``1 + hysteresis`` of
  the others, nothing changes. A move back towards the prior share needs only
  the hysteresis, and an endpoint below its prior share that is not slower than
  the rest returns to it by ``sqrt(max_step)`` per update: a pod pushed down gets
  little traffic, so it could never show evidence of having recovered;
- bounded step: a weight moves by at most ``max_step`` (×, or ÷) per update;
- floor: no endpoint below ``floor`` × the mean weight, so a slow pod keeps
  enough traffic to be measured and nobody drops to zero;
- stale signals (no completions for ``stale_after``, too few to estimate, or a
  garbage report) keep the last weight and take no part in the comparison;
- scale: when the weights' total drifts more than ``DRIFT``× from the priors'
  total, all of them are halved (or doubled) together, which changes no share;
- a new endpoint starts at the mean: its prior (declared weight × GPU
  capacity) times the mean ratio of weight to prior of the others — neither a
  cold start at zero nor at a stale extreme, the weakness of naive
  response-time routing.

Envoy's least request corrects between pushes with its in-flight counts.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from controlplane.model import ResponseTimeTuning

__all__ = ["DRIFT", "UINT32_MAX", "EndpointWeight", "Sample", "SignalState", "Tuning",
           "signal_state", "update"]

# The weights' total stays within this factor of the priors' total (``_anchored``), and
# under Envoy's limit on a locality's total weight.
DRIFT = 2.0
UINT32_MAX = 4_294_967_295


@dataclass(frozen=True)
class Sample:
    """What one endpoint did over one window, summed over the proxies that report it."""

    completed: float  # requests that finished in the window
    busy: float  # requests in flight integrated over the window (request-seconds)
    errors: float = 0.0
    spacing: float = 1.0  # seconds between the in-flight readings ``busy`` is made of
    # From the pods' own metrics when a Prometheus is configured (None: unknown).
    waiting: float | None = None
    kv_usage: float | None = None

    @property
    def valid(self) -> bool:
        values = (self.completed, self.busy, self.errors, self.spacing)
        extra = tuple(v for v in (self.waiting, self.kv_usage) if v is not None)
        return all(math.isfinite(v) and v >= 0 for v in values + extra) and \
            self.errors <= self.completed

    @property
    def headroom(self) -> float:
        waiting = (self.waiting or 0.0) / 5.0
        kv = (self.kv_usage or 0.0) / 0.8
        return max(0.05, 1.0 - max(waiting, kv))


@dataclass(frozen=True)
class Tuning:
    hysteresis: float = 0.15
    max_step: float = 1.5
    floor: float = 0.05
    stale_after_s: float = 10.0
    memory: float = 3.0  # windows: older windows fade by (1 - 1/memory) per update
    min_requests: float = 3.0  # fewer completions in memory: no estimate yet
    gain: float = 0.5  # how far towards equal response times one update aims
    z: float = 2.0  # a move must exceed this many standard errors of the estimate

    @classmethod
    def of(cls, t: ResponseTimeTuning) -> Tuning:
        return cls(hysteresis=t.hysteresis, max_step=t.max_step, floor=t.floor,
                   stale_after_s=t.stale_after_ms / 1000)


@dataclass(frozen=True)
class EndpointWeight:
    """An endpoint's weight and what it was computed from (decayed sums of its windows)."""

    weight: int
    completed: float = 0.0
    busy: float = 0.0
    errors: float = 0.0
    spacing: float = 1.0
    fresh_at: float | None = None  # when the last completion was reported
    headroom: float = 1.0

    def response_time(self, tuning: Tuning) -> float | None:
        """Mean time in system (Little's law), penalised by the share of errors."""
        if self.completed < tuning.min_requests:
            return None
        # No request seen in flight at any reading: as if half of one was (requests
        # much shorter than the report interval, at light load).
        busy = self.busy if self.busy > 0 else 0.5 * self.spacing
        error_share = min(0.9, self.errors / self.completed)
        return busy / self.completed / (1.0 - error_share)

    def relative_error(self, tuning: Tuning) -> float:
        """Standard error of ``response_time`` over its value.

        In-flight readings are about Poisson (variance = mean) and independent
        when further apart than a request lasts; completions are about Poisson.
        """
        rt = self.response_time(tuning) or 0.0
        busy = self.busy if self.busy > 0 else 0.5 * self.spacing
        return math.sqrt(max(self.spacing, rt) / busy + 1.0 / max(self.completed, 1e-9))


class SignalState(enum.Enum):
    OK = "ok"  # a current estimate, takes part in the comparison
    STALE = "stale"  # no (or too few) completions lately: keeps its weight
    NEW = "new"  # never measured: started at the mean
    GARBAGE = "garbage"  # the latest sample was not valid: keeps its weight


def signal_state(state: EndpointWeight | None, sample: Sample | None, now: float,
                 tuning: Tuning) -> SignalState:
    if sample is not None and not sample.valid:
        return SignalState.GARBAGE
    if state is None or state.fresh_at is None:
        return SignalState.NEW
    if now - state.fresh_at > tuning.stale_after_s or state.response_time(tuning) is None:
        return SignalState.STALE
    return SignalState.OK


def _observe(prev: EndpointWeight, sample: Sample | None, now: float,
             tuning: Tuning) -> EndpointWeight:
    if sample is None or not sample.valid:
        return prev
    keep = 1.0 - 1.0 / tuning.memory
    fresh = now if sample.completed > 0 else prev.fresh_at
    return EndpointWeight(
        prev.weight,
        completed=prev.completed * keep + sample.completed,
        busy=prev.busy * keep + sample.busy,
        errors=prev.errors * keep + sample.errors,
        spacing=sample.spacing,
        fresh_at=fresh,
        headroom=sample.headroom,
    )


def update(previous: Mapping[str, EndpointWeight], priors: Mapping[str, int],
           samples: Mapping[str, Sample | None], now: float,
           tuning: Tuning) -> dict[str, EndpointWeight]:
    """The weights after one update, for exactly the endpoints in ``priors``.

    ``priors``: endpoint key -> weight before measurements (declared × capacity,
    ≥ 1). ``samples``: the last window per endpoint (absent or None: nothing
    reported). Weights are integers ≥ 1 in the priors' scale.
    """
    known = {k: previous[k] for k in priors if k in previous}
    ratios = [s.weight / priors[k] for k, s in known.items()]
    start = sum(ratios) / len(ratios) if ratios else 1.0
    state: dict[str, EndpointWeight] = {}
    for key, prior in priors.items():
        prev = known.get(key) or EndpointWeight(max(1, round(prior * start)))
        state[key] = _observe(prev, samples.get(key), now, tuning)
    fresh = {k: s for k, s in state.items()
             if signal_state(s, samples.get(k), now, tuning) is SignalState.OK}
    if len(fresh) < 2:
        return state
    score: dict[str, float] = {}  # effective response time, lower is better
    for key, s in fresh.items():
        rt = s.response_time(tuning)
        assert rt is not None
        score[key] = rt / s.headroom
    total = sum(s.weight for s in fresh.values())
    # Weighted by traffic share: a barely used endpoint's noisy estimate moves little.
    mean_score = sum(fresh[k].weight * v for k, v in score.items()) / total
    mean_share = sum(s.weight / priors[k] for k, s in state.items()) / len(state)
    moved: dict[str, float] = {}
    for key, s in fresh.items():
        ratio = (mean_score / score[key]) ** tuning.gain
        # Moving away from the prior share needs evidence beyond the estimate's noise;
        # moving back towards it only the hysteresis (an endpoint pushed down gets little
        # traffic, so it could never show evidence of having recovered).
        back = (ratio > 1.0) == (s.weight / priors[key] < mean_share)
        band = tuning.hysteresis if back else \
            max(tuning.hysteresis, tuning.z * tuning.gain * s.relative_error(tuning))
        if abs(math.log(ratio)) <= math.log1p(band):
            # No evidence either way: an endpoint below its prior share that is not
            # slower than the rest returns to it, gently (a recovered pod comes back
            # even when light load makes every pod equally fast).
            share = s.weight / priors[key]
            if share * (1 + tuning.hysteresis) < mean_share and \
                    score[key] <= mean_score * (1 + tuning.hysteresis):
                moved[key] = s.weight * min(math.sqrt(tuning.max_step), mean_share / share)
            continue
        ratio = min(tuning.max_step, max(1.0 / tuning.max_step, ratio))
        moved[key] = s.weight * ratio
    weights = {k: moved.get(k, float(s.weight)) for k, s in state.items()}
    for _ in range(3):  # raising some to the floor raises the mean a little: settle it
        floor = tuning.floor * sum(weights.values()) / len(weights)
        weights.update({k: floor for k in fresh if weights[k] < floor})
    weights = _anchored(weights, sum(priors.values()))
    for key, s in state.items():
        w = weights[key]
        if key in moved or w != s.weight:
            state[key] = replace(s, weight=max(1, round(w)))
    return state


def _anchored(weights: dict[str, float], anchor: float) -> dict[str, float]:
    """``weights`` halved or doubled together until their total is within a factor
    ``DRIFT`` of the priors' total.

    Every move is relative (to the others' response times, to the prior share), so
    nothing else pins the weights' scale: a pod that keeps being pushed down and
    climbing back ratchets every weight up, past Envoy's uint32 limit on a
    locality's total within the hour. Scaling all of them together changes no share;
    by powers of two, so that it happens seldom and an endpoint's weight stays the
    same number between rescales (a stale one's in particular).
    """
    total = sum(weights.values())
    # Rounding adds up to half a unit per endpoint; the service's total bounds every
    # locality's, whatever versions, priorities and zones the endpoints are in.
    limit = UINT32_MAX - len(weights)
    factor = 1.0
    while total * factor > min(DRIFT * anchor, limit):
        factor /= 2
    while total * factor < anchor / DRIFT and 2 * total * factor <= limit:
        factor *= 2
    return weights if factor == 1.0 else {k: w * factor for k, w in weights.items()}

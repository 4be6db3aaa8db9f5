"""Time to promote: closed-loop canaries, the ramp following the judge's decisions.

Each run starts at 5 %; when the judge says ADVANCE the next look's traffic
is split at the next step (5 -> 10 -> 20 -> 30 -> 50 %), PROMOTE at the last
step ends the run, ROLLBACK ends it too. 60 one-minute looks at most, soak
5 min per step (so the earliest promotion is at look 25). Traffic is Poisson
at 10 or 100 req/s, 1 % baseline errors, log-normal latency (median 150 ms,
sigma 0.6, p95 ~ 402 ms) counted into one of two bucket layouts:

* Envoy's default ``upstream_rq_time`` bounds (``analysis.buckets``;
  250, 500, 1000 ms around the p95);
* the bounds ``sluice bootstrap`` gives Sluice's clusters
  (``xds.bootstrap.UPSTREAM_RQ_TIME_BUCKETS_MS``, about 12 % apart).

Gates (one gating metric per row): errors (``harmMargin`` 0,
``nonInferiorityMargin`` 0.5, ``minEffect`` 0.001), p95 latency (0, 0.25) or
``slow_rate`` above 500 ms, a bound of both layouts near the p95 (0, 0.5,
``minEffect`` 0.005: healthy 2.2 % slow; +25 % latency makes it 5.1 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from analysis.buckets import ENVOY_DEFAULT_BUCKETS_MS
from analysis.judge import Decision, Look, judge, start
from analysis.samples import Histogram, Window
from analysis.spec import ExperimentSpec
from controlplane.config.experiment import experiment_from_mapping
from xds.bootstrap import UPSTREAM_RQ_TIME_BUCKETS_MS

RAMP = (5.0, 10.0, 20.0, 30.0, 50.0)
LOOKS = 60
LOOK_S = 60.0
SOAK = "5m"
LAT_MEDIAN_S = 0.15
LAT_SIGMA = 0.6
SLOW_THRESHOLD = "500ms"

LAYOUTS: dict[str, tuple[float, ...]] = {
    "Envoy default": (*(b / 1000 for b in ENVOY_DEFAULT_BUCKETS_MS), math.inf),
    "Sluice": (*(b / 1000 for b in UPSTREAM_RQ_TIME_BUCKETS_MS), math.inf),
}


@dataclass(frozen=True)
class PromoScenario:
    name: str
    gate: str  # errors | p95 | slow_rate
    rate_per_min: float
    layout: str = "Sluice"
    err_ratio: float = 1.0
    lat_scale: float = 1.0

    @property
    def healthy(self) -> bool:
        return self.err_ratio == 1.0 and self.lat_scale == 1.0


def _rows() -> tuple[PromoScenario, ...]:
    rows: list[PromoScenario] = []
    for rps in (10, 100):
        per_min = 60.0 * rps
        rows += [PromoScenario(f"errors A/A, {rps} req/s", "errors", per_min),
                 PromoScenario(f"errors 2x, {rps} req/s", "errors", per_min, err_ratio=2.0)]
        for layout in LAYOUTS:
            for gate, label in (("p95", "p95"), ("slow_rate", "slow_rate>500ms")):
                rows += [
                    PromoScenario(f"{label} A/A, {rps} req/s, {layout}", gate, per_min, layout),
                    PromoScenario(f"{label} +25%, {rps} req/s, {layout}", gate, per_min, layout,
                                  lat_scale=1.25),
                ]
    return tuple(rows)


SCENARIOS = _rows()


def experiment(gate: str) -> ExperimentSpec:
    metric: dict[str, object] = {"name": gate, "minSamples": 300, "harmMargin": 0.0}
    if gate == "errors":
        metric.update(kind="error_rate", nonInferiorityMargin=0.5, minEffect=0.001)
    elif gate == "p95":
        metric.update(kind="latency", quantile=0.95, nonInferiorityMargin=0.25)
    else:
        metric.update(kind="slow_rate", threshold=SLOW_THRESHOLD, nonInferiorityMargin=0.5,
                      minEffect=0.005)
    doc = {
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Experiment",
        "metadata": {"name": "promotion"},
        "spec": {"baseline": "base", "candidate": "canary", "alpha": 0.05,
                 "steps": [{"weight": w, "soak": SOAK} for w in RAMP], "metrics": [metric]},
    }
    return experiment_from_mapping(doc).analysis


def bucket_probs(bounds: tuple[float, ...], scale: float) -> NDArray[np.float64]:
    finite = np.asarray(bounds[:-1])
    cdf = stats.lognorm.cdf(finite, s=LAT_SIGMA, scale=LAT_MEDIAN_S * scale)
    probs = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    out: NDArray[np.float64] = probs / probs.sum()
    return out


@dataclass(frozen=True)
class Outcome:
    rollback: int  # look of the first ROLLBACK (1-based), 0: none
    promote: int  # look of PROMOTE, 0: none


def run_one(sc: PromoScenario, spec: ExperimentSpec, rng: np.random.Generator) -> Outcome:
    bounds = LAYOUTS[sc.layout]
    p_c, p_b = bucket_probs(bounds, sc.lat_scale), bucket_probs(bounds, 1.0)
    err_b = 0.01
    err_c = min(1.0, err_b * sc.err_ratio)
    state = start(spec, 0.0)
    for look in range(1, LOOKS + 1):
        w = spec.steps[state.step].weight
        total = int(rng.poisson(sc.rate_per_min))
        n_c = int(rng.binomial(total, w / 100.0))
        n_b = total - n_c
        t = look * LOOK_S
        windows = []
        for version, n, err, probs, weight in (("canary", n_c, err_c, p_c, w),
                                               ("base", n_b, err_b, p_b, 100.0 - w)):
            counts = tuple(int(c) for c in rng.multinomial(n, probs))
            windows.append(Window(t, version, n, int(rng.binomial(n, err)),
                                  histograms={"latency": Histogram(bounds, counts)},
                                  weight=weight))
        state, j = judge(state, Look(t, windows[0], windows[1]))
        if j.decision is Decision.ROLLBACK:
            return Outcome(look, 0)
        if j.decision is Decision.PROMOTE:
            return Outcome(0, look)
    return Outcome(0, 0)


def run_task(row: int, chunk: int, runs: int, seed: int) -> dict[str, object]:
    sc = SCENARIOS[row]
    rng = np.random.default_rng([seed, 1000 + row, chunk])
    spec = experiment(sc.gate)
    out = [run_one(sc, spec, rng) for _ in range(runs)]
    return {"row": row, "rollback": np.asarray([o.rollback for o in out]),
            "promote": np.asarray([o.promote for o in out])}


def cell(first: NDArray[np.int64]) -> str:
    """'% of runs  mean/p90 look' for the runs where it happened."""
    hit = first[first > 0]
    rate = 100.0 * hit.size / first.size
    if hit.size == 0:
        return f"{rate:5.1f} %          "
    return f"{rate:5.1f} % {hit.mean():4.1f}/{np.percentile(hit, 90):4.0f}"

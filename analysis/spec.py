"""Experiment and metric specs as the statistics engine sees them: frozen, already valid.

The control plane parses and validates ``Experiment`` documents (with
``file:line:column`` errors and a JSON Schema, ``controlplane.config``) and
hands the engine an ``ExperimentSpec``; nothing here reads untrusted input.
Latency values and margins are in seconds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class MetricKind(enum.Enum):
    ERROR_RATE = "error_rate"
    LATENCY = "latency"
    MEAN = "mean"


class Direction(enum.Enum):
    HIGHER_IS_WORSE = "higherIsWorse"
    LOWER_IS_WORSE = "lowerIsWorse"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: MetricKind
    harm_margin: float
    non_inferiority_margin: float
    min_samples: int = 0
    gating: bool = True
    min_effect: float = 0.0  # rate, seconds (latency) or the mean's unit
    quantile: float = 0.95
    direction: Direction = Direction.HIGHER_IS_WORSE
    source: str | None = None  # error class, histogram or mean name in the samples
    query: str | None = None  # a custom Prometheus query (the provider's business)
    primary: bool = False  # A/B tests: decides the winner


@dataclass(frozen=True)
class Step:
    weight: float  # candidate percent
    soak_s: float  # minimum time at this step before advancing


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    baseline: str
    candidate: str
    steps: tuple[Step, ...]
    metrics: tuple[MetricSpec, ...]
    alpha: float = 0.05
    srm_alpha: float = 0.001
    check_srm: bool = True  # False when the split is not by weight (a header cohort)

    @property
    def gating_metrics(self) -> tuple[MetricSpec, ...]:
        return tuple(m for m in self.metrics if m.gating)

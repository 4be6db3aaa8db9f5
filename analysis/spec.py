"""Experiment and metric specs as the statistics engine sees them: frozen, already valid.

The control plane parses and validates ``Experiment`` documents (with
``file:line:column`` errors and a JSON Schema, ``controlplane.config``) and
hands the engine an ``ExperimentSpec``; nothing here reads untrusted input.
Latency values, ``minEffect`` of latency metrics and ``threshold_s`` are in
seconds; margins are relative (0.1 = 10 %).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class MetricKind(enum.Enum):
    ERROR_RATE = "error_rate"
    LATENCY = "latency"  # a quantile of a histogram
    SLOW_RATE = "slow_rate"  # the share of a histogram's observations above a bound
    MEAN = "mean"
    RATIO = "ratio"  # a ratio of two per-request sums (tokens per second)


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
    min_effect: float = 0.0  # rate, seconds (latency) or the mean's / ratio's unit
    quantile: float = 0.95
    direction: Direction = Direction.HIGHER_IS_WORSE
    source: str | None = None  # error class, histogram, mean or ratio name in the samples
    query: str | None = None  # a custom Prometheus query (the provider's business)
    primary: bool = False  # A/B tests: decides the winner
    threshold_s: float | None = None  # slow_rate: observations above this bound are slow
    numerator: str | None = None  # ratio: a mean whose sums are the numerator ...
    denominator: str | None = None  # ... and one whose sums are the denominator

    @property
    def histogram(self) -> str | None:
        """The histogram a latency or slow_rate metric reads (None for other kinds)."""
        if self.kind in (MetricKind.LATENCY, MetricKind.SLOW_RATE):
            return self.source or "latency"
        return None

    @property
    def needs(self) -> tuple[tuple[str, str], ...]:
        """The per-window series the metric reads, as (slot, name) pairs.

        Slots: ``errors`` (name "" for all errors, else an error class),
        ``histogram``, ``mean``, ``ratio``. What a provider must fill in a
        :class:`analysis.samples.Window` for this metric.
        """
        if self.kind is MetricKind.ERROR_RATE:
            return (("errors", self.source or ""),)
        if self.histogram is not None:
            return (("histogram", self.histogram),)
        if self.kind is MetricKind.RATIO:
            if self.numerator is not None and self.denominator is not None:
                return (("mean", self.numerator), ("mean", self.denominator))
            return (("ratio", self.source or self.name),)
        return (("mean", self.source or self.name),)


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

"""Metrics providers: cumulative per-version counters at an instant, from one system each.

A provider answers ``read(target, t)`` with a ``Reading``: for every *origin*
(one Envoy's admin endpoint, one Prometheus series set) and version, the
cumulative counters at that instant. The loop keeps the previous reading and
turns the pair into per-window increments with ``windows.windows_between``
(exact integer differences, counter resets detected per origin) — never
``increase()``, which extrapolates.

A provider that cannot answer raises ``ProviderError`` (unreachable, timeout,
malformed or empty answer): that look is NODATA, which holds and never rolls
back. One small protocol, one implementation per file: ``envoy.py``
(``/stats/prometheus`` of each Envoy) and ``prometheus.py`` (a Prometheus
server through ``prometheus-api-client``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from analysis.spec import MetricSpec


class ProviderError(Exception):
    """The source did not answer usefully; the look is NODATA (hold, never roll back)."""


@dataclass(frozen=True)
class Target:
    """What to read: one service's versions (each an Envoy cluster) and the metrics judged."""

    service: str
    versions: tuple[str, ...]  # baseline first, then candidate
    clusters: Mapping[str, str]  # version -> Envoy cluster name ("<service>/<version>")
    metrics: tuple[MetricSpec, ...]
    interval_s: float  # time between looks (custom queries' {{interval}})


@dataclass(frozen=True)
class HistogramReading:
    """A cumulative histogram: counts at or below each bound (seconds; last bound inf)."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    total: float = 0.0  # the _sum, in seconds


@dataclass(frozen=True)
class VersionReading:
    """Cumulative counters of one version from one origin."""

    requests: float = 0.0
    errors: float = 0.0
    error_classes: Mapping[str, float] = field(default_factory=dict)
    histograms: Mapping[str, HistogramReading] = field(default_factory=dict)
    means: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # (sum, count)


@dataclass(frozen=True)
class Reading:
    """Everything one read returned, at time ``t`` (seconds, the loop's clock)."""

    t: float
    # origin (an Envoy admin URL, a Prometheus instance label) -> version -> counters
    origins: Mapping[str, Mapping[str, VersionReading]]
    # Values that are already per-window increments (custom queries with {{interval}}),
    # by version; added to the window as they are.
    increments: Mapping[str, VersionReading] = field(default_factory=dict)


class MetricsProvider(Protocol):
    name: str  # for messages: "envoy", "prometheus http://..."

    async def read(self, target: Target, t: float) -> Reading:
        """Cumulative counters now; raises ``ProviderError`` when it cannot answer."""
        ...

    async def close(self) -> None: ...

"""Per-endpoint load over a window, from the proxies' load reports (no I/O; time passed in).

Each ``ClusterLoad`` a proxy reports (``xds.lrs``) covers its own interval
Δt: per endpoint, requests issued and completed in it, and in flight at its
end. The window sums, per service, endpoint and traffic class, completions
and errors, and integrates requests in flight as ``in_progress × Δt``
(sample and hold), so that Little's law gives the mean time in system as
``busy / completed`` and the mean load as ``busy / window``. Clusters are
read by name: ``<service>/<version>`` and ``<service>/<version>/affinity``
carry online traffic, ``<service>/<version>/batch`` the offline class.
Anything else (Sluice's own ``sluice_xds``, a foreign cluster) is ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from controlplane.routing.weights import Sample
from xds.lrs import ClusterLoad

__all__ = ["LoadWindow", "TrafficClass", "WindowTake", "parse_cluster"]

MAX_IN_FLIGHT = 1_000_000  # more per endpoint and proxy is not a load, it is garbage


class TrafficClass(enum.Enum):
    ONLINE = "online"
    BATCH = "batch"


def parse_cluster(name: str) -> tuple[str, TrafficClass] | None:
    """The service and traffic class of a Sluice cluster name, else None."""
    parts = name.split("/")
    if len(parts) == 2 and all(parts):
        return parts[0], TrafficClass.ONLINE
    if len(parts) == 3 and parts[0] and parts[1]:
        if parts[2] == "affinity":
            return parts[0], TrafficClass.ONLINE
        if parts[2] == "batch":
            return parts[0], TrafficClass.BATCH
    return None


@dataclass
class _Acc:
    completed: float = 0.0
    errors: float = 0.0
    busy: float = 0.0
    seconds: float = 0.0  # sum of the report intervals
    readings: int = 0
    garbage: bool = False


@dataclass
class WindowTake:
    """One service's window: samples per endpoint (online), batch load, and its length."""

    seconds: float
    online: dict[str, Sample] = field(default_factory=dict)
    batch: dict[str, Sample] = field(default_factory=dict)
    garbage: set[str] = field(default_factory=set)  # endpoints with implausible reports
    proxies: set[str] = field(default_factory=set)  # nodes that reported

    def in_flight(self, key: str, cls: TrafficClass = TrafficClass.ONLINE) -> float:
        """Mean requests in flight at the endpoint over the window."""
        sample = (self.online if cls is TrafficClass.ONLINE else self.batch).get(key)
        return sample.busy / self.seconds if sample is not None and self.seconds > 0 else 0.0


class LoadWindow:
    """Load reports summed per service until ``take`` (one window per service)."""

    def __init__(self, now: float) -> None:
        self._acc: dict[tuple[str, TrafficClass, str], _Acc] = {}
        self._nodes: dict[str, set[str]] = {}
        self._started: dict[str, float] = {}
        self._origin = now
        self.reports = 0

    def add(self, node: str, clusters: Iterable[ClusterLoad]) -> None:
        self.reports += 1
        for load in clusters:
            parsed = parse_cluster(load.cluster)
            if parsed is None:
                continue
            service, cls = parsed
            self._nodes.setdefault(service, set()).add(node)
            dt = load.interval_s if 0 < load.interval_s < 3600 else 0.0
            for e in load.endpoints:
                acc = self._acc.setdefault((service, cls, e.address), _Acc())
                completed = e.successful + e.errors
                if e.in_progress > MAX_IN_FLIGHT or completed > e.issued + MAX_IN_FLIGHT:
                    acc.garbage = True
                    continue
                acc.completed += completed
                acc.errors += e.errors
                acc.busy += e.in_progress * dt
                acc.seconds += dt
                acc.readings += 1

    def services(self) -> set[str]:
        """Services with reports not taken yet."""
        return {k[0] for k in self._acc} | set(self._nodes)

    def take(self, service: str, now: float) -> WindowTake:
        """The service's window since its last take (or since this window began)."""
        start = self._started.get(service, self._origin)
        self._started[service] = now
        out = WindowTake(seconds=max(0.0, now - start),
                         proxies=self._nodes.pop(service, set()))
        for key in [k for k in self._acc if k[0] == service]:
            acc = self._acc.pop(key)
            _, cls, address = key
            if acc.garbage:
                out.garbage.add(address)
                continue
            spacing = acc.seconds / acc.readings if acc.readings else 1.0
            sample = Sample(completed=acc.completed, busy=acc.busy, errors=acc.errors,
                            spacing=spacing)
            (out.online if cls is TrafficClass.ONLINE else out.batch)[address] = sample
        return out

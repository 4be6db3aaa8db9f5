"""Prometheus metrics of the control plane (served on ``/metrics``).

A private registry per process, so tests can run several apps side by side.
Implements ``xds.server.XdsObserver``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from controlplane.config import ObjectState, ObjectStatus

# The *_created series double the exposition for no use here.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Convergence is expected well under a second; the tail buckets catch storms.
CONVERGENCE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


def _short(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]


class Metrics:
    def __init__(self) -> None:
        self.on_nack: Callable[[str, str], None] | None = None
        self.registry = CollectorRegistry()
        r = self.registry
        self.pushes = Counter(
            "sluice_xds_pushes", "xDS responses sent", ["type", "variant"], registry=r
        )
        self.acks = Counter("sluice_xds_acks", "xDS ACKs received", ["type", "variant"], registry=r)
        self.nacks = Counter(
            "sluice_xds_nacks",
            "xDS NACKs received (config rejected by a proxy)",
            ["type", "variant"],
            registry=r,
        )
        self.stream_errors = Counter(
            "sluice_xds_stream_errors",
            "Streams ended for breaking the protocol",
            ["reason"],
            registry=r,
        )
        self.convergence = Histogram(
            "sluice_xds_convergence_seconds",
            "Time from a desired-state change to a proxy ACKing all of it",
            buckets=CONVERGENCE_BUCKETS,
            registry=r,
        )
        self.config_reloads = Counter(
            "sluice_config_reloads", "Configuration loads", ["source", "result"], registry=r
        )
        self.config_valid = Gauge(
            "sluice_config_valid",
            "1 when the latest load of a source was valid",
            ["source"],
            registry=r,
        )
        self.documents = Gauge(
            "sluice_config_documents",
            "Documents by kind and state (ok, frozen, rejected, held)",
            ["kind", "state"],
            registry=r,
        )
        self.snapshot_builds = Counter(
            "sluice_snapshot_builds", "Snapshots built and installed", registry=r
        )
        self.connected = Gauge("sluice_xds_connected_proxies", "Open xDS streams", registry=r)
        self.serializations = Gauge(
            "sluice_xds_resource_serializations",
            "Envoy resources serialized since start (each version once)",
            registry=r,
        )

    def observe_documents(self, statuses: Iterable[ObjectStatus]) -> None:
        counts = collections.Counter((s.kind or "unknown", s.state.value) for s in statuses)
        for kind in {k for k, _ in counts} | {"ModelService", "Experiment"}:
            for state in ObjectState:
                self.documents.labels(kind, state.value).set(counts.get((kind, state.value), 0))

    def bind(self, connected: Callable[[], int], serializations: Callable[[], int]) -> None:
        self.connected.set_function(lambda: float(connected()))
        self.serializations.set_function(lambda: float(serializations()))

    # XdsObserver
    def pushed(self, type_url: str, variant: str) -> None:
        self.pushes.labels(_short(type_url), variant).inc()

    def acked(self, type_url: str, variant: str) -> None:
        self.acks.labels(_short(type_url), variant).inc()

    def nacked(self, type_url: str, variant: str) -> None:
        self.nacks.labels(_short(type_url), variant).inc()
        if self.on_nack is not None:
            self.on_nack(type_url, variant)

    def count(self, event: str, type_url: str, variant: str, n: int) -> None:
        """``n`` pushes, ACKs or NACKs at once (as an xDS worker process reports them)."""
        counter = {"pushed": self.pushes, "acked": self.acks, "nacked": self.nacks}[event]
        counter.labels(_short(type_url), variant).inc(n)

    def converged(self, seconds: float) -> None:
        self.convergence.observe(seconds)

    def stream_error(self, reason: str) -> None:
        self.stream_errors.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""The one mutable owner of desired state (DESIGN §2).

Sources hand in loads; each is assembled against what that source served
before (``controlplane.config.assemble``), so a document with an error freezes
only itself. The rollout machine owns a service's traffic while an
experiment runs (and its outcome after): it sets a ``TrafficOverride`` —
weights, per-version endpoints (a rolling update), cohorts, mirrors. The
routing controller sets a ``RoutingState`` per service — per-endpoint weights
(by ``address:port``, applied to whatever endpoints the versions have, so it
never fights an experiment's membership) and the batch cap. The store merges
declared services, overrides and routing into one ``DesiredState``, bumps a
revision and wakes whoever builds snapshots.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from controlplane.config import Assembly, ConfigError, LoadResult, ObjectStatus, assemble
from controlplane.experiment import EXPERIMENT_KIND, Experiment
from controlplane.model import (
    DesiredState,
    Endpoint,
    LbPolicy,
    ModelService,
    RoutingState,
    SlowStart,
    TrafficShape,
)

# Pods discovered in Kubernetes ramp up over this window unless slowStart says otherwise.
DISCOVERY_SLOW_START_MS = 30_000


@dataclass(frozen=True)
class SourceStatus:
    name: str
    synced: bool  # delivered a load at least once
    errors: tuple[ConfigError, ...]  # of the latest load; documents with errors are frozen
    files: tuple[str, ...]
    revision: int  # store revision of the latest load that changed what serves
    rejected_loads: int  # loads that carried errors (the rest of them still applied)
    warnings: tuple[ConfigError, ...] = ()


@dataclass(frozen=True)
class TrafficOverride:
    """What an experiment (or its outcome) sets on one service, over the declared config."""

    owner: str  # e.g. "experiment/chat-canary"
    weights: tuple[tuple[str, float], ...]  # version -> percent; versions not named get 0
    endpoints: tuple[tuple[str, tuple[Endpoint, ...]], ...] = ()  # version -> endpoints
    traffic: TrafficShape = field(default_factory=TrafficShape)

    @staticmethod
    def of(owner: str, weights: Mapping[str, float], **kw: object) -> TrafficOverride:
        return TrafficOverride(owner, tuple(weights.items()), **kw)  # type: ignore[arg-type]

    @property
    def weight_map(self) -> dict[str, float]:
        return dict(self.weights)


class Store:
    def __init__(self, sources: tuple[str, ...]) -> None:
        self._assembly: dict[str, Assembly | None] = {s: None for s in sources}
        self._status = {s: SourceStatus(s, False, (), (), 0, 0) for s in sources}
        self._overrides: dict[str, TrafficOverride] = {}
        self._routing: dict[str, RoutingState] = {}
        # Kubernetes discovery: (service, version) -> endpoints found; problems that keep
        # /readyz failing (a watch RBAC forbids, a first list not done yet).
        self._discovered: dict[tuple[str, str], tuple[Endpoint, ...]] = {}
        self._conditions: dict[str, str] = {}
        self.revision = 0
        self.changed = asyncio.Event()
        self._state = DesiredState()
        self._declared = DesiredState()

    @property
    def state(self) -> DesiredState:
        """What serves: declared services with the overrides applied."""
        return self._state

    @property
    def declared(self) -> DesiredState:
        """The services as their documents declare them (last good versions)."""
        return self._declared

    @property
    def ready(self) -> bool:
        """Every source has delivered a load once (``/readyz``)."""
        return all(s.synced for s in self._status.values()) and not self._conditions

    def conditions(self) -> dict[str, str]:
        """What keeps the control plane from being ready besides unsynced sources."""
        return dict(self._conditions)

    def set_condition(self, key: str, message: str | None) -> None:
        if message is None:
            self._conditions.pop(key, None)
        else:
            self._conditions[key] = message

    def discovered(self, service: str) -> dict[str, tuple[Endpoint, ...]]:
        return {v: eps for (s, v), eps in self._discovered.items() if s == service}

    def set_discovered(self, service: str, version: str,
                       endpoints: tuple[Endpoint, ...] | None) -> bool:
        """Sets (or forgets) the endpoints Kubernetes discovery found for one version."""
        key = (service, version)
        if endpoints is None:
            if self._discovered.pop(key, None) is None:
                return False
        else:
            if self._discovered.get(key) == endpoints:
                return False
            self._discovered[key] = endpoints
        return self._remerge()

    def sources(self) -> list[SourceStatus]:
        return list(self._status.values())

    def statuses(self) -> list[ObjectStatus]:
        """Per document: ok, frozen (at its last good version), rejected or held."""
        return [st for a in self._assembly.values() if a is not None for st in a.statuses]

    def status_of(self, kind: str, name: str) -> ObjectStatus | None:
        return next((s for s in self.statuses() if s.kind == kind and s.name == name), None)

    def experiments(self) -> dict[str, Experiment]:
        """Every experiment whose document is valid (held ones included), by name."""
        found: dict[str, Experiment] = {}
        for assembly in self._assembly.values():
            for obj in assembly.of_kind(EXPERIMENT_KIND) if assembly else ():
                if isinstance(obj.value, Experiment):
                    found.setdefault(obj.name, obj.value)
        return found

    def override(self, service: str) -> TrafficOverride | None:
        return self._overrides.get(service)

    def overrides(self) -> dict[str, TrafficOverride]:
        return dict(self._overrides)

    def apply_load(self, source: str, load: LoadResult) -> bool:
        """Applies a load; returns whether what serves changed. Errors freeze only their
        documents (``statuses``)."""
        previous = self._assembly[source]
        assembly = assemble(load, previous)
        self._assembly[source] = assembly
        old = self._status[source]
        changed = self._remerge()
        self._status[source] = SourceStatus(
            source, True, assembly.errors, load.files or old.files,
            self.revision if changed or not old.synced else old.revision,
            old.rejected_loads + (1 if assembly.errors else 0), assembly.warnings,
        )
        return changed

    def set_override(self, service: str, override: TrafficOverride | None) -> bool:
        """Sets (or clears) the rollout machine's lever on one service."""
        if override is None:
            if self._overrides.pop(service, None) is None:
                return False
        else:
            if self._overrides.get(service) == override:
                return False
            self._overrides[service] = override
        return self._remerge()

    def routing(self, service: str) -> RoutingState | None:
        return self._routing.get(service)

    def routings(self) -> dict[str, RoutingState]:
        return dict(self._routing)

    def set_routing(self, service: str, routing: RoutingState | None) -> bool:
        """Sets (or clears) the routing controller's endpoint weights and batch cap."""
        if routing is None or routing == RoutingState():
            if self._routing.pop(service, None) is None:
                return False
        else:
            if self._routing.get(service) == routing:
                return False
            self._routing[service] = routing
        return self._remerge()

    def set_weights(self, service: str, weights: Mapping[str, float],
                    owner: str = "manual") -> bool:
        return self.set_override(service, TrafficOverride.of(owner, weights))

    def _remerge(self) -> bool:
        services: dict[str, ModelService] = {}
        for assembly in self._assembly.values():
            for service in assembly.state.services if assembly else ():
                services.setdefault(service.name, service)
        for name, service in services.items():
            if any(v.discovery is not None for v in service.versions):
                services[name] = with_discovered(service, self._discovered)
        self._declared = DesiredState(tuple(services[n] for n in sorted(services)))
        for name, override in self._overrides.items():
            found = services.get(name)
            if found is not None:
                services[name] = apply_override(found, override)
        for name, routing in self._routing.items():
            found = services.get(name)
            if found is not None:
                services[name] = replace(found, routing=routing)
        merged = DesiredState(tuple(services[n] for n in sorted(services)))
        if merged == self._state:
            return False
        self._state = merged
        self.revision += 1
        self.changed.set()
        return True


def apply_override(service: ModelService, override: TrafficOverride) -> ModelService:
    weights = override.weight_map
    endpoints = dict(override.endpoints)
    versions = tuple(
        replace(v, weight=weights.get(v.name, 0.0), endpoints=endpoints.get(v.name, v.endpoints))
        for v in service.versions
    )
    return replace(service, versions=versions, traffic=override.traffic)


def with_discovered(service: ModelService,
                    found: Mapping[tuple[str, str], tuple[Endpoint, ...]]) -> ModelService:
    """Discovered versions get the endpoints found (none yet: none), and the service slow
    start for pods that join, unless it set its own or its policy cannot ramp."""
    versions = tuple(
        replace(v, endpoints=found.get((service.name, v.name), ()))
        if v.discovery is not None else v for v in service.versions)
    policy = service.load_balancing.policy
    slow_start = service.slow_start
    if slow_start is None and (policy is LbPolicy.ROUND_ROBIN or policy.is_least_request):
        slow_start = SlowStart(window_ms=DISCOVERY_SLOW_START_MS)
    return replace(service, versions=versions, slow_start=slow_start)

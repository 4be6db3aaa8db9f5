"""The one mutable owner of desired state (DESIGN §2).

Sources hand in loads; each is assembled against what that source served
before (``controlplane.config.assemble``), so a document with an error freezes
only itself. The rollout machine owns a service's traffic while an
experiment runs (and its outcome after): it sets a ``TrafficOverride`` —
weights, per-version endpoints (a rolling update), cohorts, mirrors. The store
merges declared services and overrides into one ``DesiredState``, bumps a
revision and wakes whoever builds snapshots.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from controlplane.config import Assembly, ConfigError, LoadResult, ObjectStatus, assemble
from controlplane.experiment import EXPERIMENT_KIND, Experiment
from controlplane.model import DesiredState, Endpoint, ModelService, TrafficShape


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
        return all(s.synced for s in self._status.values())

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

    def set_weights(self, service: str, weights: Mapping[str, float],
                    owner: str = "manual") -> bool:
        return self.set_override(service, TrafficOverride.of(owner, weights))

    def _remerge(self) -> bool:
        services: dict[str, ModelService] = {}
        for assembly in self._assembly.values():
            for service in assembly.state.services if assembly else ():
                services.setdefault(service.name, service)
        self._declared = DesiredState(tuple(services[n] for n in sorted(services)))
        for name, override in self._overrides.items():
            found = services.get(name)
            if found is not None:
                services[name] = apply_override(found, override)
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

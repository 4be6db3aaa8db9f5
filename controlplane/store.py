"""The one mutable owner of desired state (DESIGN §2).

Sources replace the spec part (the services as configured); the rollout
machine (a later issue) owns the traffic weights. The store merges them into
one ``DesiredState``, bumps a revision and wakes whoever builds snapshots.
It also keeps what operators need to see when a source misbehaves: the last
error, and the fact that the last good configuration is still serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, replace

from controlplane.config import ConfigError
from controlplane.model import DesiredState, ModelService


@dataclass(frozen=True)
class SourceStatus:
    name: str
    synced: bool  # produced a valid configuration at least once
    errors: tuple[ConfigError, ...]  # of the latest attempt; empty when it was good
    files: tuple[str, ...]
    revision: int  # store revision of the last good configuration from this source
    rejected_loads: int  # how many loads were refused (the last good one kept serving)


class Store:
    def __init__(self, sources: tuple[str, ...]) -> None:
        self._spec: dict[str, DesiredState] = {s: DesiredState() for s in sources}
        self._status = {s: SourceStatus(s, False, (), (), 0, 0) for s in sources}
        self._weights: dict[str, Mapping[str, int]] = {}
        self.revision = 0
        self.changed = asyncio.Event()
        self._state = DesiredState()

    @property
    def state(self) -> DesiredState:
        return self._state

    @property
    def ready(self) -> bool:
        """Every source has produced a valid configuration once (``/readyz``)."""
        return all(s.synced for s in self._status.values())

    def sources(self) -> list[SourceStatus]:
        return list(self._status.values())

    def apply_source(
        self,
        source: str,
        state: DesiredState | None,
        errors: tuple[ConfigError, ...],
        files: tuple[str, ...] = (),
    ) -> bool:
        """Records a load. An invalid one changes nothing that serves."""
        old = self._status[source]
        if state is None or errors:
            self._status[source] = replace(
                old, errors=errors, files=files or old.files, rejected_loads=old.rejected_loads + 1
            )
            return False
        self._spec[source] = state
        merged = self._merge()
        changed = merged != self._state
        if changed:
            self._bump(merged)
        self._status[source] = replace(
            old, synced=True, errors=(), files=files, revision=self.revision
        )
        return changed

    def set_weights(self, service: str, weights: Mapping[str, int]) -> bool:
        """Overrides one service's version weights (the rollout machine's lever)."""
        self._weights[service] = dict(weights)
        merged = self._merge()
        if merged == self._state:
            return False
        self._bump(merged)
        return True

    def _bump(self, merged: DesiredState) -> None:
        self._state = merged
        self.revision += 1
        self.changed.set()

    def _merge(self) -> DesiredState:
        services: dict[str, ModelService] = {}
        for spec in self._spec.values():
            for service in spec.services:
                services.setdefault(service.name, service)
        for name, weights in self._weights.items():
            found = services.get(name)
            if found is None:
                continue
            versions = tuple(
                replace(v, weight=weights.get(v.name, v.weight)) for v in found.versions
            )
            services[name] = replace(found, versions=versions)
        return DesiredState(tuple(services[n] for n in sorted(services)))

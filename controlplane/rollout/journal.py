"""Durable records of experiment runs: state, every look, every decision, outcomes.

Backed by the ``--state`` SQLite store (``controlplane.state``), ConfigMaps in
Kubernetes mode (``controlplane.kube.journal``), or memory when there is none.
Records, by kind:

- ``("experiment", NAME)``: the run's ``RolloutState`` and what it reports
  (A/B result, switch window), rewritten at every transition;
- events ``("experiment-look", NAME)``: each look's windows (in the JSON-lines
  form ``sluice replay`` reads), the judgment and the decision;
- events ``("experiment-decision", NAME)``: each transition with its reason;
- ``("outcome", SERVICE)``: the traffic a finished run left in force and the
  declared weights at that time (the outcome holds until those are edited).

Durable first: the runner writes here before it changes any traffic.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from controlplane.state import Event, Record, StateError

log = logging.getLogger("sluice.rollout")

RUN, LOOK, DECISION, OUTCOME = "experiment", "experiment-look", "experiment-decision", "outcome"
MAX_LOOKS = 100_000  # per experiment, read back when a run is restored


class DurableStore(Protocol):
    """Where records survive: the SQLite ``StateStore``, or ConfigMaps in Kubernetes mode
    (``controlplane.kube.journal``). Failures raise ``StateError``."""

    def put(self, kind: str, name: str, value: Mapping[str, Any]) -> int: ...
    def get(self, kind: str, name: str) -> Record | None: ...
    def list(self, kind: str) -> builtins.list[Record]: ...
    def delete(self, kind: str, name: str) -> bool: ...
    def append_event(self, kind: str, name: str, event: Mapping[str, Any]) -> int: ...
    def events(self, kind: str, name: str, limit: int = 100) -> builtins.list[Event]: ...


class Journal:
    def __init__(self, store: DurableStore | None = None) -> None:
        self._store = store
        self._records: dict[tuple[str, str], dict[str, Any]] = {}
        self._events: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.failures = 0  # writes that failed (the run holds rather than act unrecorded)

    @property
    def durable(self) -> bool:
        return self._store is not None

    # -- records

    def put(self, kind: str, name: str, value: Mapping[str, Any]) -> bool:
        """Writes; False when the durable store refused (disk full, read-only)."""
        if self._store is None:
            self._records[(kind, name)] = dict(value)
            return True
        try:
            self._store.put(kind, name, value)
        except StateError as exc:
            self.failures += 1
            log.error("cannot record %s/%s: %s", kind, name, exc)
            return False
        return True

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        if self._store is None:
            found = self._records.get((kind, name))
            return dict(found) if found is not None else None
        record = self._store.get(kind, name)
        return dict(record.value) if record is not None else None

    def delete(self, kind: str, name: str) -> None:
        if self._store is None:
            self._records.pop((kind, name), None)
            return
        try:
            self._store.delete(kind, name)
        except StateError as exc:
            log.error("cannot delete %s/%s: %s", kind, name, exc)

    def all(self, kind: str) -> dict[str, dict[str, Any]]:
        if self._store is None:
            return {n: dict(v) for (k, n), v in self._records.items() if k == kind}
        return {r.name: dict(r.value) for r in self._store.list(kind)}

    # -- events

    def append(self, kind: str, name: str, event: Mapping[str, Any]) -> bool:
        if self._store is None:
            self._events.setdefault((kind, name), []).append(dict(event))
            return True
        try:
            self._store.append_event(kind, name, event)
        except StateError as exc:
            self.failures += 1
            log.error("cannot record %s/%s: %s", kind, name, exc)
            return False
        return True

    def events(self, kind: str, name: str, run: str | None = None,
               limit: int = MAX_LOOKS) -> list[dict[str, Any]]:
        """Oldest first; only those of ``run`` when given."""
        if self._store is None:
            found = self._events.get((kind, name), [])[-limit:]
        else:
            found = [dict(e.event) for e in self._store.events(kind, name, limit)]
        return [e for e in found if run is None or e.get("run") == run]

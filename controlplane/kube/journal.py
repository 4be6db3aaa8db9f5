"""The rollout journal's durable records in ConfigMaps, where a new leader reads them.

The same methods as the SQLite ``StateStore`` (``put``/``get``/``list``/
``delete``/``append_event``/``events``), over ConfigMaps in Sluice's
namespace: one per record (a run's state, an outcome), and chunks of at most
``chunk_bytes`` for the bulky event streams (looks, decisions), each written
with the ``resourceVersion`` it read, so a replica that lost the lead and
still writes gets ``409 Conflict`` instead of overwriting its successor.

Records and decisions are written at once (a few per step, and the runner
writes them before it moves traffic: durable first); looks are queued and
written by ``flush`` (a background task, and before every other write). A
leader that dies may lose the looks of its last second, never a transition.
``load`` reads everything when a replica starts to lead.
"""

from __future__ import annotations

import builtins
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.kube import MANAGED_BY
from controlplane.kube.client import CONFIG_MAPS, Kube, KubeError, Obj
from controlplane.state import Event, Record, StateError, encode

ROLE = "sluice.dev/journal"  # label: record | events
KIND, NAME, CHUNK = "sluice.dev/kind", "sluice.dev/name", "sluice.dev/chunk"


@dataclass
class _Chunk:
    name: str  # the ConfigMap
    number: int
    events: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0
    resource_version: str = ""
    dirty: bool = False


class KubeStateStore:
    def __init__(self, kube: Kube, namespace: str, *, chunk_bytes: int = 100_000,
                 clock: Callable[[], float] = time.time,
                 queued: tuple[str, ...] = ("experiment-look",)) -> None:
        self.kube = kube
        self.namespace = namespace
        self.chunk_bytes = chunk_bytes
        self.clock = clock
        self.queued = queued  # event kinds written by ``flush`` rather than at once
        self._records: dict[tuple[str, str], tuple[Mapping[str, Any], str, float]] = {}
        self._chunks: dict[tuple[str, str], list[_Chunk]] = {}
        self._seq = 0
        self._lock = threading.RLock()

    # -- loading (a new leader)

    def load(self) -> None:
        body = self.kube.list(CONFIG_MAPS, self.namespace, ROLE)
        records: dict[tuple[str, str], tuple[Mapping[str, Any], str, float]] = {}
        chunks: dict[tuple[str, str], list[_Chunk]] = {}
        seq = 0
        for cm in body.get("items") or []:
            meta = cm.get("metadata") or {}
            notes, data = meta.get("annotations") or {}, cm.get("data") or {}
            key = (str(notes.get(KIND, "")), str(notes.get(NAME, "")))
            rv = str(meta.get("resourceVersion", ""))
            try:
                if (meta.get("labels") or {}).get(ROLE) == "record":
                    value = json.loads(data.get("value", "{}"))
                    records[key] = (value, rv, float(data.get("updatedAt", "0")))
                    continue
                events = json.loads(data.get("events", "[]"))
            except ValueError:
                continue  # unreadable: the runner starts that experiment afresh
            chunk = _Chunk(meta["name"], int(notes.get(CHUNK, "0")), events,
                           len(data.get("events", "")), rv)
            chunks.setdefault(key, []).append(chunk)
            seq = max([seq, *(int(e.get("seq", 0)) for e in events)])
        with self._lock:
            self._records = records
            self._chunks = {k: sorted(v, key=lambda c: c.number) for k, v in chunks.items()}
            self._seq = seq

    # -- records

    def put(self, kind: str, name: str, value: Mapping[str, Any], *,
            expected_revision: int | None = None) -> int:
        body = encode(value, f"{kind}/{name}")
        with self._lock:
            self.flush()
            old = self._records.get((kind, name))
            now = self.clock()
            cm = self._config_map(f"sluice-r-{kind}-{name}", "record", kind, name,
                                  {"value": body, "updatedAt": repr(now)},
                                  old[1] if old else "")
            rv = self._write(cm)
            self._records[(kind, name)] = (json.loads(body), rv, now)
            return int(rv) if rv.isdigit() else 0

    def get(self, kind: str, name: str) -> Record | None:
        with self._lock:
            found = self._records.get((kind, name))
        if found is None:
            return None
        value, rv, at = found
        return Record(kind, name, value, int(rv) if rv.isdigit() else 0, at)

    def list(self, kind: str) -> builtins.list[Record]:
        with self._lock:
            names = sorted(n for k, n in self._records if k == kind)
        return [r for n in names if (r := self.get(kind, n)) is not None]

    def delete(self, kind: str, name: str) -> bool:
        with self._lock:
            if self._records.pop((kind, name), None) is None:
                return False
            try:
                self.kube.delete(CONFIG_MAPS, self.namespace, f"sluice-r-{kind}-{name}")
            except KubeError as exc:
                raise StateError(f"cannot delete {kind}/{name}: {exc.describe()}") from exc
            return True

    # -- events

    def append_event(self, kind: str, name: str, event: Mapping[str, Any]) -> int:
        text = encode(event, f"event of {kind}/{name}")
        with self._lock:
            self._seq += 1
            entry = {"seq": self._seq, "at": self.clock(), "event": json.loads(text)}
            chunks = self._chunks.setdefault((kind, name), [])
            if not chunks or chunks[-1].size + len(text) > self.chunk_bytes:
                number = chunks[-1].number + 1 if chunks else 0
                chunks.append(_Chunk(f"sluice-e-{kind}-{name}-{number:04d}", number))
            chunk = chunks[-1]
            chunk.events.append(entry)
            chunk.size += len(text) + 40
            chunk.dirty = True
            if kind not in self.queued:  # a decision is stored before it is acted on
                self.flush()
            return self._seq

    def events(self, kind: str, name: str, limit: int = 100) -> builtins.list[Event]:
        with self._lock:
            entries = [e for c in self._chunks.get((kind, name), []) for e in c.events]
        return [Event(kind, name, int(e["seq"]), float(e["at"]), e["event"])
                for e in entries[-limit:]] if limit > 0 else []

    def flush(self) -> None:
        """Writes the queued events (blocking; raises ``StateError`` when refused)."""
        with self._lock:
            for (kind, name), chunks in self._chunks.items():
                for chunk in chunks:
                    if not chunk.dirty:
                        continue
                    cm = self._config_map(chunk.name, "events", kind, name,
                                          {"events": json.dumps(chunk.events,
                                                                separators=(",", ":"))},
                                          chunk.resource_version, chunk.number)
                    chunk.resource_version = self._write(cm)
                    chunk.dirty = False

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(c.dirty for cs in self._chunks.values() for c in cs)

    # -- ConfigMaps

    def _config_map(self, cm_name: str, role: str, kind: str, name: str, data: dict[str, str],
                    resource_version: str, chunk: int | None = None) -> Obj:
        notes = {KIND: kind, NAME: name}
        if chunk is not None:
            notes[CHUNK] = str(chunk)
        meta: Obj = {"name": cm_name, "namespace": self.namespace,
                     "labels": {**MANAGED_BY, ROLE: role}, "annotations": notes}
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}

    def _write(self, cm: Obj) -> str:
        meta = cm["metadata"]
        try:
            if meta.get("resourceVersion"):
                done = self.kube.replace(CONFIG_MAPS, self.namespace, meta["name"], cm)
            else:
                done = self.kube.create(CONFIG_MAPS, self.namespace, cm)
        except KubeError as exc:
            raise StateError(f"ConfigMap {self.namespace}/{meta['name']}: "
                             f"{exc.describe()}") from exc
        return str((done.get("metadata") or {}).get("resourceVersion", ""))


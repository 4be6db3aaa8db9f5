"""What a load adds up to, given what served before: one bad document freezes only itself.

Pure: ``assemble(load, previous)`` returns the effective objects and a status
per object. The rules:

- A document with an error keeps its object at its last good version
  (``frozen``); a document that never loaded cleanly is ``rejected``.
- An object disappears only when the file that defined it loaded completely
  (every document in it parsed and named) without it. Objects of a file that
  could not be read or parsed, or that holds a document whose name cannot be
  read, stay at their last good version.
- A new or changed object is checked against those accepted so far
  (duplicates, conflicting listeners, references); objects that served before
  go first, so a conflicting edit is refused rather than knocking out what is
  serving. Kinds are taken in ``KindDef.order`` (services before experiments).
- A valid object that depends on a missing or frozen one (an experiment whose
  service's document is broken) is ``held``, with the reason.

Foreign YAML (no ``apiVersion: sluice.dev/...``) was already skipped with a
warning by the loader.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from controlplane.config.errors import ConfigError, Errors
from controlplane.config.kinds import Document, LoadedObject, assembly_order, kind_def
from controlplane.config.loader import DocumentResult, LoadResult
from controlplane.model import MODEL_SERVICE_KIND, DesiredState, ModelService

Key = tuple[str, str]  # (kind, name)


class ObjectState(enum.Enum):
    OK = "ok"
    FROZEN = "frozen"  # its document has errors; the last good version serves
    REJECTED = "rejected"  # its document has errors and it never loaded cleanly
    HELD = "held"  # valid, but something it refers to is missing or frozen


@dataclass(frozen=True)
class ObjectStatus:
    kind: str
    name: str | None
    file: str
    line: int
    state: ObjectState
    errors: tuple[ConfigError, ...] = ()
    reason: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind, "name": self.name, "file": self.file, "line": self.line,
            "state": self.state.value, "errors": [str(e) for e in self.errors],
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Assembly:
    objects: Mapping[Key, LoadedObject]  # what serves, in kind order then load order
    statuses: tuple[ObjectStatus, ...]
    errors: tuple[ConfigError, ...]  # every error of this load, sorted by file and line
    warnings: tuple[ConfigError, ...]

    @property
    def state(self) -> DesiredState:
        services = [o.value for o in self.objects.values()
                    if o.kind == MODEL_SERVICE_KIND and isinstance(o.value, ModelService)]
        return DesiredState(tuple(sorted(services, key=lambda s: s.name)))

    def of_kind(self, kind: str) -> list[LoadedObject]:
        return [o for o in self.objects.values() if o.kind == kind]

    def status(self, kind: str, name: str) -> ObjectStatus | None:
        return next((s for s in self.statuses if s.kind == kind and s.name == name), None)


class _Accepted:
    def __init__(self, objects: dict[Key, LoadedObject], hidden: Key | None = None) -> None:
        self._objects = objects
        self._hidden = hidden

    def get(self, kind: str, name: str) -> LoadedObject | None:
        key = (kind, name)
        return None if key == self._hidden else self._objects.get(key)

    def of_kind(self, kind: str) -> list[LoadedObject]:
        return [o for k, o in self._objects.items() if k[0] == kind and k != self._hidden]


def _uncertain_files(load: LoadResult) -> set[str]:
    """Files whose objects may still exist even though this load did not see them."""
    files = {e.file for e in load.file_errors}
    files.update(d.file for d in load.documents if d.name is None)
    return files


def assemble(load: LoadResult, previous: Assembly | None) -> Assembly:
    prev = dict(previous.objects) if previous is not None else {}
    uncertain = _uncertain_files(load)
    seen = {(d.kind, d.name) for d in load.documents if d.name is not None}
    accepted = {k: o for k, o in prev.items() if k in seen or o.file in uncertain}
    errors: list[ConfigError] = list(load.file_errors)
    warnings: list[ConfigError] = list(load.warnings)
    statuses: dict[Key, ObjectStatus] = {}
    broken: set[Key] = set()
    unnamed: list[ObjectStatus] = []
    first: dict[Key, DocumentResult] = {}
    rank = {kd.kind: i for i, kd in enumerate(assembly_order())}
    documents = sorted(load.documents, key=lambda d: rank.get(d.kind, len(rank)))
    for d in documents:
        warnings.extend(d.warnings)
        problems = list(d.errors)
        if d.name is None:
            errors.extend(problems)
            unnamed.append(ObjectStatus(d.kind, None, d.file, d.line, ObjectState.REJECTED,
                                        tuple(problems)))
            continue
        key = (d.kind, d.name)
        if key in first:
            problems.append(_duplicate(d, first[key]))
        else:
            first[key] = d
        if not problems and d.value is not None:
            old = prev.get(key)
            if old is None or old.value != d.value:
                problems.extend(_check_against(d, accepted, key))
        errors.extend(problems)
        if problems:
            if key in statuses and statuses[key].state is ObjectState.OK:
                continue  # a later duplicate: the first document stands
            broken.add(key)
            state = ObjectState.FROZEN if key in accepted else ObjectState.REJECTED
            statuses[key] = ObjectStatus(d.kind, d.name, d.file, d.line, state,
                                         tuple(problems))
            continue
        accepted[key] = LoadedObject(d.kind, d.name, d.file, d.line, d.value)
        statuses[key] = ObjectStatus(d.kind, d.name, d.file, d.line, ObjectState.OK)
    for key, obj in accepted.items():
        if key not in statuses:  # not seen: its file could not be read or parsed
            broken.add(key)
            statuses[key] = ObjectStatus(
                obj.kind, obj.name, obj.file, obj.line, ObjectState.FROZEN,
                reason=f"{obj.file} did not load; the last good version serves")
    _hold_dependents(accepted, statuses, broken)
    ordered = dict(sorted(accepted.items(), key=lambda kv: rank.get(kv[0][0], len(rank))))
    order = {name: i for i, name in enumerate(load.sources)}
    return Assembly(
        ordered,
        (*unnamed, *statuses.values()),
        tuple(_sorted(errors, order)),
        tuple(_sorted(warnings, order)),
    )


def _duplicate(d: DocumentResult, first: DocumentResult) -> ConfigError:
    assert d.doc is not None and d.doc.name_value is not None
    mark = d.doc.name_value.mark
    there = first.doc.name_value.mark if first.doc and first.doc.name_value else None
    where = f"{first.file}:{there.line}:{there.column}" if there else f"{first.file}:{first.line}"
    return ConfigError(d.file, mark.line, mark.column, "metadata.name",
                       f"duplicate {d.kind} name '{d.name}' (first defined at {where})")


def _check_against(d: DocumentResult, accepted: dict[Key, LoadedObject],
                   key: Key) -> list[ConfigError]:
    kd = kind_def(d.kind)
    if kd is None or d.doc is None:
        return []
    found = Errors()
    kd.check_against(d.doc, d.value, _Accepted(accepted, hidden=key), found)
    return found.items


def _hold_dependents(accepted: Mapping[Key, LoadedObject], statuses: dict[Key, ObjectStatus],
                     broken: set[Key]) -> None:
    for key, obj in accepted.items():
        kd = kind_def(obj.kind)
        if kd is None or statuses[key].state is not ObjectState.OK:
            continue
        reasons = []
        for ref in kd.references(obj.value):
            if ref not in accepted:
                reasons.append(f"{ref[0]} '{ref[1]}' does not exist")
            elif ref in broken:
                reasons.append(f"{ref[0]} '{ref[1]}' has errors and is frozen at its last "
                               "good version")
        if reasons:
            statuses[key] = ObjectStatus(obj.kind, obj.name, obj.file, obj.line,
                                         ObjectState.HELD, reason="; ".join(reasons))


def _sorted(items: Iterable[ConfigError], order: Mapping[str, int]) -> list[ConfigError]:
    return sorted(items, key=lambda e: (order.get(e.file, len(order)), e.line, e.column))


def document_of(d: DocumentResult) -> Document:
    assert d.doc is not None
    return d.doc

"""Document kinds: a registry of kind → shape, checks and builder.

A kind plugs in with one ``register_kind(KindDef(...))``: the loader checks the
Kubernetes-shaped envelope (``apiVersion``, ``kind``, ``metadata``, ``spec``)
against ``KindDef.spec``, runs the kind's own cross-field checks and builds the
frozen object of each document that has no error. Assembly
(``controlplane.config.assemble``) then checks each new or changed object
against the others (conflicts, references); every error freezes only its own
document.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import yaml

from controlplane.config.errors import Errors, Mark
from controlplane.config.fields import Field, Obj, Str, Value
from controlplane.config.shapes import METADATA


@dataclass(frozen=True)
class Document:
    """One checked document of a registered kind."""

    file: str
    kind: str
    root: Value

    @property
    def name(self) -> str | None:
        metadata = self.root.get("metadata")
        name = metadata.get("name") if metadata is not None else None
        return name.text() if name is not None else None

    @property
    def name_value(self) -> Value | None:
        metadata = self.root.get("metadata")
        return metadata.get("name") if metadata is not None else None

    @property
    def label(self) -> str:
        """The name as written, even when it is not a valid name (for messages)."""
        metadata = self.root.get("metadata")
        name = metadata.fields().get("name") if metadata is not None else None
        if name is not None and isinstance(name.node, yaml.ScalarNode):
            return str(name.node.value)
        return "(unnamed)"

    @property
    def spec(self) -> Value | None:
        return self.root.get("spec")

    def error(self, errors: Errors, at: Value | Mark, path: str, message: str) -> None:
        errors.add(self.file, at if isinstance(at, Mark) else at.key_mark, path, message)


@dataclass(frozen=True)
class LoadedObject:
    """One built document: a ``ModelService``, an ``Experiment`` or another registered kind."""

    kind: str
    name: str
    file: str
    line: int
    value: object

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


class Accepted(Protocol):
    """The objects accepted so far in an assembly (read-only), for rules across documents."""

    def get(self, kind: str, name: str) -> LoadedObject | None: ...
    def of_kind(self, kind: str) -> list[LoadedObject]: ...


def _no_cross_check(doc: Document, value: object, accepted: Accepted, errors: Errors) -> None:
    return None


def _no_references(value: object) -> tuple[tuple[str, str], ...]:
    return ()


@dataclass(frozen=True)
class KindDef:
    kind: str
    api_version: str
    spec: Obj
    # Rules across the fields of one document (called with a checked, possibly partial tree).
    check: Callable[[Document, Errors], None]
    # Builds the frozen object; called only when the document has no error of its own.
    build: Callable[[Document], object]
    # Rules against other documents (conflicts, references), checked on a new or changed
    # object against what is accepted so far; errors freeze only this document.
    check_against: Callable[[Document, object, Accepted, Errors], None] = _no_cross_check
    # The (kind, name) objects this one depends on: while one is missing or frozen,
    # this object is held (valid, but waiting).
    references: Callable[[object], tuple[tuple[str, str], ...]] = _no_references
    # Kinds are assembled in this order (what others refer to comes first).
    order: int = 0
    description: str = ""
    # Warnings of one document (validate prints them; nothing is frozen by them).
    advise: Callable[[Document, Errors], None] | None = None

    def envelope(self) -> Obj:
        return Obj(
            description=self.description,
            fields=(
                Field("apiVersion", Str(enum=(self.api_version,)), "API version.",
                      required=True),
                Field("kind", Str(enum=(self.kind,)), "Document kind.", required=True),
                Field("metadata", METADATA, "Object metadata.", required=True),
                Field("spec", self.spec, self.spec.description, required=True),
            ),
        )


_KINDS: dict[str, KindDef] = {}


def register_kind(kind: KindDef) -> None:
    if kind.kind in _KINDS and _KINDS[kind.kind] is not kind:
        raise ValueError(f"kind {kind.kind!r} is already registered")
    _KINDS[kind.kind] = kind


def unregister_kind(kind: str) -> None:
    _KINDS.pop(kind, None)


def kind_def(kind: str) -> KindDef | None:
    return _KINDS.get(kind)


def known_kinds() -> tuple[str, ...]:
    return tuple(_KINDS)


def assembly_order() -> tuple[KindDef, ...]:
    return tuple(sorted(_KINDS.values(), key=lambda k: k.order))

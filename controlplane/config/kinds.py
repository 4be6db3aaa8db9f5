"""Document kinds: a registry of kind → shape, checks and builder.

A kind plugs in with one ``register_kind(KindDef(...))``: the loader checks the
Kubernetes-shaped envelope (``apiVersion``, ``kind``, ``metadata``, ``spec``)
against ``KindDef.spec``, then runs the kind's own cross-field checks per
document and across all documents (duplicate names, references to objects of
other kinds), and builds the frozen objects only when nothing was reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

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


# All documents of the load, by kind, in load order.
Documents = Mapping[str, Sequence[Document]]


def _no_cross_check(documents: Documents, errors: Errors) -> None:
    return None


@dataclass(frozen=True)
class KindDef:
    kind: str
    api_version: str
    spec: Obj
    # Rules across the fields of one document (called with a checked, possibly partial tree).
    check: Callable[[Document, Errors], None]
    # Builds the frozen object; called only when the whole load has no error.
    build: Callable[[Document], object]
    # Rules across documents (duplicates, references), over all kinds.
    check_all: Callable[[Documents, Errors], None] = _no_cross_check
    description: str = ""

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

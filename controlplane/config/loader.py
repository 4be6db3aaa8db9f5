"""Loading documents from files, directories and text into the desired state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from controlplane.config.errors import FILE_START, ConfigError, Errors, Mark
from controlplane.config.fields import Checker, TooLarge, describe
from controlplane.config.kinds import Document, kind_def, known_kinds, register_kind
from controlplane.config.modelservice import MODEL_SERVICE
from controlplane.model import MODEL_SERVICE_KIND, DesiredState, ModelService

# libyaml's parser keeps the same marks (line and column) and is ~13x faster at
# composing; a reload of a large config directory is on the convergence path.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

register_kind(MODEL_SERVICE)

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LoadedObject:
    """One built document: a ``ModelService`` or an object of another registered kind."""

    kind: str
    name: str
    file: str
    line: int
    value: object


@dataclass(frozen=True)
class LoadResult:
    state: DesiredState | None  # None when there are errors
    errors: tuple[ConfigError, ...]
    files: tuple[str, ...]  # files that were read
    objects: tuple[LoadedObject, ...] = ()  # every built document, by kind, in load order

    @property
    def ok(self) -> bool:
        return not self.errors


def load_text(text: str, filename: str = "<string>") -> LoadResult:
    load = _Load()
    load.add_text(text, filename)
    return load.finish()


def load_paths(paths: Sequence[str | Path]) -> LoadResult:
    """Files, or directories (every ``*.yaml`` / ``*.yml`` in it, sorted, not recursive)."""
    load = _Load()
    seen: set[Path] = set()
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())
        else:
            files = [path]
        for file in files:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                load.add_file(file)
    return load.finish()


def _shown(node: yaml.Node) -> str:
    if node.tag == "tag:yaml.org,2002:str":
        return repr(node.value)
    return describe(node)


class _Load:
    def __init__(self) -> None:
        self.errors = Errors()
        self.sources: list[str] = []  # every file tried, for ordering the errors
        self.files: list[str] = []
        self.documents: dict[str, list[Document]] = {}

    def add_file(self, path: Path) -> None:
        name = str(path)
        self.sources.append(name)
        try:
            raw = path.read_bytes()
        except OSError as e:
            self.errors.add(name, FILE_START, "", f"cannot read: {e.strerror or e}")
            return
        self.files.append(name)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            self.errors.add(name, FILE_START, "", f"not UTF-8 text (byte {e.start})")
            return
        self._documents(text, name)

    def add_text(self, text: str, name: str) -> None:
        self.sources.append(name)
        self.files.append(name)
        self._documents(text, name)

    def _documents(self, text: str, file: str) -> None:
        try:
            nodes = list(yaml.compose_all(text, Loader=_LOADER))
        except yaml.YAMLError:
            pass  # reported below by the pure parser, whose messages read better
        else:
            for node in nodes:
                self._document(node, file)
            return
        try:
            for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
                self._document(node, file)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            where = Mark(mark.line + 1, mark.column + 1) if mark is not None else FILE_START
            context = f"{e.context}: " if e.context else ""
            self.errors.add(file, where, "", f"YAML syntax error: {context}{e.problem}")
        except yaml.YAMLError as e:
            self.errors.add(file, FILE_START, "", f"YAML error: {e}")

    def _document(self, node: yaml.Node, file: str) -> None:
        if node.tag == "tag:yaml.org,2002:null" and node.value == "":
            return  # an empty document between two '---'
        kinds = ", ".join(known_kinds())
        if not isinstance(node, yaml.MappingNode):
            self.errors.add(file, Mark.of(node), "",
                            f"expected a mapping with apiVersion, kind, metadata and spec, "
                            f"got {describe(node)}")
            return
        kind_node = next((v for k, v in node.value if k.value == "kind"), None)
        if kind_node is None:
            self.errors.add(file, Mark.of(node), "kind",
                            f"missing required field 'kind' (known kinds: {kinds})")
            return
        kd = kind_def(kind_node.value) if isinstance(kind_node, yaml.ScalarNode) else None
        if kd is None or kind_node.tag != "tag:yaml.org,2002:str":
            self.errors.add(file, Mark.of(kind_node), "kind",
                            f"unknown kind {_shown(kind_node)}; known kinds: {kinds}")
            return
        try:
            root = Checker(file, self.errors).check(node, kd.envelope(), "", None)
        except TooLarge:
            self.errors.add(file, Mark.of(node), "",
                            f"document too large (more than {Checker.MAX_NODES} nodes)")
            return
        doc = Document(file, kd.kind, root)
        kd.check(doc, self.errors)
        self.documents.setdefault(kd.kind, []).append(doc)

    def finish(self) -> LoadResult:
        for kind in known_kinds():
            kd = kind_def(kind)
            assert kd is not None
            kd.check_all(self.documents, self.errors)
        order = {name: i for i, name in enumerate(dict.fromkeys(self.sources))}
        errors = tuple(sorted(
            self.errors.items, key=lambda e: (order.get(e.file, len(order)), e.line, e.column)
        ))
        if errors:
            return LoadResult(None, errors, tuple(self.files))
        objects: list[LoadedObject] = []
        for kind, docs in self.documents.items():
            kd = kind_def(kind)
            assert kd is not None
            for doc in docs:
                assert doc.name is not None
                line = doc.root.mark.line
                objects.append(LoadedObject(kind, doc.name, doc.file, line, kd.build(doc)))
        services = sorted(
            (o.value for o in objects if isinstance(o.value, ModelService)
             and o.kind == MODEL_SERVICE_KIND),
            key=lambda s: s.name,
        )
        return LoadResult(DesiredState(tuple(services)), (), tuple(self.files), tuple(objects))

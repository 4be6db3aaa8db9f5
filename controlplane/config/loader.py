"""Reading files, directories and text into per-document results.

Each document is checked on its own: an error in one document never stops
another from loading. What the documents add up to, given what served before,
is ``controlplane.config.assemble``; ``LoadResult.state``/``errors``/``objects``
are the standalone assembly (nothing served before), which is what
``sluice validate`` reports.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from controlplane.config.errors import FILE_START, ConfigError, Errors, Mark, excerpt
from controlplane.config.fields import Checker, TooLarge, describe
from controlplane.config.kinds import Document, LoadedObject, kind_def, known_kinds
from controlplane.model import DesiredState

if TYPE_CHECKING:
    from controlplane.config.assemble import Assembly

# libyaml's parser keeps the same marks (line and column) and is ~13x faster at
# composing; a reload of a large config directory is on the convergence path.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

YAML_SUFFIXES = (".yaml", ".yml")
API_GROUP = "sluice.dev/"
# Larger files are refused before parsing (a Kubernetes ConfigMap holds at most
# 1 MiB too); so are files with more documents than this.
MAX_FILE_BYTES = 1 << 20
MAX_DOCUMENTS_PER_FILE = 1_000


@dataclass(frozen=True)
class DocumentResult:
    """One Sluice document of a load: its own errors, and the built object when it has none."""

    kind: str
    name: str | None  # None when metadata.name is missing or invalid
    file: str
    line: int
    errors: tuple[ConfigError, ...]
    warnings: tuple[ConfigError, ...] = ()
    value: object | None = None
    doc: Document | None = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name or '(unnamed)'}"


@dataclass(frozen=True)
class LoadResult:
    documents: tuple[DocumentResult, ...]
    file_errors: tuple[ConfigError, ...]  # a file that could not be read or parsed
    warnings: tuple[ConfigError, ...]  # skipped foreign files and documents, advice
    files: tuple[str, ...]  # files that were read
    sources: tuple[str, ...] = ()  # every file tried, in order (for sorting messages)

    @functools.cached_property
    def standalone(self) -> Assembly:
        from controlplane.config.assemble import assemble

        return assemble(self, None)

    @property
    def errors(self) -> tuple[ConfigError, ...]:
        return self.standalone.errors

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def state(self) -> DesiredState | None:
        """The services, or None when anything has an error (all or nothing, as validate)."""
        return None if self.errors else self.standalone.state

    @property
    def objects(self) -> tuple[LoadedObject, ...]:
        return () if self.errors else tuple(self.standalone.objects.values())


def load_text(text: str, filename: str = "<string>") -> LoadResult:
    load = _Load()
    load.add_text(text, filename)
    return load.finish()


def load_documents(texts: Sequence[tuple[str, str]]) -> LoadResult:
    """Named texts, each its own "file" (custom resources: ``k8s:NAMESPACE/KIND/NAME``)."""
    load = _Load()
    for name, text in texts:
        load.add_text(text, name)
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
        return excerpt(node.value)
    return describe(node)


def _scalar(node: yaml.MappingNode, key: str) -> yaml.Node | None:
    return next((v for k, v in node.value if getattr(k, "value", None) == key), None)


class _Load:
    def __init__(self) -> None:
        self.file_errors = Errors()
        self.warnings = Errors()
        self.sources: list[str] = []  # every file tried, for ordering the errors
        self.files: list[str] = []
        self.documents: list[DocumentResult] = []

    def add_file(self, path: Path) -> None:
        name = str(path)
        self.sources.append(name)
        try:
            with path.open("rb") as fh:
                raw = fh.read(MAX_FILE_BYTES + 1)
        except OSError as e:
            self.file_errors.add(name, FILE_START, "", f"cannot read: {e.strerror or e}")
            return
        self.files.append(name)
        if len(raw) > MAX_FILE_BYTES:
            self.file_errors.add(name, FILE_START, "",
                                 f"file too large: more than {MAX_FILE_BYTES:,} bytes "
                                 "(split it into several files)")
            return
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            self.file_errors.add(name, FILE_START, "", f"not UTF-8 text (byte {e.start})")
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
            self._all(nodes, file)
            return
        nodes = []
        try:
            for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
                nodes.append(node)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            where = Mark(mark.line + 1, mark.column + 1) if mark is not None else FILE_START
            context = f"{e.context}: " if e.context else ""
            self.file_errors.add(file, where, "", f"YAML syntax error: {context}{e.problem}")
        except yaml.YAMLError as e:
            self.file_errors.add(file, FILE_START, "", f"YAML error: {excerpt(e, 200)}")
        # The documents before the syntax error still load on their own.
        self._all(nodes, file)

    def _all(self, nodes: list[yaml.Node], file: str) -> None:
        if len(nodes) > MAX_DOCUMENTS_PER_FILE:
            self.file_errors.add(file, FILE_START, "",
                                 f"too many documents: {len(nodes):,} (at most "
                                 f"{MAX_DOCUMENTS_PER_FILE:,} per file)")
            return
        for node in nodes:
            self._document(node, file)

    def _foreign(self, node: yaml.Node, file: str) -> bool:
        """A document that is clearly not Sluice's (another tool's YAML): skipped."""
        if not isinstance(node, yaml.MappingNode):
            return False
        api = _scalar(node, "apiVersion")
        kind = _scalar(node, "kind")
        ours_api = isinstance(api, yaml.ScalarNode) and str(api.value).startswith(API_GROUP)
        ours_kind = isinstance(kind, yaml.ScalarNode) and kind.value in known_kinds()
        if ours_api or ours_kind:
            return False
        what = f"apiVersion {_shown(api)}" if api is not None else "no apiVersion"
        self.warnings.add(file, Mark.of(node), "",
                          f"skipped: not a Sluice document ({what}; Sluice documents have "
                          f"apiVersion: {API_GROUP}v1alpha1)")
        return True

    def _document(self, node: yaml.Node, file: str) -> None:
        if node.tag == "tag:yaml.org,2002:null" and node.value == "":
            return  # an empty document between two '---'
        if self._foreign(node, file):
            return
        errors = Errors()
        line = Mark.of(node).line
        kinds = ", ".join(known_kinds())
        if not isinstance(node, yaml.MappingNode):
            errors.add(file, Mark.of(node), "",
                       f"expected a mapping with apiVersion, kind, metadata and spec, "
                       f"got {describe(node)}")
            self.documents.append(DocumentResult("", None, file, line, tuple(errors.items)))
            return
        kind_node = _scalar(node, "kind")
        kd = kind_def(kind_node.value) if isinstance(kind_node, yaml.ScalarNode) else None
        if kind_node is None or kd is None or kind_node.tag != "tag:yaml.org,2002:str":
            if kind_node is None:
                errors.add(file, Mark.of(node), "kind",
                           f"missing required field 'kind' (known kinds: {kinds})")
            else:
                errors.add(file, Mark.of(kind_node), "kind",
                           f"unknown kind {_shown(kind_node)}; known kinds: {kinds}")
            self.documents.append(DocumentResult("", None, file, line, tuple(errors.items)))
            return
        try:
            root = Checker(file, errors).check(node, kd.envelope(), "", None)
        except TooLarge:
            errors.add(file, Mark.of(node), "",
                       f"document too large (more than {Checker.MAX_NODES} nodes)")
            self.documents.append(DocumentResult(kd.kind, None, file, line,
                                                 tuple(errors.items)))
            return
        doc = Document(file, kd.kind, root)
        kd.check(doc, errors)
        warnings = Errors()
        if kd.advise is not None:
            kd.advise(doc, warnings)
        value = kd.build(doc) if not errors.items else None
        self.documents.append(DocumentResult(
            kd.kind, doc.name, file, line, tuple(errors.items), tuple(warnings.items),
            value, doc,
        ))

    def finish(self) -> LoadResult:
        return LoadResult(
            tuple(self.documents),
            tuple(self.file_errors.items),
            tuple(self.warnings.items),
            tuple(self.files),
            tuple(dict.fromkeys(self.sources)),
        )

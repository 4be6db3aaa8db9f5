"""Reading files, directories and text into per-document results.

Each document is checked on its own: an error in one document never stops
another from loading. What the documents add up to, given what served before,
is ``controlplane.config.assemble``; ``LoadResult.state``/``errors``/``objects``
are the standalone assembly (nothing served before), which is what
``sluice validate`` reports.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
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
    from controlplane.config.filecache import FileCache

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


@dataclass(frozen=True)
class FileLoad:
    """What one file (or named text) adds to a load: a pure function of its name, its bytes
    and the registered kinds.

    ``read`` is False for a file that could not be opened: it is tried (a source)
    but not read (not in ``LoadResult.files``).
    """

    name: str
    read: bool
    documents: tuple[DocumentResult, ...] = ()
    file_errors: tuple[ConfigError, ...] = ()
    warnings: tuple[ConfigError, ...] = ()


def load_text(text: str, filename: str = "<string>") -> LoadResult:
    return combine([text_load(text, filename)])


def load_documents(texts: Sequence[tuple[str, str]]) -> LoadResult:
    """Named texts, each its own "file" (custom resources: ``k8s:NAMESPACE/KIND/NAME``)."""
    return combine([text_load(text, name) for name, text in texts])


def load_paths(paths: Sequence[str | Path], cache: FileCache | None = None) -> LoadResult:
    """Files, or directories (every ``*.yaml`` / ``*.yml`` in it, sorted, not recursive).

    With a ``cache``, files whose stat (or bytes) did not change since its last
    load are not parsed again; the result is the same as without one.
    """
    files = config_files(paths)
    if cache is not None:
        return combine(cache.load_files(files))
    return combine([read_file(file) for file in files])


def config_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files ``load_paths`` reads, in order, each once."""
    found: list[Path] = []
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
                found.append(file)
    return found


def read_raw(path: Path) -> tuple[os.stat_result, bytes]:
    """The opened file's stat, taken before reading, and its first ``MAX_FILE_BYTES + 1`` bytes.

    A change after the stat changes the file's stat (or shows in its bytes, for
    a change within the file system's timestamp granularity).
    """
    with path.open("rb") as fh:
        st = os.fstat(fh.fileno())
        return st, fh.read(MAX_FILE_BYTES + 1)


def unreadable(name: str, error: OSError) -> FileLoad:
    problem = ConfigError(name, FILE_START.line, FILE_START.column, "",
                          f"cannot read: {error.strerror or error}")
    return FileLoad(name, read=False, file_errors=(problem,))


def read_file(path: Path) -> FileLoad:
    """One file's load, read now (no cache)."""
    try:
        _, raw = read_raw(path)
    except OSError as e:
        return unreadable(str(path), e)
    return bytes_load(raw, str(path))


def bytes_load(raw: bytes, name: str) -> FileLoad:
    """One file's load from its bytes (at most ``MAX_FILE_BYTES + 1`` of them are needed)."""
    load = _Load(name)
    if len(raw) > MAX_FILE_BYTES:
        load.file_errors.add(name, FILE_START, "",
                             f"file too large: more than {MAX_FILE_BYTES:,} bytes "
                             "(split it into several files)")
        return load.finish()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        load.file_errors.add(name, FILE_START, "", f"not UTF-8 text (byte {e.start})")
        return load.finish()
    load.add_text(text)
    return load.finish()


def text_load(text: str, name: str) -> FileLoad:
    load = _Load(name)
    load.add_text(text)
    return load.finish()


def combine(loads: Iterable[FileLoad]) -> LoadResult:
    """The files' loads, in order, as one result."""
    documents: list[DocumentResult] = []
    file_errors: list[ConfigError] = []
    warnings: list[ConfigError] = []
    sources: list[str] = []  # every file tried, for ordering the errors
    files: list[str] = []
    for one in loads:
        sources.append(one.name)
        if one.read:
            files.append(one.name)
        documents.extend(one.documents)
        file_errors.extend(one.file_errors)
        warnings.extend(one.warnings)
    return LoadResult(tuple(documents), tuple(file_errors), tuple(warnings), tuple(files),
                      tuple(dict.fromkeys(sources)))


def _shown(node: yaml.Node) -> str:
    if node.tag == "tag:yaml.org,2002:str":
        return excerpt(node.value)
    return describe(node)


def _scalar(node: yaml.MappingNode, key: str) -> yaml.Node | None:
    return next((v for k, v in node.value if getattr(k, "value", None) == key), None)


class _Load:
    """Collects the documents, errors and warnings of one file."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.file_errors = Errors()
        self.warnings = Errors()
        self.documents: list[DocumentResult] = []

    def add_text(self, text: str) -> None:
        self._documents(text, self.name)

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

    def finish(self) -> FileLoad:
        return FileLoad(self.name, True, tuple(self.documents), tuple(self.file_errors.items),
                        tuple(self.warnings.items))

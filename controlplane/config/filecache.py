"""Per-file load results kept between loads, so a reload parses only the files that changed.

A file's load (``FileLoad``: its documents, errors and warnings) is a pure
function of its name, its bytes and the registered kinds. ``FileCache`` keeps
the last one of each file with the file's stat (device, inode, size, mtime and
ctime, of the opened file, taken before reading it) and a digest of its bytes:

- same stat as last time: the kept load, without opening the file;
- otherwise the file is read; same bytes as last time (a ``touch``, a rename
  of identical content over it, a ConfigMap swap of every file for one
  change): the kept load, without parsing;
- otherwise it is parsed.

A file changed twice within the file system's timestamp granularity could
keep its stat, so a stat is trusted only once the file's last change is
``racy_s`` older than the read ("racily clean", as git says); until then the
file is read and its bytes compared on each load. Files that were not part of
a load are forgotten; files that cannot be read are never kept. Changing the
registered kinds empties the cache.

What it hands out is shared between loads: documents, errors and objects are
frozen dataclasses; the checked ``Value`` trees and YAML nodes behind them are
read-only by convention (nothing after the loader writes to them).

Not thread-safe: one cache per caller that loads one load at a time (a
``FileSource``).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from controlplane.config.kinds import KindDef, kind_def, known_kinds
from controlplane.config.loader import FileLoad, bytes_load, read_raw, unreadable

__all__ = ["FileCache", "Parse", "Stamp", "stamp_of"]

# (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns): an atomic rename changes the inode.
Stamp = tuple[int, int, int, int, int]
# Bytes and file name → that file's load (``bytes_load``; tests inject a counting one).
Parse = Callable[[bytes, str], FileLoad]

# Longer than any local file system's timestamp granularity (FAT: 2 s for mtime).
RACY_S = 2.0


def stamp_of(st: os.stat_result) -> Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def settled(st: os.stat_result, read_at_ns: int, racy_ns: int) -> bool:
    """Whether a file with this stat, read at ``read_at_ns``, last changed long enough before."""
    return read_at_ns - max(st.st_mtime_ns, st.st_ctime_ns) >= racy_ns


@dataclass(frozen=True)
class _Entry:
    stamp: Stamp
    digest: bytes
    trusted: bool  # settled when read: an equal stamp means equal bytes
    load: FileLoad


def _digest(raw: bytes) -> bytes:
    return hashlib.blake2b(raw, digest_size=32).digest()


def _same_kinds(a: tuple[KindDef | None, ...], b: tuple[KindDef | None, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


class FileCache:
    """The last load of each file, reused while the file is unchanged."""

    def __init__(
        self,
        parse: Parse = bytes_load,
        *,
        racy_s: float = RACY_S,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._parse = parse
        self._racy_ns = int(racy_s * 1e9)
        self._clock_ns = clock_ns
        self._entries: dict[str, _Entry] = {}
        self._kinds: tuple[KindDef | None, ...] = ()
        self.parses = 0  # files parsed (not served from the cache), for tests and metrics

    def __len__(self) -> int:
        return len(self._entries)

    def load_files(self, files: Sequence[Path]) -> list[FileLoad]:
        """Each file's load, in order; forgets every file not among ``files``."""
        kinds = tuple(kind_def(k) for k in known_kinds())
        if not _same_kinds(kinds, self._kinds):
            self._entries.clear()
            self._kinds = kinds
        loads = [self._load(file) for file in files]
        keep = {str(file) for file in files}
        for name in [n for n in self._entries if n not in keep]:
            del self._entries[name]
        return loads

    def _load(self, path: Path) -> FileLoad:
        name = str(path)
        entry = self._entries.get(name)
        if entry is not None and entry.trusted and self._stat(path) == entry.stamp:
            return entry.load
        read_at = self._clock_ns()
        try:
            st, raw = read_raw(path)
        except OSError as e:
            self._entries.pop(name, None)
            return unreadable(name, e)
        digest = _digest(raw)
        if entry is not None and entry.digest == digest:
            load = entry.load
        else:
            load = self._parse(raw, name)
            self.parses += 1
        self._entries[name] = _Entry(stamp_of(st), digest, settled(st, read_at, self._racy_ns),
                                     load)
        return load

    @staticmethod
    def _stat(path: Path) -> Stamp | None:
        try:
            return stamp_of(os.stat(path))
        except OSError:
            return None

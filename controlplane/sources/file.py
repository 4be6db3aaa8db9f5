"""The file source: config files and directories of ``*.yaml`` / ``*.yml``, polled.

Change detection is a plain function, ``fingerprint(paths)``: it stats every
config file (following symlinks, so a Kubernetes ConfigMap volume's atomic
``..data`` swap shows up as new inodes) and lists every directory. Two equal
fingerprints mean nothing a loader would read has changed. ``FileSource`` polls
that function and reloads on a difference, after the files have been still for
a short debounce so an editor's write-then-rename is read once.

Polling, not inotify: it works the same on every filesystem (bind mounts,
network volumes, symlink swaps), costs a few ``stat`` calls per interval, and
has no event queue to overflow.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controlplane.config import ConfigError, LoadResult, load_paths
from controlplane.config.filecache import FileCache
from controlplane.sources import OnResult

__all__ = ["CONFIG_SUFFIXES", "FileSource", "Fingerprint", "fingerprint"]

log = logging.getLogger(__name__)

CONFIG_SUFFIXES = (".yaml", ".yml")

# What a stat tells us about one path: a kind and the identifying numbers.
#   ("file", dev, ino, size, mtime_ns, ctime_ns) | ("dir",) | ("missing", errno)
Stamp = tuple[object, ...]


@dataclass(frozen=True)
class Fingerprint:
    """Everything a load would read, as ``(path, stamp)`` in a fixed order."""

    entries: tuple[tuple[str, Stamp], ...]

    def files(self) -> tuple[str, ...]:
        """The config files that exist now."""
        return tuple(p for p, s in self.entries if s and s[0] == "file")


def _stamp(path: str) -> Stamp:
    try:
        st = os.stat(path)
    except OSError as exc:
        return ("missing", exc.errno)
    if stat.S_ISDIR(st.st_mode):
        return ("dir",)
    return ("file", st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _listing(directory: str) -> list[str]:
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(os.path.join(directory, n) for n in names if n.lower().endswith(CONFIG_SUFFIXES))


def fingerprint(paths: Sequence[str | os.PathLike[str]]) -> Fingerprint:
    """Stat each path; for a directory, also each ``*.yaml``/``*.yml`` directly in it.

    Never raises for missing or unreadable paths: their absence is part of the
    fingerprint, so creating them later is a change.
    """
    entries: list[tuple[str, Stamp]] = []
    for raw in paths:
        path = os.fspath(raw)
        stamp = _stamp(path)
        entries.append((path, stamp))
        if stamp == ("dir",):
            for child in _listing(path):
                child_stamp = _stamp(child)
                if child_stamp != ("dir",):  # a directory named x.yaml is not config
                    entries.append((child, child_stamp))
    return Fingerprint(tuple(entries))


Loader = Callable[[Sequence[str]], LoadResult]


class FileSource:
    """Watches ``paths`` and delivers ``load_paths(paths)`` on start and on each change.

    The default loader keeps each file's load (``FileCache``): a reload parses
    only the files that changed.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        interval: float = 0.1,
        debounce: float = 0.05,
        max_settle: float = 2.0,
        loader: Loader | None = None,
        name: str = "file",
    ) -> None:
        if not paths:
            raise ValueError("FileSource needs at least one path")
        if interval <= 0 or debounce < 0 or max_settle < debounce:
            raise ValueError("interval must be > 0 and 0 <= debounce <= max_settle")
        self.name = name
        self.paths: tuple[str, ...] = tuple(os.fspath(p) for p in paths)
        self.interval = interval
        self.debounce = debounce
        self.max_settle = max_settle
        self.cache = FileCache()
        self._loader: Loader = loader if loader is not None else self._load
        self.loads = 0  # how many results were delivered
        # Monotonic time the change behind the latest result was first seen: the
        # consumer's debounce counts quiet time from here, so loading overlaps it.
        self.changed_at: float | None = None

    def _load(self, paths: Sequence[str]) -> LoadResult:
        return load_paths(paths, cache=self.cache)

    async def run(self, on_result: OnResult, stop: asyncio.Event) -> None:
        """Load now, then poll until ``stop`` is set, reloading after each change."""
        last = fingerprint(self.paths)
        self.changed_at = time.monotonic()
        await self._deliver(on_result)
        while not stop.is_set():
            if await _stopped_within(stop, self.interval):
                return
            current = fingerprint(self.paths)
            if current == last:
                continue
            self.changed_at = time.monotonic()
            settled = await self._settle(current, stop)
            if settled is None:
                return
            # Taken before loading: a write during the load differs from it and
            # is picked up on the next poll.
            last = settled
            await self._deliver(on_result)

    async def _settle(self, current: Fingerprint, stop: asyncio.Event) -> Fingerprint | None:
        """Wait until the fingerprint holds still for one debounce (bounded)."""
        waited = 0.0
        while waited < self.max_settle:
            if await _stopped_within(stop, self.debounce):
                return None
            waited += self.debounce
            again = fingerprint(self.paths)
            if again == current:
                return current
            current = again
        log.warning("%s: config still changing after %.1fs; loading anyway", self.name, waited)
        return current

    async def _deliver(self, on_result: OnResult) -> None:
        try:
            result = await asyncio.to_thread(self._loader, self.paths)
        except Exception as exc:  # a loader bug must not end the watch
            log.exception("%s: loading %s failed", self.name, ", ".join(self.paths))
            error = ConfigError(self.paths[0], 1, 1, "", f"internal error while loading: {exc}")
            result = LoadResult(documents=(), file_errors=(error,), warnings=(), files=())
        self.loads += 1
        outcome = on_result(result)
        if inspect.isawaitable(outcome):
            await outcome


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; ``True`` as soon as ``stop`` is set."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True

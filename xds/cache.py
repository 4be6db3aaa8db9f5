"""Serialize-once resource encoding and the snapshot cache.

betterproto2 is pure Python: serializing a 1,000-endpoint
ClusterLoadAssignment costs hundreds of milliseconds (DESIGN §4). So each
resource is built and serialized once per distinct input and its bytes are
shared by every stream; ``ResourceEncoder.serializations`` counts how often
that happened so tests and the benchmark can prove it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from xds._wire import wire_pb2
from xds.snapshot import EMPTY_SNAPSHOT, Resource, Snapshot, content_hash

SnapshotListener = Callable[[Snapshot], None]


class ResourceEncoder:
    """Builds and serializes a resource only when its inputs are new.

    Entries not used by the last two builds are dropped, so memory follows the
    live configuration rather than its history.
    """

    def __init__(self) -> None:
        self.serializations = 0
        self._current: dict[tuple[str, Hashable], Resource] = {}
        self._previous: dict[tuple[str, Hashable], Resource] = {}

    def resource(
        self,
        type_url: str,
        name: str,
        inputs: Hashable,
        build: Callable[[], Any],
        refs: frozenset[str] = frozenset(),
    ) -> Resource:
        key = (type_url, inputs)
        found = self._current.get(key) or self._previous.get(key)
        if found is None or found.name != name or found.refs != refs:
            found = encode(type_url, name, bytes(build()), refs)
            self.serializations += 1
        self._current[key] = found
        return found

    def end_build(self) -> None:
        """Marks the end of one snapshot build (a generation)."""
        self._previous, self._current = self._current, {}


def encode(type_url: str, name: str, message_bytes: bytes, refs: frozenset[str]) -> Resource:
    version = content_hash(type_url.encode(), message_bytes)
    any_bytes = wire_pb2.AnyView(type_url=type_url, value=message_bytes).SerializeToString()
    delta_bytes = wire_pb2.ResourceView(
        name=name, version=version, resource=any_bytes
    ).SerializeToString()
    return Resource(type_url, name, version, any_bytes, delta_bytes, refs)


class SnapshotCache:
    """Holds the one current snapshot and tells subscribers when it changes.

    Only consistent snapshots can exist (``Snapshot.of`` checks), so the cache
    never serves a half-applied configuration.
    """

    def __init__(self) -> None:
        self._snapshot = EMPTY_SNAPSHOT
        self._listeners: set[SnapshotListener] = set()
        self.changed_at: float | None = None
        # False until the first snapshot built from loaded configuration is installed.
        # Until then the server answers nobody: a proxy that reconnects to a control
        # plane that has just started must not be told that every resource is gone.
        self.ready = False

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def set(self, snapshot: Snapshot, changed_at: float | None = None) -> bool:
        """Installs ``snapshot``; returns False if unchanged (subscribers are told only
        of changes, and of the first install, which makes the cache ready)."""
        first, self.ready = not self.ready, True
        if snapshot.version == self._snapshot.version and not first:
            return False
        changed = snapshot.version != self._snapshot.version
        self._snapshot = snapshot
        self.changed_at = changed_at
        for listener in list(self._listeners):
            listener(snapshot)
        return changed

    def subscribe(self, listener: SnapshotListener) -> Callable[[], None]:
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    @property
    def subscriber_count(self) -> int:
        return len(self._listeners)

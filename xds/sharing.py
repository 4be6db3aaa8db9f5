"""Work shared between streams that are in the same state.

Thousands of proxies run one configuration, so at any moment most streams are
in one of a few states: the same snapshot, the same subscription, the same
versions ACKed. What a stream derives from such a state is the same for all of
them, so it is derived once and shared, keyed by its exact inputs:

* ``ResponseBodies``: the serialized (Delta)DiscoveryResponse for one type,
  version and tuple of resources. Only the nonce differs between streams; it
  is appended as field 5 (protobuf parsers take fields in any order).
* ``SharedSotwStream``: a ``SotwStream`` whose make-before-break view of a type
  (``ordering.sendable``) is looked up by the inputs it is computed from, so
  streams in the same state also hold one content dict between them.
* ``Names``: resource names read from requests, mapped to the snapshot's own
  strings, and equal sets of names (subscriptions, the clusters held routes
  name) to one frozenset (a 200-cluster EDS subscription is otherwise 200 new
  strings and a new set per stream).

None of this changes what a stream sends: the stream machines decide, and the
shared objects are never mutated (tests/unit/xds/test_sharing.py runs shared
and plain machines side by side).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import TypeVar

from xds import ordering, typeurls
from xds._wire import wire_pb2
from xds.delta import DeltaResponse
from xds.protocol import Request, Response, SotwStream, _SotwType
from xds.snapshot import Resource, Snapshot

T = TypeVar("T")
_NONCE_TAG = b"\x2a"  # field 5, length-delimited, in both response messages


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def nonce_field(nonce: str) -> bytes:
    raw = nonce.encode()
    return _NONCE_TAG + _varint(len(raw)) + raw if raw else b""


class _Bounded:
    """A dict that forgets its oldest entries beyond a size (insertion order)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.entries: dict[Hashable, object] = {}

    def get_or_make(self, key: Hashable, make: Callable[[], T]) -> tuple[T, bool]:
        found = self.entries.get(key)
        if found is not None:
            return found, True  # type: ignore[return-value]
        value = make()
        self.put(key, value)
        return value, False

    def put(self, key: Hashable, value: object) -> None:
        while len(self.entries) >= self.max_entries:
            del self.entries[next(iter(self.entries))]
        self.entries[key] = value


class ResponseBodies:
    """Serialized responses, built once per (type, version, resources) and reused.

    ``resources`` are compared by identity (``Resource`` is ``eq=False``), and a
    resource's bytes never change, so a hit is always byte-identical to a
    fresh build. The oldest bodies are dropped beyond ``max_bytes`` in all.
    """

    def __init__(self, max_entries: int = 512, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._bodies = _Bounded(max_entries)
        self.max_bytes = max_bytes
        self.bytes = 0
        self.builds = 0
        self.reuses = 0

    def encode(self, response: Response | DeltaResponse) -> bytes:
        key: tuple[object, ...]
        if isinstance(response, Response):
            key = ("sotw", response.type_url, response.version_info, response.resources)
        else:
            key = (
                "delta",
                response.type_url,
                response.system_version_info,
                response.resources,
                response.removed,
            )
        found = self._bodies.entries.get(key)
        if isinstance(found, bytes):
            self.reuses += 1
            body = found
        else:
            body = body_of(response)
            self.builds += 1
            self._keep(key, body)
        return body + nonce_field(response.nonce)

    def _keep(self, key: Hashable, body: bytes) -> None:
        entries = self._bodies.entries
        if len(body) > self.max_bytes // 4:
            return
        while entries and (
            len(entries) >= self._bodies.max_entries or self.bytes + len(body) > self.max_bytes
        ):
            old = entries.pop(next(iter(entries)))
            assert isinstance(old, bytes)
            self.bytes -= len(old)
        entries[key] = body
        self.bytes += len(body)


def body_of(response: Response | DeltaResponse) -> bytes:
    """The response without its nonce."""
    if isinstance(response, Response):
        return wire_pb2.DiscoveryResponseView(
            version_info=response.version_info,
            resources=[r.any_bytes for r in response.resources],
            type_url=response.type_url,
        ).SerializeToString()
    return wire_pb2.DeltaDiscoveryResponseView(
        system_version_info=response.system_version_info,
        resources=[r.delta_bytes for r in response.resources],
        type_url=response.type_url,
        removed_resources=response.removed,
    ).SerializeToString()


class Names:
    """Canonical resource-name strings and subscription sets."""

    def __init__(self, max_sets: int = 1024) -> None:
        self._version: str | None = None
        self._strings: dict[str, str] = {}
        self._sets = _Bounded(max_sets)

    def strings(self, snapshot: Snapshot, names: Iterable[str]) -> tuple[str, ...]:
        if snapshot.version != self._version:
            # Names the snapshot has map to its own strings; others stay as they are
            # (so a client cannot grow this table).
            self._strings = {n: n for t in snapshot.types.values() for n in t.resources}
            self._version = snapshot.version
        get = self._strings.get
        return tuple([get(n, n) for n in names])

    def frozen(self, names: frozenset[str]) -> frozenset[str]:
        found, _ = self._sets.get_or_make(names, lambda: names)
        return found


class SharedViews:
    """What streams in the same state share: views, response bodies, names."""

    def __init__(self, max_views: int = 1024) -> None:
        self._views = _Bounded(max_views)
        self.refs = _Bounded(max_views)  # clusters named by the routes a proxy holds
        self.bodies = ResponseBodies()
        self.names = Names()
        self.view_builds = 0
        self.view_reuses = 0

    def summary(self) -> str:
        return (
            f"shared work: response bodies built {self.bodies.builds}, reused "
            f"{self.bodies.reuses}; SotW views built {self.view_builds}, reused "
            f"{self.view_reuses}"
        )

    def view(self, key: Hashable, make: Callable[[], ordering.Sendable]) -> ordering.Sendable:
        view, hit = self._views.get_or_make(key, make)
        if hit:
            self.view_reuses += 1
        else:
            self.view_builds += 1
        return view


class SharedSotwStream(SotwStream):
    """A ``SotwStream`` that takes its per-type views from ``SharedViews``.

    ``SotwStream._view`` recomputes a view when its per-stream key changes; this
    does the same, but looks the result up under a key that holds every input of
    ``ordering.sendable`` by value, so another stream in the same state reuses
    it. Once a type was NACKed, the resources a stream ACKed can differ from
    what its ACKed version names (``SotwStream`` keeps the last good ones), so
    views that read them are computed per stream again, as before.
    """

    def __init__(self, snapshot: Snapshot, shared: SharedViews) -> None:
        super().__init__(snapshot)
        self._shared = shared
        self._ready_key: tuple[str | None, int] | None = None
        self._ready_set: frozenset[str] = frozenset()

    def _subscribe(self, st: _SotwType, req: Request) -> None:
        super()._subscribe(st, req)
        if st.names is not None:
            st.names = self._shared.names.frozen(st.names)

    def _update_route_refs(self) -> None:
        routes = self._types.get(typeurls.ROUTE)
        if routes is None or routes.last_nack is not None:
            super()._update_route_refs()
            self._route_refs = self._shared.names.frozen(self._route_refs)
            return

        def make() -> frozenset[str]:
            super(SharedSotwStream, self)._update_route_refs()
            return self._shared.names.frozen(self._route_refs)

        # The routes held (ACKed and sent) are named by their two versions while
        # the type was never NACKed.
        key = ("route_refs", routes.acked_version, routes.sent_version)
        self._route_refs, _ = self._shared.refs.get_or_make(key, make)

    def _changed(self, previous: Mapping[str, Resource],
                 content: Mapping[str, Resource]) -> tuple[Resource, ...]:
        # Streams in one state hold the same content dicts (views are shared), so the
        # difference between two of them is computed once. Keyed by identity; the
        # entry keeps both dicts alive, so an id cannot be reused while it is there.
        key = ("changed", id(previous), id(content))
        found = self._shared.refs.entries.get(key)
        if isinstance(found, tuple) and found[0] is previous and found[1] is content:
            wire: tuple[Resource, ...] = found[2]
            return wire
        wire = super()._changed(previous, content)
        self._shared.refs.put(key, (previous, content, wire))
        return wire

    def _target_version(self, type_url: str, names: frozenset[str] | None) -> str:
        # Subscriptions are canonical shared sets (``_subscribe``), whose hash Python
        # keeps, so the lookup is cheaper than the superset test it saves.
        key = ("target", self.snapshot.version, type_url, names)
        found = self._shared.refs.entries.get(key)
        if isinstance(found, str):
            return found
        version = super()._target_version(type_url, names)
        self._shared.refs.put(key, version)
        return version

    def _computed(self, type_url: str, st: _SotwType, cds: _SotwType | None) -> ordering.Sendable:
        shared = self._shared_key(type_url, st, cds)

        def make() -> ordering.Sendable:
            return ordering.sendable(type_url, self.snapshot, st.names, self._holds())

        if shared is None:
            return make()
        return self._shared.view(shared, make)

    def _ready(self, cds: _SotwType | None) -> frozenset[str]:
        """``ordering.ready_clusters``: clusters ACKed and warmed by an EDS ACK.

        Kept per stream while its inputs stand: the ACKed clusters (named by
        their version while CDS was never NACKed) and ``_eds_gen`` (bumped when
        an EDS ACK warms clusters). A CDS ACK may also drop clusters from
        ``_eds_ready``, but only ones it no longer holds, which changes the ACKed
        version."""
        acked = cds.acked if cds is not None else {}
        key = (cds.acked_version, self._eds_gen) if cds is not None else None
        if key is not None and cds is not None and cds.last_nack is None and key == self._ready_key:
            return self._ready_set
        ready = self._shared.names.frozen(
            frozenset(
                n
                for n, v in self._eds_ready.items()
                if (r := acked.get(n)) is not None and r.version == v
            )
        )
        self._ready_key, self._ready_set = key, ready
        return ready

    def _shared_key(
        self, type_url: str, st: _SotwType, cds: _SotwType | None
    ) -> tuple[object, ...] | None:
        """Every input of ``ordering.sendable`` for this type, or None when one
        of them can only be read per stream."""
        snapshot = self.snapshot.version  # a content hash of every resource
        if type_url == typeurls.LISTENER:
            return (type_url, snapshot, st.names)  # reads nothing the proxy holds
        if st.last_nack is not None:
            return None
        if type_url == typeurls.ROUTE:
            # sendable reads the clusters that are ACKed and warm, and the routes
            # ACKed (named by their version while the type was never NACKed).
            return (type_url, snapshot, st.names, self._ready(cds), st.acked_version)
        if cds is not None and cds.last_nack is not None:
            return None
        # CLUSTER / ENDPOINT: the ACKed clusters (by version), the clusters held
        # routes name, and what the proxy ACKed of this type (by version).
        cds_acked = cds.acked_version if cds is not None else None
        return (type_url, snapshot, st.names, cds_acked, self._route_refs, st.acked_version)

"""A Delta stream that does not recompute a type it already found quiet.

``DeltaStream._push`` asks every type what it has to send, on every snapshot
and every request: for each it builds the make-before-break view and compares
it with everything the proxy holds. Most of those answers are "nothing", and
they depend only on the stream's own state and on a few types of the snapshot.
``QuietDeltaStream`` remembers, per type, the inputs under which ``_next``
last answered nothing, and answers nothing again without recomputing while
they are unchanged:

* the snapshot's versions of the types that answer reads (each its own type;
  load assignments also the clusters', for clusters retained by held routes);
* per type, a generation of the stream's state, bumped by every request and
  every response of that type. A listener reads its own type's state; a
  route configuration also the clusters' and load assignments' (which
  clusters are warm); clusters and load assignments read the clusters' (and
  load assignments their own), and the routes' only while the proxy holds a
  cluster that is gone from the snapshot (it is retained while a held route
  names it).

A quiet answer can still drop names from ``force`` that the view already
carries; repeating it would drop nothing more and again send nothing, so
skipping it changes nothing.

It also answers "is this type SYNCED?" (asked after every ACK) by comparing
what the proxy holds with one name → version map per snapshot type, shared by
every stream, instead of building that map per stream and per call.

Streams in the same state share that state and what is derived from it,
through the server's one ``TypeVersions``:

* ``Interned``: the maps and sets a stream keeps (what the proxy holds per
  type, name → version and name → resource; subscriptions; warm clusters) are
  immutable, so equal ones are one object. 10,000 proxies on one
  configuration hold one map per type between them, not 10,000.
* ``_Derived``: values computed from immutable inputs, looked up by the
  inputs' identities: a state change (``_replace``), the make-before-break view
  (``_view``, the inputs of ``ordering.sendable`` for the type), the names
  whose version the proxy lacks (``_stale``), the warm clusters, whether the
  proxy holds clusters gone from the snapshot. An entry keeps its inputs
  alive, so their ids are not reused while it is there.

tests/unit/xds/test_sharing.py and test_quiet_sharing.py run quiet and plain
machines side by side, in test_quiet_sharing.py several quiet ones sharing
one ``TypeVersions`` at different points of random histories.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Mapping
from typing import Any, NoReturn, TypeVar

from xds import ordering, typeurls
from xds.delta import (
    NO_NAMES,
    NO_VERSIONS,
    DeltaRequest,
    DeltaResponse,
    DeltaStream,
    S,
    V,
    _DeltaType,
)
from xds.protocol import SyncState
from xds.snapshot import Resource, Snapshot

C, E, L, R = typeurls.CLUSTER, typeurls.ENDPOINT, typeurls.LISTENER, typeurls.ROUTE
T = TypeVar("T")


class FrozenMap(dict[Any, Any]):
    """A dict that refuses changes (it is shared between streams). Reads are
    the dict's own; ``__weakref__`` lets ``Interned`` forget unused ones."""

    __slots__ = ("__weakref__",)

    def _frozen(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a shared map is never changed in place")

    __setitem__ = __delitem__ = __ior__ = _frozen
    clear = pop = popitem = setdefault = update = _frozen


class Interned:
    """One object per distinct value: name → version maps, name → resource
    maps and name sets. A value is found by a fingerprint of its content (its
    length and the hash of its items) and then compared whole, so a hit is
    always an equal value (resources compare by identity). Values no stream
    keeps any more drop out (weak references)."""

    def __init__(self) -> None:
        self._values: weakref.WeakValueDictionary[tuple[int, int, int], Any] = (
            weakref.WeakValueDictionary()
        )
        self.hits = 0
        self.misses = 0

    def share(self, value: S) -> S:
        found: Any
        given: Any = value
        if isinstance(value, frozenset):
            key = (0, len(value), hash(value))
        elif isinstance(value, Mapping):
            key = (1, len(value), hash(frozenset(value.items())))
        else:
            return value
        found = self._values.get(key)
        if found is not None and found == value:
            self.hits += 1
            return found  # type: ignore[no-any-return]
        self.misses += 1
        shared: Any = given if isinstance(given, frozenset | FrozenMap) else FrozenMap(given)
        if found is None:  # else another value has this fingerprint: not shared
            self._values[key] = shared
        return shared  # type: ignore[no-any-return]


class _Derived:
    """Values derived from immutable inputs; ``key`` names the inputs by
    identity (``id``) and by value, ``keep`` holds the ones named by identity.
    The oldest entries go beyond ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[Hashable, tuple[tuple[object, ...], Any]] = {}
        self.hits = 0
        self.builds = 0

    def get(self, key: Hashable, keep: tuple[object, ...], make: Callable[[], T]) -> T:
        found = self._entries.get(key)
        if found is not None:
            self.hits += 1
            return found[1]  # type: ignore[no-any-return]
        value = make()
        while len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (keep, value)
        self.builds += 1
        return value


class TypeVersions:
    """What Delta streams share: name → version of every
    resource of a snapshot type, built once per type version (the target of a
    stream that wants all); the ``Interned`` values of their state; values
    derived from it, per snapshot (the last ``snapshots`` ones) or not."""

    def __init__(self, keep: int = 64, size: int = 512, snapshots: int = 3) -> None:
        self.keep = keep
        self._maps: dict[tuple[str, str], Mapping[str, str]] = {}
        self.interned = Interned()
        self.derived = _Derived(size)  # state changes, warm clusters
        self._size, self._snapshots = size, snapshots
        self._per_snapshot: dict[int, tuple[Snapshot, _Derived]] = {}
        self._retired = [0, 0]  # hits and builds of per-snapshot values dropped

    def summary(self) -> str:
        live = [d for _, d in self._per_snapshot.values()]
        hits = self._retired[0] + sum(d.hits for d in live)
        builds = self._retired[1] + sum(d.builds for d in live)
        return (f"delta shared state: interned {self.interned.hits} hits / "
                f"{self.interned.misses} misses; derived {self.derived.hits} / "
                f"{self.derived.builds}; per snapshot {hits} / {builds}")

    def of(self, snapshot: Snapshot, type_url: str) -> Mapping[str, str]:
        ts = snapshot.types[type_url]
        key = (type_url, ts.version)
        found = self._maps.get(key)
        if found is None:
            found = self.interned.share({n: r.version for n, r in ts.resources.items()})
            while len(self._maps) >= self.keep:
                del self._maps[next(iter(self._maps))]
            self._maps[key] = found
        return found

    def of_snapshot(self, snapshot: Snapshot) -> _Derived:
        """Values derived from ``snapshot`` (views; names stale against it)."""
        found = self._per_snapshot.get(id(snapshot))
        if found is not None and found[0] is snapshot:
            return found[1]
        while len(self._per_snapshot) >= self._snapshots:
            _, gone = self._per_snapshot.pop(next(iter(self._per_snapshot)))
            self._retired[0] += gone.hits
            self._retired[1] += gone.builds
        derived = _Derived(self._size)
        self._per_snapshot[id(snapshot)] = (snapshot, derived)
        return derived



class QuietDeltaStream(DeltaStream):
    def __init__(self, snapshot: Snapshot, versions: TypeVersions | None = None) -> None:
        super().__init__(snapshot)
        self._versions = versions or TypeVersions()
        # Per type: bumped whenever that type's state may have changed.
        self._generation = dict.fromkeys((C, E, L, R), 0)
        self._quiet: dict[str, tuple[object, ...]] = {}
        # The last route refs, with the (immutable) state they came from.
        self._refs: tuple[object, object, object, frozenset[str] | None] | None = None
        self.skipped = 0  # answers not recomputed (for tests and profiling)

    def on_request(self, req: DeltaRequest, now: float) -> list[DeltaResponse]:
        if req.type_url in self._generation:
            self._generation[req.type_url] += 1
        return super().on_request(req, now)

    def _inputs(self, type_url: str) -> tuple[object, ...]:
        """What ``_next(type_url)`` reads: the snapshot versions, and the state
        of the types it reads (``ordering.sendable`` with ``_holds``)."""
        g, types = self._generation, self.snapshot.types
        if type_url == L:
            return g[L], types[L].version
        if type_url == R:  # warm clusters: ACKed clusters and EDS ACKs
            return g[R], g[C], g[E], types[R].version
        # Clusters and load assignments read the routes the proxy holds only
        # for clusters gone from the snapshot (retained while a route names them).
        routes = (g[R],) if self._gone() else ()
        if type_url == C:
            return g[C], types[C].version, *routes
        return g[E], g[C], types[C].version, types[E].version, *routes

    def _next(self, type_url: str, st: _DeltaType) -> DeltaResponse | None:
        inputs = self._inputs(type_url)
        if self._quiet.get(type_url) == inputs:
            self.skipped += 1
            return None
        response = super()._next(type_url, st)
        if response is None:
            self._quiet[type_url] = inputs
        else:
            # A response puts this type in flight; for clusters it also forces
            # load assignments (rule 7).
            self._generation[type_url] += 1
            if type_url == C:
                self._generation[E] += 1
        return response

    # -- shared state and derived values -------------------------------------

    def _share(self, value: S) -> S:
        return self._versions.interned.share(value)

    def _replace(
        self, old: Mapping[str, V], put: tuple[tuple[str, V], ...], drop: tuple[str, ...]
    ) -> Mapping[str, V]:
        return self._versions.derived.get(
            ("replace", id(old), put, drop),
            (old,),
            lambda: super(QuietDeltaStream, self)._replace(old, put, drop),
        )

    def _gone(self) -> bool:
        """Whether the proxy holds clusters that are gone from the snapshot."""
        cds = self._types.get(C)
        if cds is None:
            return False
        held, current = cds.client, self.snapshot.resources(C)
        return self._versions.of_snapshot(self.snapshot).get(
            ("gone", id(held)), (held,), lambda: not held.keys() <= current.keys()
        )

    def _route_refs(self) -> frozenset[str] | None:
        routes = self._types.get(R)
        if routes is None:
            return NO_NAMES
        held, client, flight = routes.acked, routes.client, routes.in_flight
        cached = self._refs
        if cached and cached[0] is held and cached[1] is client and cached[2] is flight:
            return cached[3]
        refs = super()._route_refs()
        refs = self._share(refs) if refs is not None else None
        self._refs = (held, client, flight, refs)
        return refs

    def _ready(self, clusters: Mapping[str, str]) -> frozenset[str]:
        ready = self._eds_ready

        def make() -> frozenset[str]:
            holds = ordering.ProxyHolds(clusters, ready, NO_NAMES, {})
            return self._share(ordering.ready_clusters(holds))

        key = ("ready", id(clusters), id(ready))
        return self._versions.derived.get(key, (clusters, ready), make)

    def _holds(self, type_url: str) -> ordering.ProxyHolds:
        # Only what ``ordering.sendable`` reads for this type: clusters and load
        # assignments read the routes' clusters only for clusters gone from the
        # snapshot (without any, ``retained_clusters`` is empty whatever they
        # are); routes read the warm clusters.
        cds = self._types.get(C)
        clusters = cds.client if cds else NO_VERSIONS
        retains = type_url in (C, E) and self._gone()
        return ordering.ProxyHolds(
            clusters=clusters,
            eds_ready=self._eds_ready,
            route_refs=self._route_refs() if retains else NO_NAMES,
            acked={t: st.acked for t, st in self._types.items()},
            ready=self._ready(clusters) if type_url == R else None,
        )

    def _view(self, type_url: str, st: _DeltaType) -> ordering.Sendable:
        # The key holds what ``_holds`` would read; the holds themselves are built only
        # when the view is (a hit is the usual case: another stream built it).
        names, acked = st.subscribed(), st.acked
        cds = self._types.get(C)
        clusters = cds.client if cds else NO_VERSIONS
        key: tuple[object, ...]
        if type_url == L:
            key = (L, names)
        elif type_url == R:
            key = (R, names, self._ready(clusters), id(acked))
        else:
            refs = self._route_refs() if self._gone() else NO_NAMES
            key = (type_url, names, id(clusters), refs, id(acked))
        # The snapshot by its table; names, warm clusters and route refs by value.
        return self._versions.of_snapshot(self.snapshot).get(
            key,
            (clusters, acked),
            lambda: ordering.sendable(type_url, self.snapshot, names, self._holds(type_url)),
        )

    def _gone_from_view(self, client: Mapping[str, str], view: ordering.Sendable
                        ) -> frozenset[str]:
        return self._versions.of_snapshot(self.snapshot).get(
            ("gone from view", id(client), id(view)), (client, view),
            lambda: super(QuietDeltaStream, self)._gone_from_view(client, view))

    def _absent(self, wanted: frozenset[str], view: ordering.Sendable,
                client: Mapping[str, str], told: frozenset[str]) -> frozenset[str]:
        return self._versions.of_snapshot(self.snapshot).get(
            ("absent", id(wanted), id(view), id(client), id(told)), (wanted, view, client, told),
            lambda: super(QuietDeltaStream, self)._absent(wanted, view, client, told))

    def _stale(self, content: Mapping[str, Resource], client: Mapping[str, str]) -> tuple[str, ...]:
        return self._versions.of_snapshot(self.snapshot).get(
            ("stale", id(content), id(client)),
            (content, client),
            lambda: super(QuietDeltaStream, self)._stale(content, client),
        )

    def _version_held(self, held: Mapping[str, str]) -> str:
        # Held maps are shared and never change: hashed once for every stream holding one
        # (a status listing of 10,000 streams hashed 200 names per type per stream).
        return self._versions.derived.get(
            ("held version", id(held)), (held,), lambda: super(QuietDeltaStream, self)
            ._version_held(held))

    def _names_cover(self, type_url: str, names: frozenset[str]) -> bool:
        """Whether ``names`` (shared sets) name every resource of the type."""
        def make() -> bool:
            current = self.snapshot.resources(type_url)
            return len(names) >= len(current) and names >= current.keys()

        return self._versions.of_snapshot(self.snapshot).get(
            ("cover", type_url, id(names)), (names,), make)

    def _state(self, type_url: str, st: _DeltaType) -> SyncState:
        # DeltaStream._state without building the target per call, for the usual
        # case: never NACKed, and subscribed to every resource of the type.
        if st.last_nack is not None:
            return super()._state(type_url, st)
        if not (st.wildcard or self._names_cover(type_url, st.names)):
            return super()._state(type_url, st)
        if st.in_flight is not None:
            return SyncState.STALE
        target = self._versions.of(self.snapshot, type_url)
        if st.client is target or st.client == target:
            return SyncState.SYNCED
        return SyncState.STALE

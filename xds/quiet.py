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
tests/unit/xds/test_sharing.py runs quiet and plain machines side by side.
"""

from __future__ import annotations

from xds import typeurls
from xds.delta import DeltaRequest, DeltaResponse, DeltaStream, _DeltaType
from xds.protocol import SyncState
from xds.snapshot import Snapshot

C, E, L, R = typeurls.CLUSTER, typeurls.ENDPOINT, typeurls.LISTENER, typeurls.ROUTE


class TypeVersions:
    """Name → version of every resource of a snapshot type, built once per type
    version and shared by every stream (the target of a stream that wants all)."""

    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        self._maps: dict[tuple[str, str], dict[str, str]] = {}

    def of(self, snapshot: Snapshot, type_url: str) -> dict[str, str]:
        ts = snapshot.types[type_url]
        key = (type_url, ts.version)
        found = self._maps.get(key)
        if found is None:
            found = {n: r.version for n, r in ts.resources.items()}
            while len(self._maps) >= self.keep:
                del self._maps[next(iter(self._maps))]
            self._maps[key] = found
        return found


class QuietDeltaStream(DeltaStream):
    def __init__(self, snapshot: Snapshot, versions: TypeVersions | None = None) -> None:
        super().__init__(snapshot)
        self._versions = versions or TypeVersions()
        # Per type: bumped whenever that type's state may have changed.
        self._generation = dict.fromkeys((C, E, L, R), 0)
        self._quiet: dict[str, tuple[object, ...]] = {}
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
        cds = self._types.get(C)
        gone = cds is not None and not cds.client.keys() <= types[C].resources.keys()
        routes = (g[R],) if gone else ()
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

    def _state(self, type_url: str, st: _DeltaType) -> SyncState:
        # DeltaStream._state without building the target per call, for the usual
        # case: never NACKed, and subscribed to every resource of the type.
        if st.last_nack is not None:
            return super()._state(type_url, st)
        current = self.snapshot.resources(type_url)
        if not (st.wildcard or (len(st.names) >= len(current) and st.names >= current.keys())):
            return super()._state(type_url, st)
        if st.in_flight is None and st.client == self._versions.of(self.snapshot, type_url):
            return SyncState.SYNCED
        return SyncState.STALE

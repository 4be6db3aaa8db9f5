"""Sans-IO state machine for one incremental (Delta) ADS stream.

Differences from SotW that matter (reference/xds-protocol.md rules 3, 9, 10):
subscription changes apply even on a stale nonce; each resource has its own
version; deletions and subscribed-but-missing names go in
``removed_resources``; names in ``resource_names_subscribe`` are sent even if
the server believes the client has them; ``initial_resource_versions`` on a
reconnect says what the client holds, and only exact matches are skipped.

Spec: https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol#incremental-xds
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from xds import ordering, typeurls
from xds.protocol import (
    ACKED,
    NACKED,
    WILDCARD,
    ErrorDetail,
    Nack,
    SyncState,
    TypeStatus,
    check_type,
)
from xds.snapshot import PUSH_ORDER, Resource, Snapshot, version_of_pairs


@dataclass(frozen=True)
class DeltaRequest:
    type_url: str
    subscribe: tuple[str, ...] = ()
    unsubscribe: tuple[str, ...] = ()
    initial_resource_versions: tuple[tuple[str, str], ...] = ()
    response_nonce: str = ""
    error: ErrorDetail | None = None


@dataclass(frozen=True)
class DeltaResponse:
    type_url: str
    system_version_info: str
    nonce: str
    resources: tuple[Resource, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True)
class _InFlight:
    nonce: str
    changes: dict[str, Resource]
    removed: tuple[str, ...]


S = TypeVar("S")
V = TypeVar("V")
NO_NAMES: frozenset[str] = frozenset()
# Shared empty maps: the state below is never changed in place, only replaced.
NO_VERSIONS: Mapping[str, str] = {}
NO_RESOURCES: Mapping[str, Resource] = {}


@dataclass(slots=True)
class _DeltaType:
    """One type's state. Its maps and sets are immutable: every change replaces
    them (``DeltaStream._share`` may hand out one object for equal values)."""

    names: frozenset[str] = NO_NAMES  # explicit subscriptions
    wildcard: bool = False
    seen_request: bool = False
    client: Mapping[str, str] = field(default_factory=lambda: NO_VERSIONS)  # name → version
    acked: Mapping[str, Resource] = field(default_factory=lambda: NO_RESOURCES)  # with bytes
    in_flight: _InFlight | None = None
    force: frozenset[str] = NO_NAMES
    rejected: Mapping[str, str] = field(default_factory=lambda: NO_VERSIONS)  # NACKed versions
    told_absent: frozenset[str] = NO_NAMES
    last_nack: Nack | None = None

    def subscribed(self) -> frozenset[str] | None:
        return None if self.wildcard else self.names

    def covers(self, name: str) -> bool:
        return self.wildcard or name in self.names


class DeltaStream:
    """One Delta ADS stream. Not thread-safe; one owner (the stream's task).

    Its per-type maps and sets are never changed in place: every change makes
    new ones through ``_replace`` and ``_share``, and what a response needs is
    derived through ``_holds``, ``_view`` and ``_stale``. Here they compute
    everything; ``xds.quiet`` shares equal values and derived work between
    streams through them."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._types: dict[str, _DeltaType] = {}
        self._nonce = 0
        self._eds_pending: dict[str, dict[str, str]] = {}
        self._eds_ready: Mapping[str, str] = NO_VERSIONS
        self.stale_requests = 0
        self.events: list[tuple[str, str]] = []  # (type_url, ACKED | NACKED)

    def on_request(self, req: DeltaRequest, now: float) -> list[DeltaResponse]:
        check_type(req.type_url)
        st = self._types.get(req.type_url)
        if st is None:
            st = self._types[req.type_url] = _DeltaType()
        self._subscribe(st, req)
        if req.response_nonce:
            flight = st.in_flight
            if flight is None or flight.nonce != req.response_nonce:
                # Rule 3: a stale nonce acknowledges nothing, but the
                # subscription changes above still apply.
                self.stale_requests += 1
            elif req.error is not None:
                rejected = {n: r.version for n, r in flight.changes.items()}
                st.rejected = {**st.rejected, **rejected}
                st.last_nack = Nack(
                    version_of_pairs(self._after(st, flight).items()), req.error.message, now
                )
                st.in_flight = None
                self._eds_pending.pop(flight.nonce, None)
                self.events.append((req.type_url, NACKED))
            else:
                self._apply(st, flight, req.type_url)
                self.events.append((req.type_url, ACKED))
        return self._push()

    def on_snapshot(self, snapshot: Snapshot) -> list[DeltaResponse]:
        self.snapshot = snapshot
        return self._push()

    # -- immutable state ------------------------------------------------------

    def _share(self, value: S) -> S:
        """A map or set the state keeps from now on (and never changes)."""
        return value

    def _replace(
        self, old: Mapping[str, V], put: tuple[tuple[str, V], ...], drop: tuple[str, ...]
    ) -> Mapping[str, V]:
        """``old`` with ``put`` set, then ``drop`` removed."""
        new = dict(old)
        new.update(put)
        for name in drop:
            new.pop(name, None)
        return self._share(new)

    # -- subscription ---------------------------------------------------------

    def _subscribe(self, st: _DeltaType, req: DeltaRequest) -> None:
        if not st.seen_request:
            st.seen_request = True
            # Rule 10: what the client already holds from an earlier stream.
            st.client = self._share(dict(req.initial_resource_versions))
            if not req.subscribe:
                st.wildcard = True  # legacy wildcard: an empty first request
        if req.subscribe:
            added = set(req.subscribe)
            if WILDCARD in added:
                st.wildcard = True
                added.discard(WILDCARD)
            if added:
                st.names = self._share(st.names | added)
                st.force = st.force | added  # rule 10: sent even if the client has it
                st.told_absent = st.told_absent - added or NO_NAMES
        if not req.unsubscribe:
            return
        names, force, told_absent = set(st.names), set(st.force), set(st.told_absent)
        gone: list[str] = []
        for name in req.unsubscribe:
            if name == WILDCARD:
                st.wildcard = False
                gone += [n for n in st.client if n not in names]
                continue
            names.discard(name)
            if st.wildcard:
                # Rule 9: still covered by the wildcard, so answer it with the
                # resource (or its removal) to keep the client consistent.
                force.add(name)
            else:
                force.discard(name)
                told_absent.discard(name)
                gone.append(name)
        st.names = self._share(frozenset(names)) if names else NO_NAMES
        st.force = frozenset(force) if force else NO_NAMES
        st.told_absent = frozenset(told_absent) if told_absent else NO_NAMES
        self._update(st, (), tuple(gone))

    def _update(
        self, st: _DeltaType, put: tuple[tuple[str, Resource], ...], drop: tuple[str, ...]
    ) -> None:
        """The client holds ``put`` and no longer ``drop``."""
        if put or any(n in st.client or n in st.acked for n in drop):
            st.client = self._replace(st.client, tuple([(n, r.version) for n, r in put]), drop)
            st.acked = self._replace(st.acked, put, drop)

    def _apply(self, st: _DeltaType, flight: _InFlight, type_url: str) -> None:
        changes = flight.changes
        if st.wildcard or changes.keys() <= st.names:
            put = tuple(changes.items())  # all still subscribed
        else:
            put = tuple((n, r) for n, r in changes.items() if st.covers(n))
        self._update(st, put, flight.removed)
        st.in_flight = None
        if type_url == typeurls.CLUSTER and not self._eds_ready.keys() <= st.client.keys():
            # A cluster the proxy dropped must warm again if it returns.
            kept = {n: v for n, v in self._eds_ready.items() if n in st.client}
            self._eds_ready = self._share(kept)
        if type_url == typeurls.ENDPOINT:
            ready = self._eds_pending.pop(flight.nonce, None)
            if ready and ready.items() - self._eds_ready.items():
                self._eds_ready = self._share({**self._eds_ready, **ready})

    @staticmethod
    def _after(st: _DeltaType, flight: _InFlight | None) -> dict[str, str]:
        """What the client will hold once ``flight`` is applied."""
        result = dict(st.client)
        if flight is not None:
            result.update({n: r.version for n, r in flight.changes.items()})
            for name in flight.removed:
                result.pop(name, None)
        return result

    # -- output ---------------------------------------------------------------

    def _route_refs(self) -> frozenset[str] | None:
        """Clusters named by the routes the proxy holds or has in flight."""
        routes = self._types.get(typeurls.ROUTE)
        if routes is None:
            return NO_NAMES
        if routes.client.keys() - routes.acked.keys():
            return None  # routes from an earlier stream: their targets are unknown
        known = list(routes.acked.values())
        if routes.in_flight is not None:
            known += routes.in_flight.changes.values()
        return frozenset().union(*(r.refs for r in known))

    def _holds(self, type_url: str) -> ordering.ProxyHolds:
        cds = self._types.get(typeurls.CLUSTER)
        return ordering.ProxyHolds(
            clusters=cds.client if cds else NO_VERSIONS,
            eds_ready=self._eds_ready,
            route_refs=self._route_refs(),
            acked={t: st.acked for t, st in self._types.items()},
        )

    def _view(self, type_url: str, st: _DeltaType) -> ordering.Sendable:
        return ordering.sendable(type_url, self.snapshot, st.subscribed(), self._holds(type_url))

    def _stale(self, content: Mapping[str, Resource], client: Mapping[str, str]) -> tuple[str, ...]:
        """The names in ``content`` (in its order) the client holds at another version."""
        return tuple([n for n, r in content.items() if client.get(n) != r.version])

    def _push(self) -> list[DeltaResponse]:
        out: list[DeltaResponse] = []
        for type_url in PUSH_ORDER:
            st = self._types.get(type_url)
            if st is None or st.in_flight is not None:
                continue  # coalesce: one response in flight per type
            response = self._next(type_url, st)
            if response is not None:
                out.append(response)
        return out

    def _next(self, type_url: str, st: _DeltaType) -> DeltaResponse | None:
        view = self._view(type_url, st)
        client, force, rejected = st.client, st.force, st.rejected
        content = view.content
        stale = self._stale(content, client)
        if force or rejected:
            pick = force.union(stale)
            changes = {
                n: r for n, r in content.items() if n in pick and rejected.get(n) != r.version
            }
        else:
            changes = {n: content[n] for n in stale}
        # Held by the client, gone from the view: removed (as sets: the order
        # of names does not matter until they are sorted below).
        removed = self._gone_from_view(client, view)
        wanted = st.names | force if force else st.names
        if wanted:
            # Rule 10: a subscribed name that does not exist, told once.
            absent = self._absent(wanted, view, client, st.told_absent)
            if absent:
                removed = removed | absent
                st.told_absent = st.told_absent | absent
        if force:
            st.force = force.difference(content, removed) or NO_NAMES
        if not changes and not removed:
            return None
        self._nonce += 1
        nonce = str(self._nonce)
        flight = _InFlight(nonce, changes, tuple(sorted(removed)))
        st.in_flight = flight
        if type_url == typeurls.CLUSTER:
            # Rule 7: a changed cluster warms only on an EDS response after it.
            eds = self._types.get(typeurls.ENDPOINT)
            if eds is not None:
                forced = {n for n in changes if eds.covers(n)}
                if forced:
                    eds.force = eds.force | forced
        elif type_url == typeurls.ENDPOINT:
            cds = self._types.get(typeurls.CLUSTER)
            clusters = self._after(cds, cds.in_flight) if cds else {}
            self._eds_pending[nonce] = {n: clusters[n] for n in changes if n in clusters}
        return DeltaResponse(
            type_url,
            self.snapshot.types[type_url].version,
            nonce,
            tuple(changes.values()),
            flight.removed,
        )

    # -- status ---------------------------------------------------------------

    def status(self) -> list[TypeStatus]:
        result = []
        for type_url in PUSH_ORDER:
            st = self._types.get(type_url)
            if st is None:
                continue
            acked = self._version_held(st.client)
            sent = (acked if st.in_flight is None
                    else version_of_pairs(self._after(st, st.in_flight).items()))
            result.append(
                TypeStatus(type_url, sent, acked, self._state(type_url, st), st.last_nack)
            )
        return result

    def _gone_from_view(self, client: Mapping[str, str], view: ordering.Sendable
                        ) -> frozenset[str]:
        """Held by the client, gone from the view (and not held back): to remove."""
        removed = client.keys() - view.content.keys()
        if removed and view.held:
            removed -= view.held
        return frozenset(removed)

    def _absent(self, wanted: frozenset[str], view: ordering.Sendable,
                client: Mapping[str, str], told: frozenset[str]) -> frozenset[str]:
        """Names the client wants that do not exist and it was not told of yet."""
        return frozenset(wanted.difference(view.content, view.held, client, told))

    def _version_held(self, held: Mapping[str, str]) -> str:
        """The version named by what a client holds (name → version)."""
        return version_of_pairs(held.items())

    def _state(self, type_url: str, st: _DeltaType) -> SyncState:
        if st.last_nack is not None and any(
            st.rejected.get(n) == r.version
            for n, r in ordering.target(type_url, self.snapshot, st.subscribed()).items()
        ):
            return SyncState.NACKED
        target = {
            n: r.version
            for n, r in ordering.target(type_url, self.snapshot, st.subscribed()).items()
        }
        if st.in_flight is None and st.client == target:
            return SyncState.SYNCED
        return SyncState.STALE

    def holds(self, type_url: str, name: str) -> str | None:
        """The version of one resource the proxy has ACKed (None: none)."""
        st = self._types.get(type_url)
        return st.client.get(name) if st is not None else None

    def held(self, type_url: str, name: str) -> Resource | None:
        """The resource the proxy has ACKed, when its bytes are known."""
        st = self._types.get(type_url)
        return st.acked.get(name) if st is not None else None

    def wants(self, type_url: str, name: str) -> bool:
        """Whether the proxy subscribes to the resource (wildcard or by name)."""
        st = self._types.get(type_url)
        return st is not None and st.seen_request and st.covers(name)

    def converged(self) -> bool:
        return bool(self._types) and all(
            self._state(t, st) == SyncState.SYNCED for t, st in self._types.items()
        )

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

from dataclasses import dataclass, field

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


@dataclass
class _DeltaType:
    names: set[str] = field(default_factory=set)  # explicit subscriptions
    wildcard: bool = False
    seen_request: bool = False
    client: dict[str, str] = field(default_factory=dict)  # name → version it holds
    acked: dict[str, Resource] = field(default_factory=dict)  # those we have bytes for
    in_flight: _InFlight | None = None
    force: set[str] = field(default_factory=set)
    rejected: dict[str, str] = field(default_factory=dict)  # name → NACKed version
    told_absent: set[str] = field(default_factory=set)
    last_nack: Nack | None = None

    def subscribed(self) -> frozenset[str] | None:
        return None if self.wildcard else frozenset(self.names)

    def covers(self, name: str) -> bool:
        return self.wildcard or name in self.names


class DeltaStream:
    """One Delta ADS stream. Not thread-safe; one owner (the stream's task)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._types: dict[str, _DeltaType] = {}
        self._nonce = 0
        self._eds_pending: dict[str, dict[str, str]] = {}
        self._eds_ready: dict[str, str] = {}
        self.stale_requests = 0
        self.events: list[tuple[str, str]] = []  # (type_url, ACKED | NACKED)

    def on_request(self, req: DeltaRequest, now: float) -> list[DeltaResponse]:
        check_type(req.type_url)
        st = self._types.setdefault(req.type_url, _DeltaType())
        self._subscribe(st, req)
        if req.response_nonce:
            flight = st.in_flight
            if flight is None or flight.nonce != req.response_nonce:
                # Rule 3: a stale nonce acknowledges nothing, but the
                # subscription changes above still apply.
                self.stale_requests += 1
            elif req.error is not None:
                st.rejected.update({n: r.version for n, r in flight.changes.items()})
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

    # -- subscription ---------------------------------------------------------

    def _subscribe(self, st: _DeltaType, req: DeltaRequest) -> None:
        if not st.seen_request:
            st.seen_request = True
            # Rule 10: what the client already holds from an earlier stream.
            st.client = dict(req.initial_resource_versions)
            if not req.subscribe:
                st.wildcard = True  # legacy wildcard: an empty first request
        for name in req.subscribe:
            if name == WILDCARD:
                st.wildcard = True
                continue
            st.names.add(name)
            st.force.add(name)  # rule 10: sent even if the client has it
            st.told_absent.discard(name)
        for name in req.unsubscribe:
            if name == WILDCARD:
                st.wildcard = False
                for held in [n for n in st.client if n not in st.names]:
                    self._forget(st, held)
                continue
            st.names.discard(name)
            if st.wildcard:
                # Rule 9: still covered by the wildcard, so answer it with the
                # resource (or its removal) to keep the client consistent.
                st.force.add(name)
            else:
                st.force.discard(name)
                st.told_absent.discard(name)
                self._forget(st, name)

    @staticmethod
    def _forget(st: _DeltaType, name: str) -> None:
        st.client.pop(name, None)
        st.acked.pop(name, None)

    def _apply(self, st: _DeltaType, flight: _InFlight, type_url: str) -> None:
        for name, resource in flight.changes.items():
            if st.covers(name):
                st.client[name] = resource.version
                st.acked[name] = resource
        for name in flight.removed:
            self._forget(st, name)
        st.in_flight = None
        if type_url == typeurls.CLUSTER:
            # A cluster the proxy dropped must warm again if it returns.
            self._eds_ready = {n: v for n, v in self._eds_ready.items() if n in st.client}
        if type_url == typeurls.ENDPOINT:
            self._eds_ready.update(self._eds_pending.pop(flight.nonce, {}))

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

    def _holds(self) -> ordering.ProxyHolds:
        routes = self._types.get(typeurls.ROUTE)
        refs: frozenset[str] | None = frozenset()
        if routes is not None:
            known = list(routes.acked.values())
            if routes.in_flight is not None:
                known += routes.in_flight.changes.values()
            if routes.client.keys() - routes.acked.keys():
                refs = None  # routes from an earlier stream: their targets are unknown
            else:
                refs = frozenset(c for r in known for c in r.refs)
        cds = self._types.get(typeurls.CLUSTER)
        return ordering.ProxyHolds(
            clusters=dict(cds.client) if cds else {},
            eds_ready=self._eds_ready,
            route_refs=refs,
            acked={t: st.acked for t, st in self._types.items()},
        )

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
        view = ordering.sendable(type_url, self.snapshot, st.subscribed(), self._holds())
        changes = {
            n: r
            for n, r in view.content.items()
            if (st.client.get(n) != r.version or n in st.force) and st.rejected.get(n) != r.version
        }
        removed = [n for n in st.client if n not in view.content and n not in view.held]
        for name in sorted(st.names | st.force):
            if name in view.content or name in view.held or name in st.client:
                continue
            if name not in st.told_absent:
                removed.append(name)  # rule 10: a subscribed name that does not exist
                st.told_absent.add(name)
        st.force -= view.content.keys() | set(removed)
        if not changes and not removed:
            return None
        self._nonce += 1
        nonce = str(self._nonce)
        flight = _InFlight(nonce, changes, tuple(sorted(set(removed))))
        st.in_flight = flight
        if type_url == typeurls.CLUSTER:
            # Rule 7: a changed cluster warms only on an EDS response after it.
            eds = self._types.get(typeurls.ENDPOINT)
            if eds is not None:
                eds.force |= {n for n in changes if eds.covers(n)}
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
            sent = version_of_pairs(self._after(st, st.in_flight).items())
            acked = version_of_pairs(st.client.items())
            result.append(
                TypeStatus(type_url, sent, acked, self._state(type_url, st), st.last_nack)
            )
        return result

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

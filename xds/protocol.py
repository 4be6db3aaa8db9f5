"""Sans-IO state machine for one state-of-the-world ADS stream.

The server feeds it decoded requests and new snapshots; it answers with the
responses to write. It never blocks, reads a clock or touches a socket, so
every protocol rule (reference/xds-protocol.md) is a plain unit test.

Spec: https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from xds import ordering, typeurls
from xds.snapshot import FULL_STATE_TYPES, PUSH_ORDER, Resource, Snapshot

SERVED_TYPES = frozenset(PUSH_ORDER)
WILDCARD = "*"
ACKED = "ACKED"
NACKED = "NACKED"


class ProtocolError(Exception):
    """The client broke the protocol; the stream ends with INVALID_ARGUMENT."""


class SyncState(enum.Enum):
    NOT_SENT = "NOT_SENT"
    SYNCED = "SYNCED"
    STALE = "STALE"
    NACKED = "NACKED"


@dataclass(frozen=True)
class ErrorDetail:
    code: int
    message: str


@dataclass(frozen=True)
class Request:
    type_url: str
    version_info: str = ""
    resource_names: tuple[str, ...] = ()
    response_nonce: str = ""
    error: ErrorDetail | None = None
    # ``resource_names`` as a set, when the decoder shares one between requests.
    name_set: frozenset[str] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Response:
    type_url: str
    version_info: str
    nonce: str
    resources: tuple[Resource, ...]


@dataclass(frozen=True)
class Nack:
    version: str
    message: str
    at: float


@dataclass(frozen=True)
class TypeStatus:
    type_url: str
    version_sent: str | None
    version_acked: str | None
    state: SyncState
    last_nack: Nack | None


def check_type(type_url: str) -> None:
    if not type_url:
        raise ProtocolError("request has no type_url (required on an aggregated stream)")
    if type_url not in SERVED_TYPES:
        raise ProtocolError(f"unsupported type_url {type_url!r}")


@dataclass
class _SotwType:
    names: frozenset[str] | None = None  # None: wildcard
    seen_request: bool = False
    open: bool = False  # the client has a request we have not answered
    force: bool = False  # answer even if the content is unchanged
    sent_nonce: str | None = None
    sent_version: str | None = None
    sent: dict[str, Resource] = field(default_factory=dict)
    acked_version: str | None = None
    acked: dict[str, Resource] = field(default_factory=dict)
    nacked_version: str | None = None
    last_nack: Nack | None = None
    view_key: tuple[object, ...] | None = None  # what ``view`` was computed from
    view: ordering.Sendable | None = None


class SotwStream:
    """One SotW ADS stream. Not thread-safe; one owner (the stream's task)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._types: dict[str, _SotwType] = {}
        self._nonce = 0
        self._eds_pending: dict[str, dict[str, str]] = {}  # nonce → cluster → cluster version
        self._eds_ready: dict[str, str] = {}
        self._eds_gen = 0  # bumped whenever _eds_ready changes
        self._route_refs: frozenset[str] = frozenset()  # named by held routes
        self.stale_requests = 0
        # (type_url, ACKED | NACKED) since the owner last drained them.
        self.events: list[tuple[str, str]] = []

    # -- inputs ---------------------------------------------------------------

    def on_request(self, req: Request, now: float) -> list[Response]:
        check_type(req.type_url)
        st = self._types.setdefault(req.type_url, _SotwType())
        if req.response_nonce and req.response_nonce != st.sent_nonce:
            # Rule 3: a SotW request whose nonce is not the latest sent for its
            # type is stale; the client will send a current one.
            self.stale_requests += 1
            return []
        self._subscribe(st, req)
        if req.response_nonce:
            if req.error is not None:
                # Rule 2: NACK. Keep the last good version; never resend the
                # rejected one (see _push); surface the error.
                st.nacked_version = st.sent_version
                st.last_nack = Nack(st.sent_version or "", req.error.message, now)
                self.events.append((req.type_url, NACKED))
                st.sent = dict(st.acked)
            else:
                st.acked_version = st.sent_version
                st.acked = st.sent
                self.events.append((req.type_url, ACKED))
                if req.type_url == typeurls.CLUSTER:
                    # A cluster the proxy dropped must warm again if it returns,
                    # even with identical content.
                    self._eds_ready = {n: v for n, v in self._eds_ready.items() if n in st.acked}
                if req.type_url == typeurls.ENDPOINT:
                    self._eds_ready.update(self._eds_pending.pop(req.response_nonce, {}))
                    self._eds_gen += 1
            self._eds_pending = {
                n: v for n, v in self._eds_pending.items() if n == self._latest_eds_nonce()
            }
            if req.type_url == typeurls.ROUTE:
                self._update_route_refs()
        st.open = True
        return self._push()

    def on_snapshot(self, snapshot: Snapshot) -> list[Response]:
        self.snapshot = snapshot
        return self._push()

    # -- subscription (rules 5 and 9) -----------------------------------------

    def _subscribe(self, st: _SotwType, req: Request) -> None:
        names = req.name_set if req.name_set is not None else frozenset(req.resource_names)
        first = not st.seen_request
        st.seen_request = True
        new: frozenset[str] | None = names
        if WILDCARD in names or (not names and (first or st.names is None)):
            # Rule 9: "*" or an empty first request means all; a legacy
            # wildcard stays one. After explicit names, empty means none.
            new = None
        if first or (new is None and st.names is not None):
            st.force = True
        elif new is not None and st.names is not None and new is not st.names and new - st.names:
            # Rule 5: newly requested names are answered even if unchanged
            # (this covers unsubscribe-then-resubscribe).
            st.force = True
        st.names = new

    # -- output ---------------------------------------------------------------

    def _update_route_refs(self) -> None:
        routes = self._types.get(typeurls.ROUTE)
        if routes is None:
            return
        held = (*routes.acked.values(), *routes.sent.values())
        self._route_refs = frozenset().union(*(r.refs for r in held))

    def _holds(self) -> ordering.ProxyHolds:
        cds = self._types.get(typeurls.CLUSTER)
        return ordering.ProxyHolds(
            clusters={n: r.version for n, r in cds.acked.items()} if cds else {},
            eds_ready=self._eds_ready,
            route_refs=self._route_refs,
            acked={t: st.acked for t, st in self._types.items()},
        )

    def _view(self, type_url: str, st: _SotwType) -> ordering.Sendable:
        """``ordering.sendable``, recomputed only when an input changed (hot path)."""
        cds = self._types.get(typeurls.CLUSTER)
        cds_acked = cds.acked_version if cds else None
        key: tuple[object, ...] = (self.snapshot.types[type_url].version, st.names)
        if type_url in (typeurls.CLUSTER, typeurls.ENDPOINT):
            key += (cds_acked, self._route_refs, st.acked_version)
        elif type_url == typeurls.ROUTE:
            key += (cds_acked, self._eds_gen)
        if st.view is None or st.view_key != key:
            st.view = self._computed(type_url, st, cds)
            st.view_key = key
        return st.view

    def _computed(self, type_url: str, st: _SotwType, cds: _SotwType | None) -> ordering.Sendable:
        """The view itself (``xds.sharing`` shares it between streams in one state)."""
        return ordering.sendable(type_url, self.snapshot, st.names, self._holds())

    def _push(self) -> list[Response]:
        out: list[Response] = []
        for type_url in PUSH_ORDER:
            st = self._types.get(type_url)
            if st is None or not st.open:
                continue
            view = self._view(type_url, st)
            content, version = view.content, view.version
            if version == st.nacked_version:
                continue
            unchanged = version == st.sent_version
            if unchanged and not st.force:
                continue
            if not content and type_url not in FULL_STATE_TYPES and st.sent_version is None:
                continue  # rule 5: remember, send when the names appear
            out.append(self._send(type_url, st, version, content))
        return out

    def _send(
        self, type_url: str, st: _SotwType, version: str, content: dict[str, Resource]
    ) -> Response:
        self._nonce += 1
        nonce = str(self._nonce)
        if type_url in FULL_STATE_TYPES or st.force or st.sent_version is None:
            wire = tuple(content.values())
        else:
            # SotW EDS/RDS are not full-state: Envoy updates only the resources a
            # response carries and keeps the others, so send what changed. A
            # forced answer (new names, EDS after CDS) carries everything.
            wire = self._changed(st.sent, content)
        st.open = False
        st.force = False
        st.sent_nonce = nonce
        st.sent_version = version
        st.sent = content
        if type_url == typeurls.ROUTE:
            self._update_route_refs()
        if type_url == typeurls.CLUSTER:
            # Rule 7: a cluster finishes warming only on an EDS response that
            # follows it, so EDS is always answered after any CDS response.
            eds = self._types.get(typeurls.ENDPOINT)
            if eds is not None:
                eds.force = True
        elif type_url == typeurls.ENDPOINT:
            cds = self._types.get(typeurls.CLUSTER)
            sent_clusters = cds.sent if cds else {}
            # Only what is on the wire warms a cluster.
            self._eds_pending[nonce] = {
                r.name: sent_clusters[r.name].version for r in wire if r.name in sent_clusters
            }
        return Response(type_url, version, nonce, wire)

    def _changed(self, previous: Mapping[str, Resource],
                 content: Mapping[str, Resource]) -> tuple[Resource, ...]:
        """The resources of ``content`` that ``previous`` lacks or holds at another version."""
        return tuple(
            r for n, r in content.items()
            if (p := previous.get(n)) is None or p.version != r.version
        )

    def _latest_eds_nonce(self) -> str | None:
        eds = self._types.get(typeurls.ENDPOINT)
        return eds.sent_nonce if eds else None

    # -- status ---------------------------------------------------------------

    def status(self) -> list[TypeStatus]:
        result = []
        for type_url in PUSH_ORDER:
            st = self._types.get(type_url)
            if st is None:
                continue
            result.append(
                TypeStatus(
                    type_url,
                    st.sent_version,
                    st.acked_version,
                    self._state(type_url, st),
                    st.last_nack,
                )
            )
        return result

    def _state(self, type_url: str, st: _SotwType) -> SyncState:
        if st.sent_version is None:
            return SyncState.NOT_SENT
        if st.nacked_version is not None and st.nacked_version == st.sent_version:
            return SyncState.NACKED
        want = self._target_version(type_url, st.names)
        if st.acked_version == want and st.sent_version == want:
            return SyncState.SYNCED
        return SyncState.STALE

    def holds(self, type_url: str, name: str) -> str | None:
        """The version of one resource the proxy has ACKed (None: none)."""
        st = self._types.get(type_url)
        found = st.acked.get(name) if st is not None else None
        return found.version if found is not None else None

    def held(self, type_url: str, name: str) -> Resource | None:
        """The resource the proxy has ACKed, when its bytes are known."""
        st = self._types.get(type_url)
        return st.acked.get(name) if st is not None else None

    def wants(self, type_url: str, name: str) -> bool:
        """Whether the proxy subscribes to the resource (wildcard or by name)."""
        st = self._types.get(type_url)
        return st is not None and st.seen_request and (st.names is None or name in st.names)

    def converged(self) -> bool:
        """Every requested type has ACKed exactly the current snapshot's content."""
        return bool(self._types) and all(
            self._state(t, st) == SyncState.SYNCED or self._nothing_to_send(t, st)
            for t, st in self._types.items()
        )

    def _target_version(self, type_url: str, names: frozenset[str] | None) -> str:
        return ordering.target_version(type_url, self.snapshot, names)

    def _nothing_to_send(self, type_url: str, st: _SotwType) -> bool:
        if st.sent_version is not None:
            return False
        return not ordering.target(type_url, self.snapshot, st.names)

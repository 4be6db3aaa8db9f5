"""Work shared between streams, or skipped, changes nothing a stream sends.

A ``SharedSotwStream`` runs side by side with a plain ``SotwStream`` on the
same inputs (random configuration histories, with NACKs), while other shared
streams fill the shared views first; both must answer alike at every step.
``QuietDeltaStream`` is checked against ``DeltaStream`` the same way. Shared
response bodies parse to the same message as a fresh encoding.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.xds.test_protocol_delta import FakeDeltaEnvoy
from tests.unit.xds.test_protocol_sotw import BASE, FakeEnvoy, configs
from tests.unit.xds.worlds import C, E, L, R, world
from xds._wire import wire_pb2 as w
from xds.delta import DeltaRequest, DeltaResponse, DeltaStream
from xds.protocol import ErrorDetail, Request, Response, SotwStream
from xds.quiet import QuietDeltaStream
from xds.server import encode
from xds.sharing import ResponseBodies, SharedSotwStream, SharedViews, nonce_field
from xds.snapshot import Snapshot


def summary(responses: list[Response]) -> list[tuple[object, ...]]:
    return [
        (r.type_url, r.version_info, r.nonce, tuple((x.name, x.version) for x in r.resources))
        for r in responses
    ]


class Twin:
    """Feeds every input to a plain and a shared machine; checks they agree."""

    def __init__(self, snapshot: Snapshot, shared: SharedViews) -> None:
        self.plain = SotwStream(snapshot)
        self.shared = SharedSotwStream(snapshot, shared)
        self._types = self.plain._types  # FakeEnvoy reads the nonces sent

    def _same(self, a: list[Response], b: list[Response]) -> list[Response]:
        assert summary(a) == summary(b)
        assert self.plain.status() == self.shared.status()
        assert self.plain.converged() == self.shared.converged()
        assert self.plain.events == self.shared.events
        return a

    def on_request(self, req: Request, now: float) -> list[Response]:
        return self._same(self.plain.on_request(req, now), self.shared.on_request(req, now))

    def on_snapshot(self, snapshot: Snapshot) -> list[Response]:
        return self._same(self.plain.on_snapshot(snapshot), self.shared.on_snapshot(snapshot))

    def converged(self) -> bool:
        return self.plain.converged()


ACK, NACK, NACK_THEN_ACK = 0, 1, 2


class NackingEnvoy(FakeEnvoy):
    """A FakeEnvoy that rejects some responses (one flag per response); after
    some NACKs it sends the same nonce again without an error."""

    def __init__(self, machine: Twin, flags: list[int]) -> None:
        super().__init__(machine)  # type: ignore[arg-type]
        self.flags = list(flags)

    def apply(self, resp: Response) -> list[Response]:
        flag = self.flags.pop(0) if self.flags else ACK
        if flag == ACK:
            return super().apply(resp)
        names: tuple[str, ...] = ()
        if resp.type_url == E:
            names = tuple(sorted(self.clusters))
        elif resp.type_url == R:
            names = tuple(sorted({x for refs in self.listeners.values() for x in refs}))
        nack = Request(resp.type_url, "", names, resp.nonce, ErrorDetail(3, "rejected"))
        out = self.m.on_request(nack, 0)
        if flag == NACK_THEN_ACK:
            out += self.m.on_request(Request(resp.type_url, "", names, resp.nonce), 0)
        return out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(configs(), min_size=1, max_size=6),
    st.lists(
        st.lists(st.sampled_from([ACK, NACK, NACK_THEN_ACK]), max_size=12), min_size=3, max_size=3
    ),
)
def test_shared_streams_answer_exactly_like_plain_ones(
    history: list[Snapshot], nacks: list[list[int]]
) -> None:
    shared = SharedViews()
    # Stream 0 never NACKs, so later streams in the same state reuse its views.
    envoys = [NackingEnvoy(Twin(history[0], shared), flags) for flags in [[], *nacks]]
    for envoy in envoys:
        envoy.start()
    for snapshot in history[1:]:
        for envoy in envoys:
            envoy.run(envoy.m.on_snapshot(snapshot))
    assert shared.view_reuses > 0


@settings(max_examples=200, deadline=None)
@given(st.lists(configs(), min_size=2, max_size=6), st.data())
def test_shared_streams_at_different_points_answer_like_plain_ones(
    history: list[Snapshot], data: st.DataObject
) -> None:
    """Streams that see different snapshots and process their responses
    interleaved, so that they share views while their states differ."""
    shared = SharedViews()
    envoys = [FakeEnvoy(Twin(history[0], shared)) for _ in range(3)]  # type: ignore[arg-type]
    pending: list[list[Response]] = []
    for envoy in envoys:
        pending.append(envoy.m.on_request(Request(C), 0) + envoy.m.on_request(Request(L), 0))
    for snapshot in history[1:]:
        for i, envoy in enumerate(envoys):
            if data.draw(st.booleans()):
                pending[i] += envoy.m.on_snapshot(snapshot)
        for _ in range(data.draw(st.integers(0, 12))):
            i = data.draw(st.integers(0, len(envoys) - 1))
            if pending[i]:
                pending[i] += envoys[i].apply(pending[i].pop(0))
    for i, envoy in enumerate(envoys):
        envoy.run(pending[i] + envoy.m.on_snapshot(history[-1]))
        assert envoy.m.converged()


def test_streams_in_the_same_state_share_one_view_and_one_content_dict() -> None:
    shared = SharedViews()
    machines = [SharedSotwStream(BASE, shared) for _ in range(3)]
    envoys = [FakeEnvoy(m) for m in machines]
    for envoy in envoys:
        envoy.start()
    moved = world({"chat/v1": "c1", "chat/v2": "c2"}, {"chat": {"chat/v1": 50, "chat/v2": 50}})
    for envoy in envoys:
        envoy.run(envoy.m.on_snapshot(moved))
        assert envoy.m.converged()
    sent = [m._types[R].sent for m in machines]
    assert sent[0] is sent[1] is sent[2]
    names = [m._types[E].names for m in machines]
    assert names[0] is names[1] is names[2]
    refs = [m._route_refs for m in machines]
    assert refs[0] is refs[1] is refs[2]


def sotw_fields(raw: bytes) -> tuple[object, ...]:
    m = w.DiscoveryResponseView.FromString(raw)
    return (m.version_info, tuple(m.resources), m.type_url, m.nonce)


def test_shared_sotw_body_parses_like_a_fresh_encoding() -> None:
    bodies = ResponseBodies()
    resources = tuple(BASE.resources(C).values())
    one = Response(C, BASE.types[C].version, "7", resources)
    two = Response(C, BASE.types[C].version, "1234", resources)
    assert sotw_fields(bodies.encode(one)) == sotw_fields(encode(one))
    assert sotw_fields(bodies.encode(two)) == sotw_fields(encode(two))
    assert (bodies.builds, bodies.reuses) == (1, 1)
    other = Response(C, "another-version", "8", resources)
    assert sotw_fields(bodies.encode(other)) == sotw_fields(encode(other))
    assert bodies.builds == 2


def test_shared_delta_body_parses_like_a_fresh_encoding() -> None:
    bodies = ResponseBodies()
    resources = tuple(BASE.resources(L).values())
    for nonce in ("1", "300"):
        response = DeltaResponse(L, BASE.types[L].version, nonce, resources, ("gone",))
        shared = w.DeltaDiscoveryResponseView.FromString(bodies.encode(response))
        fresh = w.DeltaDiscoveryResponseView.FromString(encode(response))
        assert shared == fresh
        assert shared.nonce == nonce
    assert (bodies.builds, bodies.reuses) == (1, 1)


def test_nonce_field_lengths_beyond_one_byte() -> None:
    nonce = "n" * 300
    raw = nonce_field(nonce)
    assert w.DiscoveryResponseView.FromString(raw).nonce == nonce


def test_request_names_map_to_the_snapshots_own_strings() -> None:
    shared = SharedViews()
    wire = "".join(["chat/", "v1"])  # a new string, as parsed from a request
    known = next(n for n in BASE.resources(E) if n == "chat/v1")
    [got, unknown] = shared.names.strings(BASE, [wire, "not/there"])
    assert got is known
    assert unknown == "not/there"
    a = shared.names.frozen(frozenset({"x", "y"}))
    assert shared.names.frozen(frozenset({"y", "x"})) is a


# -- Delta: types found quiet are not recomputed -------------------------------


def delta_summary(responses: list[DeltaResponse]) -> list[tuple[object, ...]]:
    return [
        (
            r.type_url,
            r.system_version_info,
            r.nonce,
            tuple((x.name, x.version) for x in r.resources),
            r.removed,
        )
        for r in responses
    ]


class DeltaTwin:
    def __init__(self, snapshot: Snapshot) -> None:
        self.plain = DeltaStream(snapshot)
        self.quiet = QuietDeltaStream(snapshot)
        self._types = self.plain._types

    def _same(self, a: list[DeltaResponse], b: list[DeltaResponse]) -> list[DeltaResponse]:
        assert delta_summary(a) == delta_summary(b)
        assert self.plain.status() == self.quiet.status()
        assert self.plain.converged() == self.quiet.converged()
        assert self.plain.events == self.quiet.events
        return a

    def on_request(self, req: DeltaRequest, now: float) -> list[DeltaResponse]:
        return self._same(self.plain.on_request(req, now), self.quiet.on_request(req, now))

    def on_snapshot(self, snapshot: Snapshot) -> list[DeltaResponse]:
        return self._same(self.plain.on_snapshot(snapshot), self.quiet.on_snapshot(snapshot))

    def converged(self) -> bool:
        return self.plain.converged()


class NackingDeltaEnvoy(FakeDeltaEnvoy):
    def __init__(self, machine: DeltaTwin, flags: list[int]) -> None:
        super().__init__(machine)  # type: ignore[arg-type]
        self.flags = list(flags)

    def apply(self, resp: DeltaResponse) -> list[DeltaResponse]:
        flag = self.flags.pop(0) if self.flags else ACK
        if flag == ACK:
            return super().apply(resp)
        nack = DeltaRequest(resp.type_url, response_nonce=resp.nonce, error=ErrorDetail(3, "no"))
        out = self.m.on_request(nack, 0)
        if flag == NACK_THEN_ACK:  # a stale nonce by now: acknowledges nothing
            out += self.m.on_request(DeltaRequest(resp.type_url, response_nonce=resp.nonce), 0)
        return out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(configs(), min_size=1, max_size=6),
    st.lists(st.sampled_from([ACK, NACK, NACK_THEN_ACK]), max_size=12),
)
def test_quiet_delta_streams_answer_exactly_like_plain_ones(
    history: list[Snapshot], flags: list[int]
) -> None:
    envoy = NackingDeltaEnvoy(DeltaTwin(history[0]), flags)
    envoy.start()
    for snapshot in history[1:]:
        envoy.run(envoy.m.on_snapshot(snapshot))


def test_a_weight_change_recomputes_only_the_routes_on_a_delta_stream() -> None:
    envoy = FakeDeltaEnvoy(QuietDeltaStream(BASE))
    envoy.start()
    machine = envoy.m
    assert isinstance(machine, QuietDeltaStream)
    before = machine.skipped
    moved = world({"chat/v1": "c1", "chat/v2": "c2"}, {"chat": {"chat/v1": 50, "chat/v2": 50}})
    [routes] = machine.on_snapshot(moved)
    assert routes.type_url == R
    assert machine.skipped - before == 3  # clusters, endpoints, listeners: unchanged inputs
    before = machine.skipped
    machine.on_request(DeltaRequest(R, response_nonce=routes.nonce), 0)  # the ACK
    assert machine.skipped - before == 3  # only the routes are asked again
    assert machine.converged()


@settings(max_examples=200, deadline=None)
@given(st.lists(configs(), min_size=2, max_size=6), st.data())
def test_quiet_delta_streams_with_snapshots_mid_flight(
    history: list[Snapshot], data: st.DataObject
) -> None:
    flags = data.draw(st.lists(st.sampled_from([ACK, NACK, NACK_THEN_ACK]), max_size=8))
    envoy = NackingDeltaEnvoy(DeltaTwin(history[0]), flags)
    pending = envoy.m.on_request(DeltaRequest(C), 0) + envoy.m.on_request(DeltaRequest(L), 0)
    for snapshot in history[1:]:
        pending += envoy.m.on_snapshot(snapshot)
        for _ in range(data.draw(st.integers(0, 8))):
            if pending:
                pending += envoy.apply(pending.pop(0))
    envoy.run(pending)


def test_response_bodies_stay_within_their_byte_budget() -> None:
    resources = tuple(BASE.resources(C).values())
    one = len(encode(Response(C, "v0", "", resources)))
    bodies = ResponseBodies(max_bytes=one * 8)
    for i in range(20):
        bodies.encode(Response(C, f"v{i}", "1", resources))
        assert bodies.bytes <= one * 8
    bodies.encode(Response(C, "v19", "2", resources))
    assert bodies.reuses == 1  # the newest are kept

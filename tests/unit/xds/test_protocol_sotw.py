"""State-of-the-world stream rules, one named test per rule of
reference/xds-protocol.md, plus a make-before-break property over random
configuration histories."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.xds.worlds import C, E, L, R, ack, by_type, names, world
from xds.protocol import ErrorDetail, ProtocolError, Request, Response, SotwStream, SyncState
from xds.snapshot import InconsistentSnapshot, Snapshot, TypeSnapshot

BASE = world({"chat/v1": "c1", "chat/v2": "c2"}, {"chat": {"chat/v1": 90, "chat/v2": 10}})


class FakeEnvoy:
    """Applies SotW responses like Envoy and ACKs them, subscribing EDS to its
    clusters and RDS to the routes its listeners name."""

    def __init__(self, machine: SotwStream) -> None:
        self.m = machine
        self.clusters: dict[str, str] = {}
        self.warm: set[str] = set()  # clusters that got EDS after their last CDS update
        self.endpoints: dict[str, str] = {}
        self.listeners: dict[str, frozenset[str]] = {}
        self.routes: dict[str, frozenset[str]] = {}
        self.violations: list[str] = []

    def start(self) -> None:
        self.run(self.m.on_request(Request(C), 0) + self.m.on_request(Request(L), 0))

    def run(self, responses: list[Response]) -> None:
        queue = list(responses)
        for _ in range(1000):
            if not queue:
                return
            queue += self.apply(queue.pop(0))
        raise AssertionError("no quiescence")

    def apply(self, resp: Response) -> list[Response]:
        t = resp.type_url
        if t == C:
            old = dict(self.clusters)
            self.clusters = {r.name: r.version for r in resp.resources}
            self.warm -= {n for n, v in self.clusters.items() if old.get(n) != v}
            out = self.m.on_request(ack(resp), 0)
            return out + self.m.on_request(
                Request(E, "", tuple(sorted(self.clusters)), self._nonce(E)), 0
            )
        if t == E:
            for r in resp.resources:
                self.endpoints[r.name] = r.version
                if r.name in self.clusters:
                    self.warm.add(r.name)
            return self.m.on_request(ack(resp, tuple(sorted(self.clusters))), 0)
        if t == L:
            self.listeners = {r.name: r.refs for r in resp.resources}
            wanted = tuple(sorted({x for refs in self.listeners.values() for x in refs}))
            return self.m.on_request(ack(resp), 0) + self.m.on_request(
                Request(R, "", wanted, self._nonce(R)), 0
            )
        for r in resp.resources:
            self.routes[r.name] = r.refs
            missing = r.refs - self.warm
            if missing:
                self.violations.append(f"route {r.name} names unwarmed {sorted(missing)}")
        wanted = tuple(sorted({x for refs in self.listeners.values() for x in refs}))
        return self.m.on_request(ack(resp, wanted), 0)

    def _nonce(self, t: str) -> str:
        return self.m._types[t].sent_nonce or "" if t in self.m._types else ""

    def check_routes_resolve(self) -> None:
        for name, refs in self.routes.items():
            assert refs <= self.clusters.keys(), f"route {name} names removed clusters"


def started(snapshot: Snapshot = BASE) -> FakeEnvoy:
    envoy = FakeEnvoy(SotwStream(snapshot))
    envoy.start()
    return envoy


def test_rule1_versions_are_content_hashes_independent_of_build() -> None:
    again = world({"chat/v1": "c1", "chat/v2": "c2"}, {"chat": {"chat/v1": 90, "chat/v2": 10}})
    assert again.version == BASE.version
    assert again.types[C].version == BASE.types[C].version
    changed = world({"chat/v1": "c1", "chat/v2": "c2"}, {"chat": {"chat/v1": 50, "chat/v2": 50}})
    assert changed.types[R].version != BASE.types[R].version
    assert changed.types[C].version == BASE.types[C].version


def test_initial_sync_reaches_every_type_in_ads_order() -> None:
    envoy = started()
    assert envoy.clusters.keys() == {"chat/v1", "chat/v2"}
    assert envoy.routes == {"chat": frozenset({"chat/v1", "chat/v2"})}
    assert envoy.violations == []
    assert envoy.m.converged()
    assert {s.state for s in envoy.m.status()} == {SyncState.SYNCED}


def test_rule2_nack_keeps_last_good_and_is_not_resent() -> None:
    m = SotwStream(BASE)
    first = m.on_request(Request(C), 0)[0]
    assert m.on_request(ack(first), 0) == []
    bad = world({"chat/v1": "BAD", "chat/v2": "c2"}, {"chat": {"chat/v1": 90, "chat/v2": 10}})
    pushed = by_type(m.on_snapshot(bad))[C]
    nack = Request(C, first.version_info, (), pushed.nonce, ErrorDetail(3, "bad cluster"))
    assert m.on_request(nack, 5.0) == []  # not resent in a loop
    assert m.on_snapshot(bad) == []  # nor on a rebuild of the same content
    status = {s.type_url: s for s in m.status()}[C]
    assert status.state is SyncState.NACKED
    assert status.version_acked == first.version_info  # the last good version
    assert status.last_nack is not None and status.last_nack.message == "bad cluster"
    fixed = world({"chat/v1": "c1b", "chat/v2": "c2"}, {"chat": {"chat/v1": 90, "chat/v2": 10}})
    assert by_type(m.on_snapshot(fixed))[C].version_info != pushed.version_info


def test_rule3_sotw_ignores_a_stale_nonce() -> None:
    m = SotwStream(BASE)
    first = m.on_request(Request(C), 0)[0]
    m.on_request(ack(first), 0)
    changed = world({"chat/v1": "new"}, {})
    second = by_type(m.on_snapshot(changed))[C]
    stale = Request(C, first.version_info, (), first.nonce, ErrorDetail(3, "old"))
    assert m.on_request(stale, 0) == []
    assert m.stale_requests == 1
    assert {s.type_url: s for s in m.status()}[C].last_nack is None
    assert second.nonce != first.nonce


def test_rule4_requests_need_no_response_of_their_own() -> None:
    m = SotwStream(BASE)
    first = m.on_request(Request(C), 0)[0]
    assert m.on_request(ack(first), 0) == []  # an ACK with nothing new gets nothing


def test_rule5_new_names_answered_even_if_unchanged_and_missing_ones_later() -> None:
    m = SotwStream(BASE)
    eds = m.on_request(Request(E, "", ("chat/v1",)), 0)[0]
    assert names(eds) == ["chat/v1"]
    m.on_request(ack(eds, ("chat/v1",)), 0)
    # unsubscribe, then resubscribe: answered although nothing changed
    r1 = m.on_request(Request(E, eds.version_info, (), eds.nonce), 0)
    assert r1 == [] or names(r1[0]) == []
    m2 = SotwStream(BASE)
    eds = m2.on_request(Request(E, "", ("chat/v1",)), 0)[0]
    m2.on_request(ack(eds, ("chat/v1",)), 0)
    assert m2.on_request(Request(E, eds.version_info, ("chat/v1",), eds.nonce), 0) == []
    sub = m2.on_request(Request(E, eds.version_info, ("chat/v1", "chat/v2"), eds.nonce), 0)
    assert names(sub[0]) == ["chat/v1", "chat/v2"]
    # a name that does not exist yet is remembered and sent when it appears
    m3 = SotwStream(BASE)
    assert m3.on_request(Request(E, "", ("later/v1",)), 0) == []
    grown = world({"chat/v1": "c1", "later/v1": "l"}, {})
    assert names(by_type(m3.on_snapshot(grown))[E]) == ["later/v1"]


def test_rule5_unsubscribe_then_resubscribe_is_answered() -> None:
    m = SotwStream(BASE)
    eds = m.on_request(Request(E, "", ("chat/v1", "chat/v2")), 0)[0]
    m.on_request(ack(eds, ("chat/v1", "chat/v2")), 0)
    narrowed = m.on_request(Request(E, eds.version_info, ("chat/v1",), eds.nonce), 0)
    assert [names(r) for r in narrowed] == [[]]  # nothing changed for what is still wanted
    m.on_request(ack(narrowed[0], ("chat/v1",)), 0)
    again = m.on_request(ack(narrowed[0], ("chat/v1", "chat/v2")), 0)
    assert names(again[0]) == ["chat/v1", "chat/v2"]


def test_rule6_lds_and_cds_carry_the_full_state() -> None:
    m = SotwStream(BASE)
    first = m.on_request(Request(C), 0)[0]
    m.on_request(ack(first), 0)
    smaller = world({"chat/v1": "c1"}, {})
    assert names(by_type(m.on_snapshot(smaller))[C]) == ["chat/v1"]
    m2 = SotwStream(Snapshot.of({}))
    empty = m2.on_request(Request(C), 0)
    assert len(empty) == 1 and empty[0].resources == ()  # an empty answer, not silence


def test_rule7_eds_is_always_answered_after_a_cds_change() -> None:
    envoy = started()
    changed = world(
        {"chat/v1": "c1-outlier", "chat/v2": "c2"}, {"chat": {"chat/v1": 90, "chat/v2": 10}}
    )
    out = envoy.m.on_snapshot(changed)
    kinds = [r.type_url for r in out]
    assert kinds == [C, E], "the EDS answer follows the CDS update at once"
    assert out[1].version_info == envoy.m._types[E].acked_version  # same endpoints, resent


def test_rule8_route_waits_until_the_new_cluster_is_acked_and_warm() -> None:
    envoy = started()
    shift = world(
        {"chat/v1": "c1", "chat/v2": "c2", "chat/v3": "c3"},
        {"chat": {"chat/v1": 80, "chat/v2": 10, "chat/v3": 10}},
    )
    out = envoy.m.on_snapshot(shift)
    assert [r.type_url for r in out] == [C, E], "no route before the cluster is warm"
    envoy.run(out)
    assert envoy.violations == []
    assert envoy.routes["chat"] == {"chat/v1", "chat/v2", "chat/v3"}
    assert envoy.m.converged()


def test_rule8_cluster_removed_only_after_no_acked_route_names_it() -> None:
    envoy = started()
    drop = world({"chat/v1": "c1"}, {"chat": {"chat/v1": 100}})
    out = envoy.m.on_snapshot(drop)
    first = by_type(out)
    assert C not in first, "chat/v2 stays while the acked route names it"
    assert names(first[R]) == ["chat"]
    envoy.run(out)
    assert envoy.clusters.keys() == {"chat/v1"}
    envoy.check_routes_resolve()
    assert envoy.m.converged()


def test_rule9_wildcard_then_explicit_empty_means_none() -> None:
    m = SotwStream(BASE)
    everything = m.on_request(Request(C, "", ("*",)), 0)[0]
    assert names(everything) == ["chat/v1", "chat/v2"]
    m2 = SotwStream(BASE)
    eds = m2.on_request(Request(E, "", ("chat/v1",)), 0)[0]
    m2.on_request(Request(E, eds.version_info, (), eds.nonce), 0)
    assert m2._types[E].names == frozenset()


def test_rule11_duplicate_names_are_impossible_in_a_snapshot() -> None:
    from tests.unit.xds.worlds import res

    with pytest.raises(ValueError, match="duplicate"):
        TypeSnapshot.of(C, [res(C, "a", "1", frozenset({"a"})), res(C, "a", "2")])


def test_snapshot_consistency_rejects_dangling_references() -> None:
    from tests.unit.xds.worlds import res

    with pytest.raises(InconsistentSnapshot, match="missing cluster"):
        Snapshot.of({R: [res(R, "r", "x", frozenset({"nope"}))]})


def test_unknown_type_url_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="unsupported type_url"):
        SotwStream(BASE).on_request(Request("type.googleapis.com/foo.Bar"), 0)
    with pytest.raises(ProtocolError, match="no type_url"):
        SotwStream(BASE).on_request(Request(""), 0)


CLUSTERS = ["s/a", "s/b", "s/c", "s/d"]


@st.composite
def configs(draw: st.DrawFn) -> Snapshot:
    present = draw(st.lists(st.sampled_from(CLUSTERS), min_size=1, max_size=4, unique=True))
    bodies = {c: draw(st.sampled_from(["x", "y"])) for c in present}
    routed = draw(st.lists(st.sampled_from(present), min_size=1, unique=True))
    weights = {c: draw(st.integers(0, 3)) for c in routed}
    return world(bodies, {"s": weights})


@settings(max_examples=150, deadline=None)
@given(st.lists(configs(), min_size=1, max_size=6))
def test_property_routes_never_name_an_unwarmed_or_removed_cluster(history: list[Snapshot]) -> None:
    envoy = started(history[0])
    for snapshot in history[1:]:
        envoy.run(envoy.m.on_snapshot(snapshot))
        assert envoy.violations == []
        envoy.check_routes_resolve()
        assert envoy.m.converged(), envoy.m.status()
        assert envoy.clusters.keys() == snapshot.resources(C).keys()


def test_sotw_eds_and_rds_updates_carry_only_what_changed() -> None:
    two = world(
        {"a/v1": "a", "b/v1": "b"},
        {"a": {"a/v1": 100}, "b": {"b/v1": 100}},
    )
    envoy = started(two)
    moved = world(
        {"a/v1": "a", "b/v1": "b"},
        {"a": {"a/v1": 100}, "b": {"b/v1": 100}},
        endpoints={"a/v1": "eps-a-new", "b/v1": "eps-b/v1"},
    )
    [eds] = envoy.m.on_snapshot(moved)
    assert eds.type_url == E and names(eds) == ["a/v1"]  # not the unchanged b/v1
    assert eds.version_info == moved.types[E].version  # the version names the whole set
    envoy.run([eds])
    assert envoy.m.converged()
    # a cluster change forces a full EDS answer (rule 7)
    changed = world(
        {"a/v1": "a2", "b/v1": "b"},
        {"a": {"a/v1": 100}, "b": {"b/v1": 100}},
        endpoints={"a/v1": "eps-a-new", "b/v1": "eps-b/v1"},
    )
    out = envoy.m.on_snapshot(changed)
    assert [r.type_url for r in out] == [C, E] and names(out[1]) == ["a/v1", "b/v1"]

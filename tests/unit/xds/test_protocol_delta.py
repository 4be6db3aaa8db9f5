"""Incremental (Delta) stream rules: one named test per rule, plus the
make-before-break property over random configuration histories."""

from __future__ import annotations

from hypothesis import given, settings

from tests.unit.xds.test_protocol_sotw import BASE, configs
from tests.unit.xds.worlds import C, E, L, R, world
from xds.delta import DeltaRequest, DeltaResponse, DeltaStream
from xds.protocol import ErrorDetail, SyncState
from xds.snapshot import Snapshot


def rnames(resp: DeltaResponse) -> list[str]:
    return [r.name for r in resp.resources]


def only(out: list[DeltaResponse], type_url: str) -> DeltaResponse:
    found = [r for r in out if r.type_url == type_url]
    assert len(found) == 1, out
    return found[0]


class FakeDeltaEnvoy:
    def __init__(self, machine: DeltaStream) -> None:
        self.m = machine
        self.have: dict[str, dict[str, str]] = {C: {}, E: {}, L: {}, R: {}}
        self.refs: dict[str, dict[str, frozenset[str]]] = {C: {}, E: {}, L: {}, R: {}}
        self.warm: set[str] = set()
        self.violations: list[str] = []

    def start(self) -> None:
        self.run(self.m.on_request(DeltaRequest(C), 0) + self.m.on_request(DeltaRequest(L), 0))

    def run(self, responses: list[DeltaResponse]) -> None:
        queue = list(responses)
        for _ in range(1000):
            if not queue:
                return
            queue += self.apply(queue.pop(0))
        raise AssertionError("no quiescence")

    def apply(self, resp: DeltaResponse) -> list[DeltaResponse]:
        t = resp.type_url
        have = self.have[t]
        before = dict(have)
        for r in resp.resources:
            have[r.name] = r.version
            self.refs[t][r.name] = r.refs
        for name in resp.removed:
            have.pop(name, None)
        if t == C:
            self.warm -= {n for n, v in have.items() if before.get(n) != v}
            self.warm &= have.keys()
        if t == E:
            self.warm |= {r.name for r in resp.resources if r.name in self.have[C]}
        if t == R:
            for r in resp.resources:
                missing = r.refs - self.warm
                if missing:
                    self.violations.append(f"route {r.name} names unwarmed {sorted(missing)}")
        out = self.m.on_request(DeltaRequest(t, response_nonce=resp.nonce), 0)
        if t in (C, L):
            child = E if t == C else R
            wanted = set(have) if t == C else {x for n in have for x in self.refs[L][n]}
            current = set(self.m._types[child].names) if child in self.m._types else set()
            sub, unsub = tuple(sorted(wanted - current)), tuple(sorted(current - wanted))
            if sub or unsub or child not in self.m._types:
                out += self.m.on_request(DeltaRequest(child, sub, unsub), 0)
        return out


def started(snapshot: Snapshot = BASE) -> FakeDeltaEnvoy:
    envoy = FakeDeltaEnvoy(DeltaStream(snapshot))
    envoy.start()
    return envoy


def test_initial_sync_and_status() -> None:
    envoy = started()
    assert envoy.have[C].keys() == {"chat/v1", "chat/v2"}
    assert envoy.have[R].keys() == {"chat"}
    assert envoy.violations == []
    assert envoy.m.converged()
    assert {s.state for s in envoy.m.status()} == {SyncState.SYNCED}


def test_rule3_delta_applies_subscriptions_on_a_stale_nonce() -> None:
    m = DeltaStream(BASE)
    first = only(m.on_request(DeltaRequest(E, ("chat/v1",)), 0), E)
    out = m.on_request(DeltaRequest(E, ("chat/v2",), response_nonce="999"), 0)
    assert m.stale_requests == 1
    assert out == []  # the first response is still in flight: coalesced
    after = only(m.on_request(DeltaRequest(E, response_nonce=first.nonce), 0), E)
    assert rnames(after) == ["chat/v2"]


def test_rule10_removed_resources_for_deletions_and_missing_names() -> None:
    m = DeltaStream(BASE)
    first = only(m.on_request(DeltaRequest(E, ("chat/v1", "ghost/v1")), 0), E)
    assert rnames(first) == ["chat/v1"]
    assert first.removed == ("ghost/v1",)  # subscribed but does not exist
    m.on_request(DeltaRequest(E, response_nonce=first.nonce), 0)
    gone = world({"chat/v2": "c2"}, {})
    out = only(m.on_snapshot(gone), E)
    assert out.removed == ("chat/v1",)


def test_rule10_subscribe_resends_even_if_the_client_has_it() -> None:
    m = DeltaStream(BASE)
    first = only(m.on_request(DeltaRequest(E, ("chat/v1",)), 0), E)
    m.on_request(DeltaRequest(E, response_nonce=first.nonce), 0)
    again = only(m.on_request(DeltaRequest(E, ("chat/v1",)), 0), E)
    assert rnames(again) == ["chat/v1"]


def test_rule10_initial_resource_versions_skip_only_exact_matches() -> None:
    v1 = BASE.resources(C)["chat/v1"].version
    m = DeltaStream(BASE)
    out = only(
        m.on_request(
            DeltaRequest(C, initial_resource_versions=(("chat/v1", v1), ("chat/v2", "old"))), 0
        ),
        C,
    )
    assert rnames(out) == ["chat/v2"]


def test_rule9_wildcard_unsubscribe_of_a_name_is_answered() -> None:
    m = DeltaStream(BASE)
    first = only(m.on_request(DeltaRequest(C, ("*", "chat/v1")), 0), C)
    assert rnames(first) == ["chat/v1", "chat/v2"]
    m.on_request(DeltaRequest(C, response_nonce=first.nonce), 0)
    out = only(m.on_request(DeltaRequest(C, (), ("chat/v1",)), 0), C)
    assert rnames(out) == ["chat/v1"]  # still wanted through the wildcard


def test_rule2_delta_nack_is_not_resent_and_is_reported() -> None:
    m = DeltaStream(BASE)
    first = only(m.on_request(DeltaRequest(C), 0), C)
    m.on_request(DeltaRequest(C, response_nonce=first.nonce), 0)
    bad = world({"chat/v1": "BAD", "chat/v2": "c2"}, {"chat": {"chat/v1": 90, "chat/v2": 10}})
    pushed = only(m.on_snapshot(bad), C)
    nack = DeltaRequest(C, response_nonce=pushed.nonce, error=ErrorDetail(3, "rejected"))
    assert m.on_request(nack, 1.0) == []
    assert m.on_snapshot(bad) == []
    status = {s.type_url: s for s in m.status()}[C]
    assert status.state is SyncState.NACKED
    assert status.last_nack is not None and status.last_nack.message == "rejected"


def test_rule7_delta_eds_follows_a_changed_cluster() -> None:
    envoy = started()
    changed = world(
        {"chat/v1": "c1-new", "chat/v2": "c2"}, {"chat": {"chat/v1": 90, "chat/v2": 10}}
    )
    out = envoy.m.on_snapshot(changed)
    assert [r.type_url for r in out] == [C, E]
    assert rnames(out[1]) == ["chat/v1"]  # unchanged endpoints, resent so the cluster warms
    envoy.run(out)
    assert envoy.warm >= {"chat/v1"}
    assert envoy.m.converged()


def test_rule8_delta_make_before_break() -> None:
    envoy = started()
    replace = world({"chat/v3": "c3"}, {"chat": {"chat/v3": 100}})
    out = envoy.m.on_snapshot(replace)
    first = only(out, C)
    assert first.removed == () and rnames(first) == ["chat/v3"]
    envoy.run(out)
    assert envoy.violations == []
    assert envoy.have[C].keys() == {"chat/v3"}
    assert envoy.m.converged()


@settings(max_examples=150, deadline=None)
@given(configs().flatmap(lambda first: configs().map(lambda s: [first, s])))
def test_property_delta_routes_never_name_an_unwarmed_or_removed_cluster(
    history: list[Snapshot],
) -> None:
    envoy = started(history[0])
    for snapshot in history[1:]:
        envoy.run(envoy.m.on_snapshot(snapshot))
        assert envoy.violations == []
        for name in envoy.have[R]:
            assert envoy.refs[R][name] <= envoy.have[C].keys()
        assert envoy.m.converged(), envoy.m.status()
        assert envoy.have[C].keys() == snapshot.resources(C).keys()

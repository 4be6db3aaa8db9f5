"""Delta streams that share their state and derived work answer like plain ones.

Several proxies, each run by a plain ``DeltaStream`` and a ``QuietDeltaStream``
side by side, the quiet ones all sharing one ``TypeVersions`` (interned maps
and sets, views, stale names, state changes). The proxies move through random
configuration histories at their own pace: each gets snapshots when it is
drawn, answers its responses in any order (ACK, NACK, a stale nonce),
subscribes like Envoy (EDS to the clusters it holds, RDS to the routes its
listeners name), changes subscriptions by hand, and reconnects with
``initial_resource_versions``. At every step both machines of a proxy must
send the same responses, with the very same resource objects, and report the
same state; a shared value looked up under a key that lacks one of its inputs
hands one proxy what another one's state gave.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.xds.worlds import C, E, L, R, world
from xds.delta import DeltaRequest, DeltaResponse, DeltaStream
from xds.protocol import ErrorDetail
from xds.quiet import FrozenMap, Interned, QuietDeltaStream, TypeVersions
from xds.snapshot import Resource, Snapshot

CLUSTERS = ["s/a", "s/b", "s/c", "t/a"]
NAMES = {C: [*CLUSTERS, "x"], E: [*CLUSTERS, "x"], L: ["s-listener", "t-listener"], R: ["s", "t"]}
TYPES = [C, E, L, R]


@st.composite
def histories(draw: st.DrawFn) -> list[Snapshot]:
    """Configurations that each differ from the last by a few edits, as a
    fleet sees them: clusters added, routed, unrouted and removed, weights,
    endpoints and cluster bodies changed, routes (with listeners) added and
    removed. Between snapshots the same resource gets a new object."""
    clusters = {"s/a": "x", "s/b": "x"}
    endpoints = {c: "e" for c in clusters}
    routes: dict[str, dict[str, int]] = {"s": {"s/a": 1}}
    history = [world(clusters, routes, endpoints)]
    for _ in range(draw(st.integers(0, 5))):
        for _ in range(draw(st.integers(1, 3))):
            routed = sorted((r, c) for r, w in routes.items() for c in w)
            edits: dict[str, list[Any]] = {
                "add": [c for c in CLUSTERS if c not in clusters],
                "add+route": [(r, c) for r in "st" for c in CLUSTERS if c not in clusters],
                "unroute+remove": [
                    (r, c) for r, c in routed if sum(c in w for w in routes.values()) == 1
                ],
                "route": [(r, c) for r in "st" for c in clusters if (r, c) not in routed],
                "unroute": routed,
                "remove": [c for c in clusters if all(c not in w for w in routes.values())],
                "weight": routed,
                "cluster": sorted(clusters),
                "endpoints": sorted(clusters),
            }
            kind = draw(st.sampled_from(sorted(k for k, v in edits.items() if v)))
            what = draw(st.sampled_from(edits[kind]))
            if kind == "add":
                clusters[what], endpoints[what] = "x", "e"
            elif kind == "add+route":  # a canary's new version
                clusters[what[1]], endpoints[what[1]] = "x", "e"
                routes.setdefault(what[0], {})[what[1]] = 1
            elif kind == "unroute+remove":  # its old version, once done
                del routes[what[0]][what[1]], clusters[what[1]], endpoints[what[1]]
                if not routes[what[0]]:
                    del routes[what[0]]
            elif kind == "route":
                routes.setdefault(what[0], {})[what[1]] = 1
            elif kind == "unroute":
                del routes[what[0]][what[1]]
                if not routes[what[0]]:
                    del routes[what[0]]
            elif kind == "remove":
                del clusters[what], endpoints[what]
            elif kind == "weight":
                routes[what[0]][what[1]] = (routes[what[0]][what[1]] + 1) % 3
            else:
                table = clusters if kind == "cluster" else endpoints
                table[what] = table[what] + "'"
        history.append(world(clusters, routes, endpoints))
    return history


def summary(out: list[DeltaResponse]) -> list[tuple[object, ...]]:
    # Resources compare by identity: the same objects, not equal ones.
    return [(r.type_url, r.system_version_info, r.nonce, r.resources, r.removed) for r in out]


class Proxy:
    """One Envoy-like client, driving a plain and a quiet machine alike."""

    def __init__(self, snapshot: Snapshot, shared: TypeVersions) -> None:
        self.snapshot, self.shared = snapshot, shared
        self.have: dict[str, dict[str, Resource]] = {t: {} for t in TYPES}
        self.pending: list[DeltaResponse] = []
        self.connect(())

    def connect(self, first: tuple[DeltaRequest, ...]) -> None:
        self.plain = DeltaStream(self.snapshot)
        self.quiet = QuietDeltaStream(self.snapshot, self.shared)
        self.subs = {E: set(self.have[E]), R: set(self.have[R])}
        self.pending = []
        for req in first or (DeltaRequest(C), DeltaRequest(L)):
            self.request(req)

    def reconnect(self) -> None:
        """A new stream, telling what the proxy holds (rule 10)."""
        first = []
        for t in TYPES:
            held = tuple((n, r.version) for n, r in self.have[t].items())
            names = tuple(sorted(self.have[t])) if t in (E, R) else ()
            if held or t in (C, L):
                first.append(DeltaRequest(t, names, (), held))
        self.connect(tuple(first))

    def feed(self, step: Callable[[DeltaStream], list[DeltaResponse]]) -> None:
        a, b = step(self.plain), step(self.quiet)
        assert summary(a) == summary(b)
        assert self.plain.status() == self.quiet.status()
        assert self.plain.converged() == self.quiet.converged()
        assert self.plain.events == self.quiet.events
        assert self.plain.stale_requests == self.quiet.stale_requests
        for t in TYPES:
            for name in NAMES[t]:
                assert self.plain.holds(t, name) == self.quiet.holds(t, name)
                assert self.plain.held(t, name) is self.quiet.held(t, name)
                assert self.plain.wants(t, name) == self.quiet.wants(t, name)
        self.plain.events.clear()
        self.quiet.events.clear()
        self.pending += a

    def request(self, req: DeltaRequest) -> None:
        self.feed(lambda m: m.on_request(req, 0))

    def on_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.feed(lambda m: m.on_snapshot(snapshot))

    def reply(self, index: int, how: str) -> None:
        if not self.pending:
            return
        resp = self.pending.pop(index % len(self.pending))
        t, nonce = resp.type_url, resp.nonce
        if how == "stale":
            self.request(DeltaRequest(t, response_nonce=nonce + "-old"))
            return
        if how.startswith("nack"):
            self.request(DeltaRequest(t, response_nonce=nonce, error=ErrorDetail(3, "no")))
            if how == "nack-then-ack":  # a stale nonce by now
                self.request(DeltaRequest(t, response_nonce=nonce))
            return
        have = self.have[t]
        have.update({r.name: r for r in resp.resources})
        for name in resp.removed:
            have.pop(name, None)
        self.request(DeltaRequest(t, response_nonce=nonce))
        if t in (C, L):
            child = E if t == C else R
            wanted = set(have) if t == C else {x for r in have.values() for x in r.refs}
            sub, unsub = sorted(wanted - self.subs[child]), sorted(self.subs[child] - wanted)
            self.subs[child] = wanted
            if sub or unsub:
                self.request(DeltaRequest(child, tuple(sub), tuple(unsub)))

    def drain(self) -> None:
        for _ in range(300):
            if not self.pending:
                return
            self.reply(0, "ack")
        raise AssertionError("no quiescence")


HOW = ["ack", "ack", "ack", "nack", "nack-then-ack", "stale"]
ACTIONS = st.one_of(
    st.tuples(st.just("snapshot"), st.integers(0, 5)),
    st.tuples(st.just("all"), st.integers(0, 5)),
    st.tuples(st.just("reply"), st.integers(0, 7), st.sampled_from(HOW)),
    st.tuples(st.just("reply"), st.integers(0, 7), st.sampled_from(HOW)),
    st.tuples(
        st.just("subscribe"),
        st.sampled_from(TYPES),
        st.lists(st.integers(0, 5), max_size=3),
        st.lists(st.integers(0, 5), max_size=3),
    ),
    st.tuples(st.just("settle")),
    st.tuples(st.just("reconnect")),
)


def name(type_url: str, index: int) -> str:
    names = [*NAMES[type_url], "*"]
    return names[index % len(names)]


@settings(max_examples=400, deadline=None)
@given(histories(), st.lists(st.tuples(st.integers(0, 2), ACTIONS), max_size=80))
def test_delta_streams_sharing_state_answer_like_plain_ones(
    history: list[Snapshot], steps: list[tuple[int, tuple[Any, ...]]]
) -> None:
    shared = TypeVersions()
    proxies = [Proxy(history[0], shared) for _ in range(3)]
    for proxy in proxies:
        proxy.drain()
    for who, action in steps:
        proxy, kind = proxies[who], action[0]
        if kind == "snapshot":
            proxy.on_snapshot(history[action[1] % len(history)])
        elif kind == "all":
            for each in proxies:
                each.on_snapshot(history[action[1] % len(history)])
        elif kind == "reply":
            proxy.reply(action[1], action[2])
        elif kind == "subscribe":
            t, sub, unsub = action[1:]
            names = tuple(name(t, i) for i in sub), tuple(name(t, i) for i in unsub)
            proxy.request(DeltaRequest(t, *names))
        elif kind == "settle":
            proxy.drain()
        else:
            proxy.reconnect()
    for proxy in proxies:
        proxy.on_snapshot(history[-1])
        proxy.drain()
    assert shared.interned.hits > 0 and shared.derived.hits > 0


def test_proxies_in_the_same_state_hold_one_map_per_type() -> None:
    snapshot = world({"a/v1": "a", "b/v1": "b"}, {"a": {"a/v1": 1}, "b": {"b/v1": 1}})
    shared = TypeVersions()
    proxies = [Proxy(snapshot, shared) for _ in range(3)]
    for proxy in proxies:
        proxy.drain()
        assert proxy.quiet.converged()
    for t in TYPES:
        states = [p.quiet._types[t] for p in proxies]
        assert states[0].client is states[1].client is states[2].client
        assert states[0].acked is states[1].acked is states[2].acked
        assert states[0].names is states[1].names is states[2].names
        assert isinstance(states[0].client, FrozenMap)
    assert proxies[0].quiet._eds_ready is proxies[2].quiet._eds_ready
    assert shared.derived.hits > 0


def test_interned_values_are_equal_to_what_was_given_even_when_fingerprints_collide() -> None:
    interned = Interned()
    one, two = frozenset({-1}), frozenset({-2})
    assert hash(one) == hash(two)  # hash(-1) == hash(-2) in CPython
    assert interned.share(one) is one
    assert interned.share(frozenset({-1})) is one
    assert interned.share(two) == two
    versions = interned.share({"a": "1"})
    assert interned.share({"a": "1"}) is versions
    assert interned.share({"a": "2"}) == {"a": "2"}


def test_a_shared_map_refuses_changes() -> None:
    shared = FrozenMap({"a": "1"})
    with pytest.raises(TypeError):
        shared["b"] = "2"
    with pytest.raises(TypeError):
        shared.pop("a")
    with pytest.raises(TypeError):
        shared.update(b="2")
    with pytest.raises(TypeError):
        shared.clear()
    assert shared == {"a": "1"}


def test_retained_clusters_come_from_each_proxys_own_state() -> None:
    """Two proxies whose state differs only in what the view of retained
    clusters reads: the clusters held (from an earlier stream), or whether
    their bytes are known. Each must get its own view."""
    three = world({"a": "x", "b": "x", "c": "x"}, {"s": {"a": 1, "b": 1, "c": 1}})
    two = world({"a": "x", "b": "x"}, {"s": {"a": 1, "b": 1}})
    one = world({"a": "x"}, {"s": {"a": 1}})  # b and c gone, and unrouted
    shared = TypeVersions()
    # Routes and clusters held from an earlier stream: b (and c) are retained
    # but their bytes unknown.
    earlier = [Proxy(snapshot, shared) for snapshot in (two, three)]
    for proxy in earlier:
        proxy.drain()
        proxy.reconnect()
    # Clusters held from an earlier stream, routes known: b is retained, and
    # its bytes are known only to the proxy that got it on this stream.
    known, unknown = Proxy(two, shared), Proxy(two, shared)
    known.drain()
    unknown.have = {t: dict(known.have[t]) for t in TYPES}
    held = tuple((n, r.version) for n, r in known.have[C].items())
    first = DeltaRequest(C, (), (), held), DeltaRequest(L), DeltaRequest(E, ("a", "b"))
    unknown.connect((*first, DeltaRequest(R, ("s",))))
    unknown.drain()
    sent_b = []
    for proxy in [*earlier, known, unknown]:
        proxy.on_snapshot(one)
        proxy.request(DeltaRequest(C, ("b",)))  # forced: sent again if in the view
        sent = [r.name for resp in proxy.pending if resp.type_url == C for r in resp.resources]
        sent_b.append("b" in sent)
        proxy.drain()
    assert sent_b == [False, False, True, False]


def test_a_cluster_named_by_a_route_in_flight_is_retained() -> None:
    """The clusters held routes name include the routes in flight: b is gone
    from the snapshot while the route naming it is not yet ACKed."""
    start = world({"a": "x", "y": "x"}, {"s": {"a": 1, "y": 1}})
    moved = world({"a": "x", "b": "x"}, {"s": {"a": 1, "b": 1}})  # y retained a while
    back = world({"a": "x"}, {"s": {"a": 1}})
    proxy = Proxy(start, TypeVersions())
    proxy.drain()
    proxy.on_snapshot(moved)
    for _ in range(20):  # until the route naming b is in flight
        if any(r.type_url == R for r in proxy.pending):
            break
        proxy.reply(0, "ack")
    [route] = [r for r in proxy.pending if r.type_url == R]
    assert "b" in route.resources[0].refs
    proxy.on_snapshot(back)
    assert proxy.plain.holds(C, "b") is not None
    assert not any("b" in r.removed for r in proxy.pending if r.type_url == C)
    proxy.drain()
    assert proxy.plain.converged() and proxy.quiet.converged()

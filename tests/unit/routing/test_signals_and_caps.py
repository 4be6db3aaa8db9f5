"""Load reports → per-endpoint windows; the batch cap; LRS wire decoding; the controller."""

from __future__ import annotations

import dataclasses
import datetime
import math

import pytest
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.config.endpoint import v3 as endpoint_v3
from envoy_data_plane.envoy.service.load_stats import v3 as lrs_v3
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.model import (
    Capacity,
    Endpoint,
    LbPolicy,
    ListenerSpec,
    LoadBalancing,
    ModelService,
    Offline,
    Version,
)
from controlplane.routing import batch
from controlplane.routing.controller import RoutingController
from controlplane.routing.signals import LoadWindow, TrafficClass, parse_cluster
from controlplane.store import Store
from xds.lrs import ClusterLoad, EndpointLoad, WireError, decode_load_stats


def test_cluster_names_map_to_service_and_class() -> None:
    assert parse_cluster("chat/v1") == ("chat", TrafficClass.ONLINE)
    assert parse_cluster("chat/v1/affinity") == ("chat", TrafficClass.ONLINE)
    assert parse_cluster("chat/v1/batch") == ("chat", TrafficClass.BATCH)
    for other in ("sluice_xds", "chat/v1/other", "/v1", "a/b/c/d"):
        assert parse_cluster(other) is None


def test_window_sums_proxies_and_classes_by_littles_law() -> None:
    window = LoadWindow(now=0.0)
    ep = "10.0.0.1:8000"
    for node in ("gw-1", "gw-2"):
        window.add(node, [
            ClusterLoad("chat/v1", 1.0, (EndpointLoad(ep, 10, 9, 1, 3),)),
            ClusterLoad("chat/v1/affinity", 1.0, (EndpointLoad(ep, 5, 5, 0, 1),)),
            ClusterLoad("chat/v1/batch", 1.0, (EndpointLoad(ep, 2, 2, 0, 4),)),
            ClusterLoad("sluice_xds", 1.0, (EndpointLoad("1.2.3.4:1", 1, 1, 0, 0),)),
        ])
    take = window.take("chat", now=2.0)
    online = take.online[ep]
    assert (online.completed, online.errors, online.busy) == (30, 2, 8.0)
    assert take.in_flight(ep) == 4.0  # 8 request-seconds over a 2 s window
    assert take.in_flight(ep, TrafficClass.BATCH) == 4.0
    assert take.proxies == {"gw-1", "gw-2"}
    assert window.take("chat", now=3.0).online == {}


def test_implausible_reports_mark_the_endpoint_garbage() -> None:
    window = LoadWindow(now=0.0)
    window.add("gw", [ClusterLoad("chat/v1", 1.0, (EndpointLoad("10.0.0.1:1", 0, 0, 0,
                                                                 10**7),))])
    take = window.take("chat", 1.0)
    assert take.garbage == {"10.0.0.1:1"} and take.online == {}


def test_fleet_cap_is_the_spare_capacity() -> None:
    slots = {"a": 16.0, "b": 8.0}
    assert batch.fleet_cap(slots, {}) == 24
    assert batch.fleet_cap(slots, {"a": 10.0, "b": 9.0}) == 6  # b is over: no negative spare
    assert batch.fleet_cap(slots, {"a": 1.5}, max_concurrency=5) == 5


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 500), st.integers(1, 20), st.none() | st.integers(0, 100))
def test_per_proxy_cap_shares_and_damps(total: int, proxies: int, previous: int | None) -> None:
    cap = batch.per_proxy_cap(total, proxies, previous)
    share = total // proxies
    assert cap * proxies <= max(total, (previous or 0) * proxies)
    if previous is None or share == 0 or share <= previous // 2:
        assert cap == share
    else:
        assert cap in (share, previous)
        if cap == previous:
            assert abs(share - previous) <= max(1.0, batch.HYSTERESIS * previous)


def _request(clusters: list[endpoint_v3.ClusterStats], node: bool = True) -> bytes:
    return bytes(lrs_v3.LoadStatsRequest(
        node=core.Node(id="gw-1", cluster="sluice") if node else None, cluster_stats=clusters))


def _stats(name: str, *eps: tuple[str, int, int, int, int, int]) -> endpoint_v3.ClusterStats:
    return endpoint_v3.ClusterStats(
        cluster_name=name,
        load_report_interval=datetime.timedelta(seconds=1, milliseconds=250),
        upstream_locality_stats=[endpoint_v3.UpstreamLocalityStats(
            total_successful_requests=99,
            upstream_endpoint_stats=[endpoint_v3.UpstreamEndpointStats(
                address=core.Address(socket_address=core.SocketAddress(address=a, port_value=p)),
                total_issued_requests=issued, total_successful_requests=ok,
                total_error_requests=err, total_requests_in_progress=inflight,
            ) for a, p, issued, ok, err, inflight in eps])],
    )


def test_lrs_requests_decode_like_betterproto() -> None:
    raw = _request([_stats("chat/v1", ("10.0.0.1", 8000, 7, 5, 1, 2), ("2001:db8::1", 9, 0, 0,
                                                                       0, 0)),
                    _stats("chat/v1/batch")])
    node, clusters = decode_load_stats(raw)
    assert core.Node.parse(node).id == "gw-1"
    assert clusters == [
        ClusterLoad("chat/v1", 1.25, (EndpointLoad("10.0.0.1:8000", 7, 5, 1, 2),
                                      EndpointLoad("[2001:db8::1]:9", 0, 0, 0, 0))),
        ClusterLoad("chat/v1/batch", 1.25, ()),
    ]
    assert decode_load_stats(_request([], node=False)) == (b"", [])


@pytest.mark.parametrize(
    "raw", [b"\x12", b"\x12\x05\x0a\x03ab", b"\x0f", b"\x12\x04\x12\x02\x3a\x00"])
def test_lrs_garbage_raises_wire_errors(raw: bytes) -> None:
    with pytest.raises(WireError):
        decode_load_stats(raw)


def _service(policy: LbPolicy = LbPolicy.RESPONSE_TIME,
             offline: Offline | None = None) -> ModelService:
    eps = (Endpoint("10.0.0.1", 1, labels=(("gpu", "h100"),)),
           Endpoint("10.0.0.2", 1, labels=(("gpu", "a100"),)))
    return ModelService(
        "chat", ListenerSpec("127.0.0.1", 1), (Version("v1", 100, eps),),
        load_balancing=LoadBalancing(policy, capacity=Capacity((("a100", 1.0), ("h100", 2.0)))),
        offline=offline)


class _Fixed:
    """A store holding one service (the controller reads ``state`` and sets routing)."""

    def __init__(self, service: ModelService) -> None:
        from controlplane.model import DesiredState

        self.store = Store(("test",))
        self.store._declared = self.store._state = DesiredState((service,))


def test_controller_sets_weights_and_caps_through_the_store() -> None:
    fixed = _Fixed(_service(offline=Offline(concurrency_per_pod=4)))
    controller = RoutingController(fixed.store, proxies=lambda: 2, clock=lambda: 0.0)
    routing = controller.routing_for(fixed.store.state.services[0],
                                     controller.window.take("chat", 1.0), 1.0)
    # Priors from capacity (× 100), a new service: nothing measured yet.
    assert routing.weights == (("10.0.0.1:1", 200), ("10.0.0.2:1", 100))
    # Slots 4 × 2 + 4 × 1 = 12 over 2 proxies.
    assert routing.batch_max_requests == 6
    assert controller.caps["chat"] == (6, 12)
    controller.on_report("gw", [ClusterLoad("chat/v1", 1.0, (
        EndpointLoad("10.0.0.1:1", 10, 10, 0, 3), EndpointLoad("10.0.0.2:1", 10, 10, 0, 1)))])
    controller.on_report("gw-2", [ClusterLoad("chat/v1", 1.0, (
        EndpointLoad("10.0.0.1:1", 10, 10, 0, 2), EndpointLoad("10.0.0.2:1", 10, 10, 0, 1)))])
    routing = controller.routing_for(fixed.store.state.services[0],
                                     controller.window.take("chat", 2.0), 2.0)
    assert routing.batch_max_requests == 2  # spare (8 - 5) + (4 - 2) = 5 → 2 per proxy
    assert routing.batch_caps == (("v1", 2),)


def test_only_proxies_that_report_load_share_the_cap() -> None:
    """A debug client, or an Envoy that sends no load report, takes no share (proxies on
    other replicas report there, so they count); one that stops reporting is forgotten
    after a while."""
    fixed = _Fixed(_service(offline=Offline(concurrency_per_pod=40)))
    connected = {"gw-1", "gw-2", "grpcurl"}
    controller = RoutingController(fixed.store, proxies=lambda: len(connected) + 2,
                                   clock=lambda: 0.0, nodes=lambda: connected)
    service = fixed.store.state.services[0]
    idle = (EndpointLoad("10.0.0.1:1", 0, 0, 0, 0),)
    for node in ("gw-1", "gw-2"):
        controller.on_report(node, [ClusterLoad("chat/v1", 1.0, idle)])
    routing = controller.routing_for(service, controller.window.take("chat", 1.0), 1.0)
    # 120 slots over the 2 that report here and 2 on another replica, not over 5.
    assert routing.batch_max_requests == 30
    assert controller.reporters["chat"].keys() == {"gw-1", "gw-2"}
    for t in range(2, 40):
        controller.on_report("gw-1", [ClusterLoad("chat/v1", 1.0, idle)])
        routing = controller.routing_for(service, controller.window.take("chat", float(t)),
                                         float(t))
    assert controller.reporters["chat"].keys() == {"gw-1"}
    assert routing.batch_max_requests == 40  # over 3 now: gw-2 fell silent


def test_each_version_gets_the_cap_of_its_own_pods() -> None:
    """Two versions, two batch clusters: each one's cap comes from its own pods' spare,
    so together they never pass the fleet's (a canary's pod does not get it all)."""
    stable = (Endpoint("10.0.0.1", 1, labels=(("gpu", "h100"),)),
              Endpoint("10.0.0.2", 1, labels=(("gpu", "h100"),)))
    canary = (Endpoint("10.0.0.3", 1, labels=(("gpu", "a100"),)),)
    service = ModelService(
        "chat", ListenerSpec("127.0.0.1", 1),
        (Version("v1", 90, stable), Version("v2", 10, canary)),
        load_balancing=LoadBalancing(LbPolicy.LEAST_REQUEST,
                                     capacity=Capacity((("a100", 1.0), ("h100", 2.0)))),
        offline=Offline(concurrency_per_pod=4))
    fixed = _Fixed(service)
    controller = RoutingController(fixed.store, proxies=lambda: 1, clock=lambda: 0.0)
    controller.on_report("gw", [ClusterLoad("chat/v2", 1.0, (
        EndpointLoad("10.0.0.3:1", 10, 10, 0, 3),))])
    routing = controller.routing_for(service, controller.window.take("chat", 1.0), 1.0)
    assert routing.batch_caps == (("v1", 16), ("v2", 1))  # 8 + 8 spare; 4 - 3
    assert routing.batch_max_requests == 17
    assert routing.batch_cap("v2") == 1 and routing.batch_cap("v3") == 0
    capped = dataclasses.replace(service, offline=Offline(concurrency_per_pod=4,
                                                          max_concurrency=10))
    routing = RoutingController(fixed.store, proxies=lambda: 1, clock=lambda: 0.0) \
        .routing_for(capped, controller.window.take("chat", 2.0), 2.0)
    assert routing.batch_caps == (("v1", 8), ("v2", 2))  # 10 shared out 16 : 4 (no load)


def test_controller_leaves_other_policies_alone() -> None:
    fixed = _Fixed(_service(policy=LbPolicy.LEAST_REQUEST))
    controller = RoutingController(fixed.store, proxies=lambda: 1, clock=lambda: 0.0)
    controller.tick(0.0)
    assert fixed.store.routing("chat") is None
    assert not math.isnan(controller.window.reports)


def test_switching_to_response_time_starts_from_fresh_load() -> None:
    """Reports that came while a service used another policy are dropped as they come;
    the first response_time weights read only what came after the switch."""
    fixed = _Fixed(_service(policy=LbPolicy.LEAST_REQUEST))
    controller = RoutingController(fixed.store, proxies=lambda: 1, clock=lambda: 0.0)
    busy = [ClusterLoad("chat/v1", 1.0, (EndpointLoad("10.0.0.1:1", 50, 50, 0, 40),))]
    for t in range(1, 60):
        controller.on_report("gw", busy)
        controller.tick(float(t))
    assert controller.window.services() == set()
    controller.on_report("gw", [ClusterLoad("chat/v1", 1.0, (
        EndpointLoad("10.0.0.1:1", 5, 5, 0, 1), EndpointLoad("10.0.0.2:1", 5, 5, 0, 1)))])
    take = controller.window.take("chat", 61.0)
    assert take.online["10.0.0.1:1"].completed == 5  # not 59 × 50 + 5


def test_version_caps_count_a_shared_pod_once_and_share_max_concurrency_fairly() -> None:
    slots = {"v1": {"a": 8.0, "shared": 8.0}, "v2": {"shared": 8.0, "b": 3.0}}
    assert batch.version_caps(slots, {}) == {"v1": 16, "v2": 3}
    # 19 shared out to 10: exact 8.42 and 1.58; the larger remainder gets the last one.
    assert batch.version_caps(slots, {}, max_concurrency=10) == {"v1": 8, "v2": 2}
    assert batch.version_caps({"v1": {"a": 2.0}, "v2": {"b": 2.0}}, {}, 3) in (
        {"v1": 2, "v2": 1}, {"v1": 1, "v2": 2})


def test_a_version_without_traffic_gets_no_batch_and_removed_offline_leaves_nothing() -> None:
    eps = (Endpoint("10.0.0.1", 1), Endpoint("10.0.0.2", 1))
    service = ModelService("chat", ListenerSpec("127.0.0.1", 1),
                           (Version("v1", 100, eps[:1]), Version("v2", 0, eps[1:])),
                           offline=Offline(concurrency_per_pod=4, max_concurrency=4))
    fixed = _Fixed(service)
    controller = RoutingController(fixed.store, proxies=lambda: 1, clock=lambda: 0.0)
    routing = controller.routing_for(service, controller.window.take("chat", 1.0), 1.0)
    assert routing.batch_caps == (("v1", 4), ("v2", 0))
    plain = dataclasses.replace(service, offline=None,
                                load_balancing=LoadBalancing(LbPolicy.RESPONSE_TIME))
    controller.on_report("gw", [ClusterLoad("chat/v1", 1.0, (
        EndpointLoad("10.0.0.1:1", 1, 1, 0, 1),))])
    routing = controller.routing_for(plain, controller.window.take("chat", 2.0), 2.0)
    assert routing.batch_max_requests is None and "chat" not in controller.caps
    assert controller.reporters["chat"].keys() == {"gw"}  # tracked for response_time too

"""What the routing features put into Envoy's resources (pure builders)."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.model import (
    Capacity,
    DesiredState,
    Endpoint,
    Failover,
    HashKey,
    LbPolicy,
    ListenerSpec,
    LoadReportTuning,
    Offline,
    Retries,
    RoutingState,
)
from tests.unit.xds.resources_fixtures import pods, roundtrip, service
from xds import typeurls
from xds.build import build_snapshot, effective_endpoints
from xds.cache import ResourceEncoder
from xds.resources import (
    batch_listener_inputs,
    batch_route_inputs,
    build_cluster,
    build_listener,
    build_load_assignment,
    build_route_configuration,
    listener_inputs,
    route_inputs,
    serialize_load_assignment,
    service_cluster_inputs,
)


def _typed(cluster: Any) -> list[tuple[str, Any]]:
    return [(p.typed_extension_config.name, p.typed_extension_config.typed_config.unpack())
            for p in cluster.load_balancing_policy.policies]


def _clusters(svc: Any) -> dict[str, Any]:
    return {cin.name: roundtrip(build_cluster(cin)) for _, cin in service_cluster_inputs(svc)}


endpoints = st.builds(
    Endpoint, address=st.ip_addresses(v=4).map(str), port=st.integers(1, 65535),
    weight=st.integers(1, 10_000), priority=st.integers(0, 3),
    labels=st.sampled_from([(), (("gpu", "h100"),)]))


@settings(max_examples=200, deadline=None)
@given(st.lists(endpoints, max_size=8).map(tuple), st.none() | st.integers(100, 1000))
def test_hand_encoded_priorities_match_betterproto(eps: tuple[Endpoint, ...],
                                                   factor: int | None) -> None:
    assert serialize_load_assignment("c/v1", eps, factor) == \
        bytes(build_load_assignment("c/v1", eps, factor))


def test_priorities_are_dense_groups_and_the_factor_is_carried() -> None:
    eps = tuple(dataclasses.replace(e, priority=p) for e, p in zip(pods(4), (0, 5, 5, 0),
                                                                   strict=True))
    cla = roundtrip(build_load_assignment("c/v1", eps, 200))
    assert [(g.priority, len(g.lb_endpoints)) for g in cla.endpoints] == [(0, 2), (1, 2)]
    assert cla.policy.overprovisioning_factor == 200


def test_capacity_and_measured_weights_reach_eds() -> None:
    svc = service(weights=(100,), pool=3)
    eps = (dataclasses.replace(svc.versions[0].endpoints[0], labels=(("gpu", "h100"),)),
           dataclasses.replace(svc.versions[0].endpoints[1], labels=(("gpu", "a100"),)),
           svc.versions[0].endpoints[2])
    svc = dataclasses.replace(svc, versions=(dataclasses.replace(svc.versions[0],
                                                                 endpoints=eps),))
    assert [e.weight for e in effective_endpoints(svc, svc.versions[0])] == [1, 1, 1]
    lb = dataclasses.replace(svc.load_balancing, capacity=Capacity((("a100", 1.0),
                                                                    ("h100", 2.5))))
    svc = dataclasses.replace(svc, load_balancing=lb)
    assert [e.weight for e in effective_endpoints(svc, svc.versions[0])] == [250, 100, 100]
    measured = dataclasses.replace(svc, routing=RoutingState(((eps[1].key, 40),)))
    assert [e.weight for e in effective_endpoints(measured, svc.versions[0])] == [250, 40, 100]


def test_load_report_runs_client_side_weighted_round_robin_with_a_fallback() -> None:
    svc = service(policy=LbPolicy.LOAD_REPORT, weights=(100,))
    [cluster] = _clusters(svc).values()
    (name, cswrr), (fallback, _) = _typed(cluster)
    assert name.endswith("client_side_weighted_round_robin")
    assert fallback.endswith("least_request")
    assert cswrr.blackout_period.total_seconds() == LoadReportTuning().blackout_period_ms / 1000
    assert cswrr.enable_oob_load_report is False
    routes = roundtrip(build_route_configuration(route_inputs(svc))).virtual_hosts[0].routes
    [add] = routes[0].request_headers_to_add
    assert (add.header.key, add.header.value) == ("endpoint-load-metrics-format", "TEXT")
    assert routes[0].response_headers_to_remove == ["endpoint-load-metrics"]


def test_hybrid_has_a_least_request_and_a_bounded_maglev_cluster() -> None:
    svc = service(policy=LbPolicy.HYBRID, hash_key=HashKey(header="x-session-id"),
                  bounded_load=1.5, weights=(100,))
    lb = dataclasses.replace(svc.load_balancing, active_request_bias=2.0)
    clusters = _clusters(dataclasses.replace(svc, load_balancing=lb))
    assert set(clusters) == {"chat/v1", "chat/v1/affinity"}
    [(_, lr)] = _typed(clusters["chat/v1"])
    assert lr.active_request_bias.default_value == 2.0
    [(_, maglev)] = _typed(clusters["chat/v1/affinity"])
    assert maglev.consistent_hashing_lb_config.hash_balance_factor == 150
    keyed, rest = roundtrip(build_route_configuration(route_inputs(svc))).virtual_hosts[0].routes
    assert keyed.match.headers[0].name == "x-session-id"
    assert keyed.route.weighted_clusters.clusters[0].name == "chat/v1/affinity"
    assert keyed.route.hash_policy[0].header.header_name == "x-session-id"
    assert rest.route.weighted_clusters.clusters[0].name == "chat/v1"
    assert not rest.route.hash_policy


def test_offline_class_clusters_routes_listener_and_retry_after() -> None:
    svc = dataclasses.replace(
        service(weights=(30, 70)), offline=Offline(listener=ListenerSpec("127.0.0.1", 10100),
                                                   retry_after_s=7),
        routing=RoutingState(batch_max_requests=5))
    clusters = _clusters(svc)
    limits = clusters["chat/v2/batch"].circuit_breakers.thresholds[0]
    assert (limits.max_requests, limits.max_pending_requests) == (5, 5)
    assert clusters["chat/v2"].circuit_breakers.thresholds[0].max_requests == 10_000
    # Per version once the controller has sized each one (a version it has not: none).
    per_version = _clusters(dataclasses.replace(
        svc, routing=RoutingState(batch_max_requests=5, batch_caps=(("v1", 4), ("v2", 1)))))
    assert [per_version[f"chat/{v}/batch"].circuit_breakers.thresholds[0].max_requests
            for v in ("v1", "v2")] == [4, 1]
    unsized = _clusters(dataclasses.replace(
        svc, routing=RoutingState(batch_max_requests=5, batch_caps=(("v1", 5),))))
    assert unsized["chat/v2/batch"].circuit_breakers.thresholds[0].max_requests == 0
    batch, *_ = roundtrip(build_route_configuration(route_inputs(svc))).virtual_hosts[0].routes
    assert (batch.match.headers[0].name, batch.match.headers[0].string_match.exact) == \
        ("x-priority", "batch")
    assert [(c.name, c.weight) for c in batch.route.weighted_clusters.clusters] == \
        [("chat/v2/batch", 30), ("chat/v1/batch", 70)]
    own = batch_route_inputs(svc)
    assert own is not None and own.name == "chat/batch-routes"
    [only] = roundtrip(build_route_configuration(own)).virtual_hosts[0].routes
    assert {c.name for c in only.route.weighted_clusters.clusters} == \
        {"chat/v1/batch", "chat/v2/batch"}
    blis = batch_listener_inputs(svc)
    assert blis is not None
    listener = roundtrip(build_listener(blis))
    assert listener.name == "chat/batch-listener"
    hcm = listener.filter_chains[0].filters[0].typed_config.unpack()
    assert hcm.rds.route_config_name == "chat/batch-routes"
    [mapper] = hcm.local_reply_config.mappers
    assert mapper.filter.response_flag_filter.flags == ["UO"]
    assert (mapper.headers_to_add[0].header.key, mapper.headers_to_add[0].header.value) == \
        ("retry-after", "7")
    main = roundtrip(build_listener(listener_inputs(svc)))
    assert main.filter_chains[0].filters[0].typed_config.unpack().local_reply_config is not None


def test_retries_failover_and_panic() -> None:
    svc = dataclasses.replace(service(weights=(100,)), retries=Retries(attempts=3),
                              failover=Failover(overprovisioning_factor=200,
                                                panic_threshold=0.0))
    [cluster] = _clusters(svc).values()
    assert cluster.common_lb_config.healthy_panic_threshold.value == 0.0
    budget = cluster.circuit_breakers.thresholds[0].retry_budget
    assert (budget.budget_percent.value, budget.min_retry_concurrency) == (20.0, 3)
    [route] = roundtrip(build_route_configuration(route_inputs(svc))).virtual_hosts[0].routes
    policy = route.route.retry_policy
    assert policy.retry_on == "connect-failure,refused-stream,reset"
    assert policy.num_retries == 3
    assert policy.retry_host_predicate[0].name == "envoy.retry_host_predicates.previous_hosts"


def test_snapshot_is_consistent_with_every_extra_resource() -> None:
    svc = dataclasses.replace(
        service(policy=LbPolicy.HYBRID, hash_key=HashKey(header="x-s"), weights=(40, 60)),
        offline=Offline(listener=ListenerSpec("127.0.0.1", 10100)),
        failover=Failover())
    snap = build_snapshot(DesiredState((svc,)), ResourceEncoder())
    assert set(snap.resources(typeurls.CLUSTER)) == {
        f"chat/{v}{s}" for v in ("v1", "v2") for s in ("", "/affinity", "/batch")}
    assert set(snap.resources(typeurls.ENDPOINT)) == set(snap.resources(typeurls.CLUSTER))
    assert set(snap.resources(typeurls.LISTENER)) == {"chat/listener", "chat/batch-listener"}
    assert set(snap.resources(typeurls.ROUTE)) == {"chat/routes", "chat/batch-routes"}

"""Hypothesis properties of the builders: determinism and narrow inputs."""

from __future__ import annotations

import dataclasses
import itertools

from hypothesis import HealthCheck as HypothesisHealthCheck
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.model import (
    CookieHashKey,
    Endpoint,
    EndpointHealth,
    HashKey,
    HealthCheck,
    LbPolicy,
    ListenerSpec,
    LoadBalancing,
    ModelService,
    OutlierDetection,
    SlowStart,
    Timeouts,
    Version,
    affinity_cluster_name,
    cluster_name,
    hybrid_header,
)
from tests.unit.xds.resources_fixtures import roundtrip
from xds.resources import (
    LbApi,
    build_cluster,
    build_listener,
    build_load_assignment,
    build_route_configuration,
    cluster_inputs,
    listener_inputs,
    route_cluster_refs,
    route_inputs,
    serialize_load_assignment,
)
from xds.resources.hashing import pool_bucket

names = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)

endpoints = st.builds(
    Endpoint,
    address=st.builds(lambda a, b: f"10.0.{a}.{b}", st.integers(0, 255), st.integers(1, 254)),
    port=st.integers(1, 65535),
    weight=st.integers(1, 1000),
    labels=st.dictionaries(names, names, max_size=3).map(lambda d: tuple(sorted(d.items()))),
    health=st.sampled_from(EndpointHealth),
)

hash_keys = st.one_of(
    st.none(),
    st.builds(HashKey, header=st.just("x-session-id")),
    st.builds(
        HashKey,
        cookie=st.builds(
            CookieHashKey, name=names, ttl_ms=st.integers(0, 10**7), path=st.just("/")
        ),
    ),
    st.just(HashKey(source_ip=True)),
)


def _split(total: int, parts: int, cuts: list[int]) -> list[int]:
    points = sorted(c % (total + 1) for c in cuts[: parts - 1])
    bounds = [0, *points, total]
    return [b - a for a, b in itertools.pairwise(bounds)]


@st.composite
def services(draw: st.DrawFn) -> ModelService:
    version_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    weights = _split(
        100, len(version_names), draw(st.lists(st.integers(0, 100), min_size=3, max_size=3))
    )
    versions = tuple(
        Version(n, w, tuple(draw(st.lists(endpoints, max_size=4))))
        for n, w in zip(version_names, weights, strict=True)
    )
    return ModelService(
        name=draw(names),
        listener=ListenerSpec("127.0.0.1", draw(st.integers(1, 65535))),
        versions=versions,
        load_balancing=LoadBalancing(
            policy=draw(st.sampled_from(LbPolicy)),
            hash_key=draw(hash_keys),
            bounded_load=draw(st.one_of(st.none(), st.floats(1.0, 3.0))),
        ),
        health_check=draw(st.one_of(st.none(), st.just(HealthCheck()))),
        outlier_detection=draw(st.one_of(st.none(), st.just(OutlierDetection()))),
        slow_start=draw(
            st.one_of(st.none(), st.builds(SlowStart, window_ms=st.integers(1, 10**6)))
        ),
        timeouts=Timeouts(draw(st.integers(0, 10**7)), draw(st.integers(0, 10**7))),
    )


def _reweighted(service: ModelService, shift: int) -> ModelService:
    """The same service with traffic moved between the first and last version."""
    first, last = service.versions[0], service.versions[-1]
    moved = min(shift, last.weight) if len(service.versions) > 1 else 0
    versions = list(service.versions)
    versions[0] = dataclasses.replace(first, weight=first.weight + moved)
    versions[-1] = dataclasses.replace(versions[-1], weight=versions[-1].weight - moved)
    return dataclasses.replace(service, versions=tuple(versions))


_settings = settings(
    max_examples=25, deadline=None, suppress_health_check=[HypothesisHealthCheck.too_slow]
)


@_settings
@given(services(), st.sampled_from(LbApi))
def test_builders_are_deterministic(service: ModelService, api: LbApi) -> None:
    for version in service.versions:
        a = build_cluster(cluster_inputs(service, version, lb_api=api))
        b = build_cluster(cluster_inputs(service, version, lb_api=api))
        assert bytes(a) == bytes(b)
        name = cluster_name(service.name, version.name)
        cla = bytes(build_load_assignment(name, version.endpoints))
        assert cla == bytes(build_load_assignment(name, version.endpoints))
        assert cla == serialize_load_assignment(name, version.endpoints)
    assert bytes(build_route_configuration(route_inputs(service))) == bytes(
        build_route_configuration(route_inputs(service))
    )
    assert bytes(build_listener(listener_inputs(service))) == bytes(
        build_listener(listener_inputs(service))
    )


@_settings
@given(services(), st.integers(1, 100))
def test_weight_change_touches_only_the_route(service: ModelService, shift: int) -> None:
    moved = _reweighted(service, shift)
    for before, after in zip(service.versions, moved.versions, strict=True):
        assert cluster_inputs(service, before) == cluster_inputs(moved, after)
        assert before.endpoints == after.endpoints
    assert listener_inputs(service) == listener_inputs(moved)
    weights_changed = [v.weight for v in service.versions] != [v.weight for v in moved.versions]
    assert (route_inputs(service) != route_inputs(moved)) == weights_changed


@_settings
@given(services())
def test_route_splits_over_every_version_in_order(service: ModelService) -> None:
    inputs = route_inputs(service)
    route = build_route_configuration(inputs)
    routes = roundtrip(route).virtual_hosts[0].routes
    wc = routes[-1].route.weighted_clusters
    expected = [(cluster_name(service.name, v.name), v.weight) for v in service.versions]
    assert [(c.name, c.weight) for c in wc.clusters] == expected
    assert sum(c.weight for c in wc.clusters) == 100
    hybrid = hybrid_header(service) is not None
    keyed = [(affinity_cluster_name(service.name, v.name), v.weight) for v in service.versions]
    assert route_cluster_refs(inputs) == {n for n, _ in expected + (keyed if hybrid else [])}
    hashed = service.load_balancing.hash_key is not None and not hybrid
    assert (wc.use_hash_policy is True) == hashed
    if hybrid:  # keyed requests: the affinity clusters, same split, same hash
        [first, _] = routes
        assert [(c.name, c.weight) for c in first.route.weighted_clusters.clusters] == keyed
        assert first.route.weighted_clusters.use_hash_policy is True
        assert first.match.headers[0].present_match is True
    else:
        assert len(routes) == 1


@_settings
@given(services(), st.lists(endpoints, max_size=3))
def test_pool_change_within_a_bucket_keeps_cluster_inputs(
    service: ModelService, extra: list[Endpoint]
) -> None:
    version = service.versions[0]
    grown = dataclasses.replace(version, endpoints=version.endpoints + tuple(extra))
    same_bucket = pool_bucket(len(version.endpoints)) == pool_bucket(len(grown.endpoints))
    if same_bucket or not service.load_balancing.policy.is_hashing:
        assert cluster_inputs(service, version) == cluster_inputs(service, grown)
    else:
        assert cluster_inputs(service, version) != cluster_inputs(service, grown)


any_endpoints = st.builds(
    Endpoint,
    address=st.one_of(st.ip_addresses().map(str), st.text(max_size=20)),
    port=st.integers(0, 65535),
    weight=st.integers(0, 2**32 - 1),
    labels=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4).map(
        lambda d: tuple(sorted(d.items()))
    ),
    health=st.sampled_from(EndpointHealth),
)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300), st.lists(any_endpoints, max_size=5))
def test_wire_encoder_matches_the_message(cluster: str, eps: list[Endpoint]) -> None:
    """The hand-written EDS encoder equals betterproto2's bytes, odd strings included."""
    assert serialize_load_assignment(cluster, tuple(eps)) == bytes(
        build_load_assignment(cluster, tuple(eps))
    )

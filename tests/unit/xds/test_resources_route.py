"""Route configuration and listener builders: the exact fields, parsed back from the wire."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.extensions.filters.http.router import v3 as router_v3
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import (
    v3 as hcm_v3,
)
from envoy_data_plane.google import protobuf as pb

from controlplane.model import CookieHashKey, HashKey, ListenerSpec, Timeouts
from tests.unit.xds.resources_fixtures import roundtrip, service, type_of
from xds import typeurls
from xds.resources import (
    build_listener,
    build_route_configuration,
    listener_inputs,
    route_cluster_refs,
    route_inputs,
)

S = datetime.timedelta(seconds=1)


def _action(**kwargs: Any) -> Any:
    rc = roundtrip(build_route_configuration(route_inputs(service(**kwargs))))
    [vhost] = rc.virtual_hosts
    [route] = vhost.routes
    return route.route


def test_route_configuration_shape() -> None:
    rc = roundtrip(build_route_configuration(route_inputs(service())))
    assert pb.Any.pack(rc).type_url == typeurls.ROUTE
    assert rc.name == "chat/routes"
    [vhost] = rc.virtual_hosts
    assert vhost.domains == ["*"]
    [route] = vhost.routes
    assert route.match.prefix == "/"


def test_weighted_clusters_keep_version_order_and_zero_weights() -> None:
    action = _action(weights=(0, 30, 70))
    wc = action.weighted_clusters
    assert [(c.name, c.weight) for c in wc.clusters] == [
        ("chat/v3", 0),
        ("chat/v2", 30),
        ("chat/v1", 70),
    ]
    assert sum(c.weight for c in wc.clusters) == 100
    assert wc.total_weight is None  # deprecated in v3


def test_no_hash_key_no_hash_policy_no_sticky_versions() -> None:
    action = _action()
    assert action.hash_policy == []
    assert action.weighted_clusters.use_hash_policy is None


def test_header_hash_key() -> None:
    action = _action(hash_key=HashKey(header="x-session-id"))
    [policy] = action.hash_policy
    assert policy.header.header_name == "x-session-id"
    assert action.weighted_clusters.use_hash_policy is True


def test_cookie_hash_key_with_ttl_and_path() -> None:
    action = _action(hash_key=HashKey(cookie=CookieHashKey("sid", ttl_ms=3_600_000, path="/v1")))
    [policy] = action.hash_policy
    assert policy.cookie.name == "sid"
    assert policy.cookie.ttl == 3600 * S
    assert policy.cookie.path == "/v1"
    assert action.weighted_clusters.use_hash_policy is True


def test_session_cookie_has_no_ttl() -> None:
    [policy] = _action(hash_key=HashKey(cookie=CookieHashKey("sid"))).hash_policy
    assert policy.cookie.ttl is None
    assert policy.cookie.path == "/"


def test_source_ip_hash_key() -> None:
    action = _action(hash_key=HashKey(source_ip=True))
    [policy] = action.hash_policy
    assert policy.connection_properties.source_ip is True
    assert action.weighted_clusters.use_hash_policy is True


def test_streaming_timeouts() -> None:
    svc = dataclasses.replace(service(), timeouts=Timeouts(request_ms=900_000, idle_ms=120_000))
    rc = roundtrip(build_route_configuration(route_inputs(svc)))
    action = rc.virtual_hosts[0].routes[0].route
    assert action.timeout == 900 * S
    assert action.idle_timeout == 120 * S


def test_zero_timeouts_are_sent_as_disabled() -> None:
    svc = dataclasses.replace(service(), timeouts=Timeouts(request_ms=0, idle_ms=0))
    action = roundtrip(build_route_configuration(route_inputs(svc))).virtual_hosts[0].routes[0]
    assert action.route.timeout == datetime.timedelta(0)


def test_route_cluster_refs_names_every_version() -> None:
    inputs = route_inputs(service(weights=(0, 100)))
    assert route_cluster_refs(inputs) == frozenset({"chat/v2", "chat/v1"})


def test_weight_change_changes_route_inputs_only() -> None:
    a, b = service(weights=(20, 80)), service(weights=(50, 50))
    assert route_inputs(a) != route_inputs(b)
    assert listener_inputs(a) == listener_inputs(b)


# --- listener --------------------------------------------------------------------------------


def _hcm(listener_kwargs: dict[str, Any] | None = None) -> Any:
    svc = service()
    if listener_kwargs:
        svc = dataclasses.replace(svc, **listener_kwargs)
    listener = roundtrip(build_listener(listener_inputs(svc)))
    [chain] = listener.filter_chains
    [flt] = chain.filters
    assert flt.name == "envoy.filters.network.http_connection_manager"
    assert flt.typed_config.type_url == (
        "type.googleapis.com/"
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    )
    hcm = flt.typed_config.unpack()
    assert type_of(hcm) is hcm_v3.HttpConnectionManager
    return hcm


def test_listener_name_and_address() -> None:
    svc = dataclasses.replace(service(), listener=ListenerSpec("0.0.0.0", 8080))
    listener = roundtrip(build_listener(listener_inputs(svc)))
    assert pb.Any.pack(listener).type_url == typeurls.LISTENER
    assert listener.name == "chat/listener"
    assert listener.address.socket_address.address == "0.0.0.0"
    assert listener.address.socket_address.port_value == 8080


def test_hcm_uses_rds_over_ads() -> None:
    hcm = _hcm()
    assert hcm.stat_prefix == "chat"
    assert hcm.codec_type == hcm_v3.HttpConnectionManagerCodecType.AUTO
    assert hcm.rds.route_config_name == "chat/routes"
    assert hcm.rds.config_source.ads == core.AggregatedConfigSource()
    assert hcm.rds.config_source.resource_api_version == core.ApiVersion.V3
    assert hcm.route_config is None


def test_hcm_router_filter_is_packed() -> None:
    [router] = _hcm().http_filters
    assert router.name == "envoy.filters.http.router"
    assert router.typed_config.type_url == (
        "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
    )
    assert type_of(router.typed_config.unpack()) is router_v3.Router


@pytest.mark.parametrize("idle_ms", [300_000, 60_000])
def test_hcm_timeouts_match_route(idle_ms: int) -> None:
    hcm = _hcm({"timeouts": Timeouts(request_ms=600_000, idle_ms=idle_ms)})
    assert hcm.stream_idle_timeout == datetime.timedelta(milliseconds=idle_ms)
    assert hcm.request_timeout == datetime.timedelta(0)

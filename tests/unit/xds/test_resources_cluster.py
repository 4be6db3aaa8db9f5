"""Cluster builder: the exact fields, parsed back from the wire."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest
from envoy_data_plane.envoy.config.cluster import v3 as cluster_v3
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.extensions.load_balancing_policies.least_request import (
    v3 as lb_least_request,
)
from envoy_data_plane.envoy.extensions.load_balancing_policies.maglev import v3 as lb_maglev
from envoy_data_plane.envoy.extensions.load_balancing_policies.random import v3 as lb_random
from envoy_data_plane.envoy.extensions.load_balancing_policies.ring_hash import v3 as lb_ring_hash
from envoy_data_plane.envoy.extensions.load_balancing_policies.round_robin import (
    v3 as lb_round_robin,
)
from envoy_data_plane.envoy.extensions.upstreams.http import v3 as upstream_http

from controlplane.model import (
    CircuitBreakers,
    HashKey,
    HealthCheck,
    LbPolicy,
    OutlierDetection,
    SlowStart,
)
from tests.unit.xds.resources_fixtures import roundtrip, service, type_of
from xds import typeurls
from xds.resources import LbApi, build_cluster, cluster_inputs, hashing
from xds.resources.cluster import HTTP_PROTOCOL_OPTIONS_KEY

S = datetime.timedelta(seconds=1)


def _cluster(svc_kwargs: dict[str, Any], lb_api: LbApi = LbApi.TYPED) -> Any:
    svc = service(**svc_kwargs)
    return roundtrip(build_cluster(cluster_inputs(svc, svc.versions[0], lb_api=lb_api)))


def _typed_policy(cluster: Any) -> tuple[str, Any]:
    assert cluster.lb_policy == cluster_v3.ClusterLbPolicy.ROUND_ROBIN  # unset (enum default)
    [policy] = cluster.load_balancing_policy.policies
    ext = policy.typed_extension_config
    return ext.name, ext.typed_config.unpack()


def test_cluster_is_eds_over_ads_named_service_slash_version() -> None:
    c = _cluster({})
    assert c.name == "chat/v2"
    assert c.type == cluster_v3.ClusterDiscoveryType.EDS
    cfg = c.eds_cluster_config.eds_config
    assert cfg.ads == core.AggregatedConfigSource()
    assert cfg.resource_api_version == core.ApiVersion.V3
    assert c.eds_cluster_config.service_name == ""
    assert c.connect_timeout == 5 * S


def test_cluster_type_url_is_the_cds_type_url() -> None:
    from envoy_data_plane.google.protobuf import Any

    assert Any.pack(_cluster({})).type_url == typeurls.CLUSTER


def test_upstream_is_explicit_http1() -> None:
    any_ = _cluster({}).typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY]
    assert any_.type_url == f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS_KEY}"
    opts = any_.unpack()
    assert type_of(opts) is upstream_http.HttpProtocolOptions
    assert opts.explicit_http_config.http_protocol_options is not None
    assert opts.explicit_http_config.http2_protocol_options is None


def test_health_check_fields() -> None:
    hc = HealthCheck(
        path="/health_generate",
        interval_ms=3000,
        timeout_ms=1500,
        healthy_threshold=1,
        unhealthy_threshold=4,
    )
    [check] = _cluster({"health_check": hc}).health_checks
    assert check.http_health_check.path == "/health_generate"
    assert check.interval == 3 * S
    assert check.timeout == 1.5 * S
    assert check.healthy_threshold == 1
    assert check.unhealthy_threshold == 4
    # A weight-0 canary has never had traffic: it must still be checked at the interval.
    assert check.no_traffic_interval == 3 * S


def test_no_health_check_no_outlier_detection_when_unset() -> None:
    c = _cluster({"health_check": None, "outlier_detection": None})
    assert c.health_checks == []
    assert c.outlier_detection is None


def test_outlier_detection_fields() -> None:
    od = OutlierDetection(
        consecutive_5xx=7, interval_ms=2000, base_ejection_time_ms=15000, max_ejection_percent=34
    )
    out = _cluster({"outlier_detection": od}).outlier_detection
    assert out.consecutive_5xx == 7
    assert out.interval == 2 * S
    assert out.base_ejection_time == 15 * S
    assert out.max_ejection_percent == 34


def test_circuit_breakers_default_priority() -> None:
    svc = dataclasses.replace(service(), circuit_breakers=CircuitBreakers(11, 22, 33, 4))
    c = roundtrip(build_cluster(cluster_inputs(svc, svc.versions[0])))
    [t] = c.circuit_breakers.thresholds
    assert t.priority == core.RoutingPriority.DEFAULT
    assert (t.max_connections, t.max_pending_requests, t.max_requests, t.max_retries) == (
        11,
        22,
        33,
        4,
    )


# --- typed load_balancing_policy -------------------------------------------------------------


def test_typed_round_robin_with_slow_start() -> None:
    ss = SlowStart(window_ms=45_000, aggression=1.5, min_weight_percent=20.0)
    name, cfg = _typed_policy(_cluster({"policy": LbPolicy.ROUND_ROBIN, "slow_start": ss}))
    assert name == "envoy.load_balancing_policies.round_robin"
    assert type_of(cfg) is lb_round_robin.RoundRobin
    assert cfg.slow_start_config.slow_start_window == 45 * S
    assert cfg.slow_start_config.aggression.default_value == 1.5
    assert cfg.slow_start_config.aggression.runtime_key == "sluice.chat/v2.slow_start_aggression"
    assert cfg.slow_start_config.min_weight_percent.value == 20.0


def test_typed_least_request_has_explicit_active_request_bias() -> None:
    name, cfg = _typed_policy(_cluster({"policy": LbPolicy.LEAST_REQUEST}))
    assert name == "envoy.load_balancing_policies.least_request"
    assert type_of(cfg) is lb_least_request.LeastRequest
    assert cfg.active_request_bias.default_value == 1.0
    assert cfg.slow_start_config is None


def test_typed_least_request_slow_start() -> None:
    ss = SlowStart(window_ms=60_000)
    _, cfg = _typed_policy(_cluster({"policy": LbPolicy.LEAST_REQUEST, "slow_start": ss}))
    assert type_of(cfg) is lb_least_request.LeastRequest
    assert cfg.slow_start_config.slow_start_window == 60 * S
    assert cfg.slow_start_config.aggression.default_value == 1.0
    assert cfg.slow_start_config.min_weight_percent.value == 10.0


def test_typed_random() -> None:
    name, cfg = _typed_policy(_cluster({"policy": LbPolicy.RANDOM}))
    assert name == "envoy.load_balancing_policies.random"
    assert type_of(cfg) is lb_random.Random


@pytest.mark.parametrize(("pool", "bucket"), [(0, 1), (1, 1), (3, 4), (16, 16), (17, 32)])
def test_typed_ring_hash_ring_size_follows_pool_bucket(pool: int, bucket: int) -> None:
    name, cfg = _typed_policy(_cluster({"policy": LbPolicy.RING_HASH, "pool": pool}))
    assert name == "envoy.load_balancing_policies.ring_hash"
    assert type_of(cfg) is lb_ring_hash.RingHash
    assert cfg.minimum_ring_size == hashing.ring_hash_minimum_size(bucket)
    assert cfg.minimum_ring_size >= hashing.ring_hash_entries_per_host(bucket) * pool
    assert cfg.consistent_hashing_lb_config is None  # no bounded load asked for


def test_typed_ring_hash_bounded_load() -> None:
    kwargs = {"policy": LbPolicy.RING_HASH, "bounded_load": 1.25, "hash_key": HashKey("x-s")}
    _, cfg = _typed_policy(_cluster(kwargs))
    assert type_of(cfg) is lb_ring_hash.RingHash
    assert cfg.consistent_hashing_lb_config.hash_balance_factor == 125
    assert cfg.hash_balance_factor is None  # the deprecated field stays unset


@pytest.mark.parametrize(("pool", "table"), [(1, 65537), (64, 65537), (700, 102407)])
def test_typed_maglev_table_is_prime_and_large_enough(pool: int, table: int) -> None:
    name, cfg = _typed_policy(
        _cluster({"policy": LbPolicy.MAGLEV, "pool": pool, "weights": (100,)})
    )
    assert name == "envoy.load_balancing_policies.maglev"
    assert type_of(cfg) is lb_maglev.Maglev
    assert cfg.table_size == table
    assert hashing.is_prime(cfg.table_size)
    assert cfg.table_size >= 100 * pool


def test_typed_maglev_bounded_load() -> None:
    _, cfg = _typed_policy(_cluster({"policy": LbPolicy.MAGLEV, "bounded_load": 1.5}))
    assert type_of(cfg) is lb_maglev.Maglev
    assert cfg.consistent_hashing_lb_config.hash_balance_factor == 150


# --- legacy lb_policy ------------------------------------------------------------------------


def test_legacy_round_robin_with_slow_start() -> None:
    ss = SlowStart(window_ms=30_000, aggression=2.0, min_weight_percent=5.0)
    c = _cluster({"policy": LbPolicy.ROUND_ROBIN, "slow_start": ss}, LbApi.LEGACY)
    assert c.load_balancing_policy is None
    assert c.lb_policy == cluster_v3.ClusterLbPolicy.ROUND_ROBIN
    cfg = c.round_robin_lb_config.slow_start_config
    assert cfg.slow_start_window == 30 * S
    assert cfg.aggression.default_value == 2.0
    assert cfg.min_weight_percent.value == 5.0


def test_legacy_least_request() -> None:
    c = _cluster({"policy": LbPolicy.LEAST_REQUEST}, LbApi.LEGACY)
    assert c.lb_policy == cluster_v3.ClusterLbPolicy.LEAST_REQUEST
    assert c.least_request_lb_config.active_request_bias.default_value == 1.0


def test_legacy_random() -> None:
    c = _cluster({"policy": LbPolicy.RANDOM}, LbApi.LEGACY)
    assert c.lb_policy == cluster_v3.ClusterLbPolicy.RANDOM
    assert c.common_lb_config is None


def test_legacy_ring_hash_with_bounded_load() -> None:
    c = _cluster({"policy": LbPolicy.RING_HASH, "pool": 5, "bounded_load": 1.3}, LbApi.LEGACY)
    assert c.lb_policy == cluster_v3.ClusterLbPolicy.RING_HASH
    assert c.ring_hash_lb_config.minimum_ring_size == hashing.ring_hash_minimum_size(8)
    assert c.common_lb_config.consistent_hashing_lb_config.hash_balance_factor == 130


def test_legacy_maglev() -> None:
    c = _cluster({"policy": LbPolicy.MAGLEV}, LbApi.LEGACY)
    assert c.lb_policy == cluster_v3.ClusterLbPolicy.MAGLEV
    assert c.maglev_lb_config.table_size == 65537
    assert c.common_lb_config is None


# --- input normalization ---------------------------------------------------------------------


def test_inputs_exclude_weights_and_endpoints() -> None:
    a = service(weights=(20, 80), pool=3)
    b = service(weights=(50, 50), pool=3)
    assert cluster_inputs(a, a.versions[0]) == cluster_inputs(b, b.versions[0])


def test_non_hashing_inputs_ignore_pool_size() -> None:
    a, b = service(pool=1), service(pool=40)
    assert cluster_inputs(a, a.versions[0]) == cluster_inputs(b, b.versions[0])
    assert cluster_inputs(a, a.versions[0]).pool_bucket == 0


def test_hashing_inputs_change_only_across_a_power_of_two() -> None:
    def inputs(pool: int) -> object:
        s = service(policy=LbPolicy.RING_HASH, pool=pool)
        return cluster_inputs(s, s.versions[0])

    assert inputs(9) == inputs(12) == inputs(16)
    assert inputs(16) != inputs(17)


def test_slow_start_dropped_for_policies_without_it() -> None:
    s = service(policy=LbPolicy.MAGLEV, slow_start=SlowStart(window_ms=10_000))
    assert cluster_inputs(s, s.versions[0]).slow_start is None
    s = service(policy=LbPolicy.RANDOM, slow_start=SlowStart(window_ms=10_000))
    assert cluster_inputs(s, s.versions[0]).slow_start is None


def test_bounded_load_dropped_for_non_hashing_policies() -> None:
    s = service(policy=LbPolicy.LEAST_REQUEST, bounded_load=1.25)
    assert cluster_inputs(s, s.versions[0]).hash_balance_factor is None


def test_bounded_load_below_one_is_rejected() -> None:
    s = service(policy=LbPolicy.RING_HASH, bounded_load=0.9)
    with pytest.raises(ValueError, match="bounded load"):
        cluster_inputs(s, s.versions[0])

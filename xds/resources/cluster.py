"""One EDS Cluster per model version.

Load-balancing configuration comes in two encodings that Envoy 1.40 both
accepts (``tests/integration/test_envoy_accepts.py`` validates every policy
in both):

- ``LbApi.TYPED`` (the default): ``Cluster.load_balancing_policy`` with the
  ``envoy.load_balancing_policies.*`` extensions. Envoy's docs call the
  ``lb_policy`` enum "still supported for backward compatibility, but
  deprecated" and say the extensible policies "should be used instead"
  (https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/load_balancing_policies);
  Envoy converts the legacy fields into these same extension configs when
  it loads a cluster, so the typed form is what actually runs. It is also
  where new policies land (``client_side_weighted_round_robin``,
  ``override_host`` for an external endpoint picker), ``policies`` is an
  ordered fallback list (a newer policy can go in front of a built-in one
  without breaking older proxies), and every per-policy knob (ring size,
  bounded load, slow start) sits in one message instead of three places.
- ``LbApi.LEGACY``: ``lb_policy`` + the ``*_lb_config`` oneof +
  ``common_lb_config.consistent_hashing_lb_config``, for consumers that only
  read the enum (older proxies, dashboards keyed on ``lb_policy``).
  https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/cluster.proto#envoy-v3-api-field-config-cluster-v3-cluster-lb-policy

Neither form logs a deprecation warning on Envoy 1.40 (the integration test
asserts that too).
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass, field

import betterproto2
from envoy_data_plane.envoy.config.cluster import v3 as cluster_v3
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.extensions.load_balancing_policies.common import v3 as lb_common
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
from envoy_data_plane.envoy.type import v3 as type_v3

from controlplane.model import (
    CircuitBreakers,
    HealthCheck,
    LbPolicy,
    ModelService,
    OutlierDetection,
    SlowStart,
    Version,
    cluster_name,
)
from xds.resources import hashing
from xds.resources._common import ads_config_source, ms, pack

CONNECT_TIMEOUT_MS = 5_000
# Envoy's documented default for LEAST_REQUEST; stated explicitly so the pushed
# config says what it does (weight / (active + 1) ^ bias for unequal weights).
ACTIVE_REQUEST_BIAS = 1.0
HTTP_PROTOCOL_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

_SLOW_START_POLICIES = (LbPolicy.ROUND_ROBIN, LbPolicy.LEAST_REQUEST)

_TYPED_POLICY_NAME = {
    LbPolicy.ROUND_ROBIN: "envoy.load_balancing_policies.round_robin",
    LbPolicy.LEAST_REQUEST: "envoy.load_balancing_policies.least_request",
    LbPolicy.RANDOM: "envoy.load_balancing_policies.random",
    LbPolicy.RING_HASH: "envoy.load_balancing_policies.ring_hash",
    LbPolicy.MAGLEV: "envoy.load_balancing_policies.maglev",
}

_LEGACY_POLICY = {
    LbPolicy.ROUND_ROBIN: cluster_v3.ClusterLbPolicy.ROUND_ROBIN,
    LbPolicy.LEAST_REQUEST: cluster_v3.ClusterLbPolicy.LEAST_REQUEST,
    LbPolicy.RANDOM: cluster_v3.ClusterLbPolicy.RANDOM,
    LbPolicy.RING_HASH: cluster_v3.ClusterLbPolicy.RING_HASH,
    LbPolicy.MAGLEV: cluster_v3.ClusterLbPolicy.MAGLEV,
}


class LbApi(enum.Enum):
    TYPED = "typed"
    LEGACY = "legacy"


@dataclass(frozen=True)
class ClusterInputs:
    """Everything a version's Cluster depends on, normalized so equal Clusters have equal inputs.

    Not the traffic weight and not the endpoints (those are RDS and EDS). Fields
    a policy ignores are cleared: ``pool_bucket``/``hash_balance_factor`` only
    for hashing policies, ``slow_start`` only for round robin / least request.
    """

    name: str
    policy: LbPolicy
    pool_bucket: int = 0
    hash_balance_factor: int | None = None
    slow_start: SlowStart | None = None
    health_check: HealthCheck | None = None
    outlier_detection: OutlierDetection | None = None
    circuit_breakers: CircuitBreakers = field(default_factory=CircuitBreakers)
    lb_api: LbApi = LbApi.TYPED


def cluster_inputs(
    service: ModelService, version: Version, *, lb_api: LbApi = LbApi.TYPED
) -> ClusterInputs:
    lb = service.load_balancing
    hashing_policy = lb.policy.is_hashing
    return ClusterInputs(
        name=cluster_name(service.name, version.name),
        policy=lb.policy,
        pool_bucket=hashing.pool_bucket(len(version.endpoints)) if hashing_policy else 0,
        hash_balance_factor=(
            hashing.hash_balance_factor(lb.bounded_load)
            if hashing_policy and lb.bounded_load is not None
            else None
        ),
        # Envoy supports slow start only for these two policies.
        slow_start=service.slow_start if lb.policy in _SLOW_START_POLICIES else None,
        health_check=service.health_check,
        outlier_detection=service.outlier_detection,
        circuit_breakers=service.circuit_breakers,
        lb_api=lb_api,
    )


def build_cluster(inputs: ClusterInputs) -> cluster_v3.Cluster:
    cluster = cluster_v3.Cluster(
        name=inputs.name,
        type=cluster_v3.ClusterDiscoveryType.EDS,
        # service_name left empty: the ClusterLoadAssignment is named after the cluster.
        eds_cluster_config=cluster_v3.ClusterEdsClusterConfig(eds_config=ads_config_source()),
        connect_timeout=ms(CONNECT_TIMEOUT_MS),
        # Model servers (vLLM, SGLang, TGI) speak HTTP/1.1; say so explicitly
        # (the non-deprecated place for it since the v3 API).
        # https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/upstreams/http/v3/http_protocol_options.proto
        typed_extension_protocol_options={
            HTTP_PROTOCOL_OPTIONS_KEY: pack(
                upstream_http.HttpProtocolOptions(
                    explicit_http_config=upstream_http.HttpProtocolOptionsExplicitHttpConfig(
                        http_protocol_options=core.Http1ProtocolOptions()
                    )
                )
            )
        },
        circuit_breakers=_circuit_breakers(inputs.circuit_breakers),
    )
    if inputs.health_check is not None:
        cluster.health_checks = [_health_check(inputs.health_check)]
    if inputs.outlier_detection is not None:
        cluster.outlier_detection = _outlier_detection(inputs.outlier_detection)
    if inputs.lb_api is LbApi.TYPED:
        cluster.load_balancing_policy = cluster_v3.LoadBalancingPolicy(
            policies=[
                cluster_v3.LoadBalancingPolicyPolicy(
                    typed_extension_config=core.TypedExtensionConfig(
                        name=_TYPED_POLICY_NAME[inputs.policy],
                        typed_config=pack(_typed_policy_config(inputs)),
                    )
                )
            ]
        )
    else:
        _set_legacy_lb(cluster, inputs)
    return cluster


def _circuit_breakers(cb: CircuitBreakers) -> cluster_v3.CircuitBreakers:
    # https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/circuit_breaker.proto
    return cluster_v3.CircuitBreakers(
        thresholds=[
            cluster_v3.CircuitBreakersThresholds(
                priority=core.RoutingPriority.DEFAULT,
                max_connections=cb.max_connections,
                max_pending_requests=cb.max_pending_requests,
                max_requests=cb.max_requests,
                max_retries=cb.max_retries,
            )
        ]
    )


def _health_check(hc: HealthCheck) -> core.HealthCheck:
    # https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/core/v3/health_check.proto
    return core.HealthCheck(
        timeout=ms(hc.timeout_ms),
        interval=ms(hc.interval_ms),
        unhealthy_threshold=hc.unhealthy_threshold,
        healthy_threshold=hc.healthy_threshold,
        # Envoy checks a cluster that has never carried traffic only every 60 s
        # by default. A canary at weight 0 is exactly such a cluster, and its
        # health must be known *before* the rollout shifts traffic onto it, so
        # it is checked as often as a busy one (a GET /health is negligible
        # next to a generation).
        no_traffic_interval=ms(hc.interval_ms),
        http_health_check=core.HealthCheckHttpHealthCheck(path=hc.path),
    )


def _outlier_detection(od: OutlierDetection) -> cluster_v3.OutlierDetection:
    # https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/outlier_detection.proto
    return cluster_v3.OutlierDetection(
        consecutive_5xx=od.consecutive_5xx,
        interval=ms(od.interval_ms),
        base_ejection_time=ms(od.base_ejection_time_ms),
        max_ejection_percent=od.max_ejection_percent,
    )


def _runtime_double(value: float, key: str) -> core.RuntimeDouble:
    return core.RuntimeDouble(default_value=value, runtime_key=key)


def _slow_start_fields(
    inputs: ClusterInputs,
) -> tuple[datetime.timedelta, core.RuntimeDouble, type_v3.Percent] | None:
    ss = inputs.slow_start
    if ss is None:
        return None
    aggression = _runtime_double(ss.aggression, f"sluice.{inputs.name}.slow_start_aggression")
    return ms(ss.window_ms), aggression, type_v3.Percent(value=ss.min_weight_percent)


def _typed_slow_start(inputs: ClusterInputs) -> lb_common.SlowStartConfig | None:
    fields = _slow_start_fields(inputs)
    if fields is None:
        return None
    window, aggression, min_weight = fields
    return lb_common.SlowStartConfig(
        slow_start_window=window, aggression=aggression, min_weight_percent=min_weight
    )


def _legacy_slow_start(inputs: ClusterInputs) -> cluster_v3.ClusterSlowStartConfig | None:
    fields = _slow_start_fields(inputs)
    if fields is None:
        return None
    window, aggression, min_weight = fields
    return cluster_v3.ClusterSlowStartConfig(
        slow_start_window=window, aggression=aggression, min_weight_percent=min_weight
    )


def _active_request_bias(inputs: ClusterInputs) -> core.RuntimeDouble:
    return _runtime_double(ACTIVE_REQUEST_BIAS, f"sluice.{inputs.name}.active_request_bias")


def _consistent_hashing(inputs: ClusterInputs) -> lb_common.ConsistentHashingLbConfig | None:
    if inputs.hash_balance_factor is None:
        return None
    return lb_common.ConsistentHashingLbConfig(hash_balance_factor=inputs.hash_balance_factor)


def _typed_policy_config(inputs: ClusterInputs) -> betterproto2.Message:
    """The extension config message for ``load_balancing_policy``.

    https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/cluster.proto#envoy-v3-api-msg-config-cluster-v3-loadbalancingpolicy
    """
    policy = inputs.policy
    if policy is LbPolicy.ROUND_ROBIN:
        return lb_round_robin.RoundRobin(slow_start_config=_typed_slow_start(inputs))
    if policy is LbPolicy.LEAST_REQUEST:
        return lb_least_request.LeastRequest(
            active_request_bias=_active_request_bias(inputs),
            slow_start_config=_typed_slow_start(inputs),
        )
    if policy is LbPolicy.RANDOM:
        return lb_random.Random()
    if policy is LbPolicy.RING_HASH:
        return lb_ring_hash.RingHash(
            minimum_ring_size=hashing.ring_hash_minimum_size(inputs.pool_bucket),
            consistent_hashing_lb_config=_consistent_hashing(inputs),
        )
    if policy is LbPolicy.MAGLEV:
        return lb_maglev.Maglev(
            table_size=hashing.maglev_table_size(inputs.pool_bucket),
            consistent_hashing_lb_config=_consistent_hashing(inputs),
        )
    raise AssertionError(f"unhandled policy {policy}")


def _set_legacy_lb(cluster: cluster_v3.Cluster, inputs: ClusterInputs) -> None:
    """``lb_policy`` plus its ``*_lb_config`` (a oneof) and ``common_lb_config``.

    https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/cluster.proto#envoy-v3-api-field-config-cluster-v3-cluster-lb-policy
    """
    policy = inputs.policy
    cluster.lb_policy = _LEGACY_POLICY[policy]
    if policy is LbPolicy.ROUND_ROBIN and inputs.slow_start is not None:
        cluster.round_robin_lb_config = cluster_v3.ClusterRoundRobinLbConfig(
            slow_start_config=_legacy_slow_start(inputs)
        )
    elif policy is LbPolicy.LEAST_REQUEST:
        cluster.least_request_lb_config = cluster_v3.ClusterLeastRequestLbConfig(
            active_request_bias=_active_request_bias(inputs),
            slow_start_config=_legacy_slow_start(inputs),
        )
    elif policy is LbPolicy.RING_HASH:
        cluster.ring_hash_lb_config = cluster_v3.ClusterRingHashLbConfig(
            minimum_ring_size=hashing.ring_hash_minimum_size(inputs.pool_bucket)
        )
    elif policy is LbPolicy.MAGLEV:
        cluster.maglev_lb_config = cluster_v3.ClusterMaglevLbConfig(
            table_size=hashing.maglev_table_size(inputs.pool_bucket)
        )
    if inputs.hash_balance_factor is not None:
        cluster.common_lb_config = cluster_v3.ClusterCommonLbConfig(
            consistent_hashing_lb_config=cluster_v3.ClusterCommonLbConfigConsistentHashingLbConfig(
                hash_balance_factor=inputs.hash_balance_factor
            )
        )

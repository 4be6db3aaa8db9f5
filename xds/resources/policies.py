"""A cluster's load-balancing policy, in both encodings Envoy 1.40 accepts.

See ``cluster`` for why the typed form (``load_balancing_policy``) is the
default and when ``LbApi.LEGACY`` is used. ``load_report`` has no legacy enum
value: its cluster always carries the typed form, with least request behind it
for proxies that lack the extension (Envoy takes the first policy it knows).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

import betterproto2
from envoy_data_plane.envoy.config.cluster import v3 as cluster_v3
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.extensions.load_balancing_policies.client_side_weighted_round_robin import (  # noqa: E501
    v3 as lb_cswrr,
)
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
from envoy_data_plane.envoy.type import v3 as type_v3

from controlplane.model import LbPolicy
from xds.resources import hashing
from xds.resources._common import ms, pack

if TYPE_CHECKING:
    from xds.resources.cluster import ClusterInputs

TYPED_POLICY_NAME = {
    LbPolicy.ROUND_ROBIN: "envoy.load_balancing_policies.round_robin",
    LbPolicy.LEAST_REQUEST: "envoy.load_balancing_policies.least_request",
    LbPolicy.RANDOM: "envoy.load_balancing_policies.random",
    LbPolicy.RING_HASH: "envoy.load_balancing_policies.ring_hash",
    LbPolicy.MAGLEV: "envoy.load_balancing_policies.maglev",
    LbPolicy.LOAD_REPORT: "envoy.load_balancing_policies.client_side_weighted_round_robin",
}

# Policies the control plane builds on Envoy's least request (weights come from it).
_LEAST_REQUEST = (LbPolicy.LEAST_REQUEST, LbPolicy.RESPONSE_TIME, LbPolicy.HYBRID)

_LEGACY_POLICY = {
    LbPolicy.ROUND_ROBIN: cluster_v3.ClusterLbPolicy.ROUND_ROBIN,
    LbPolicy.LEAST_REQUEST: cluster_v3.ClusterLbPolicy.LEAST_REQUEST,
    LbPolicy.RANDOM: cluster_v3.ClusterLbPolicy.RANDOM,
    LbPolicy.RING_HASH: cluster_v3.ClusterLbPolicy.RING_HASH,
    LbPolicy.MAGLEV: cluster_v3.ClusterLbPolicy.MAGLEV,
}


def envoy_policy(policy: LbPolicy) -> LbPolicy:
    """The Envoy policy a cluster runs for ``policy`` (the control plane adds the rest)."""
    return LbPolicy.LEAST_REQUEST if policy in _LEAST_REQUEST else policy


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
    return _runtime_double(inputs.active_request_bias,
                           f"sluice.{inputs.name}.active_request_bias")


def _consistent_hashing(inputs: ClusterInputs) -> lb_common.ConsistentHashingLbConfig | None:
    if inputs.hash_balance_factor is None:
        return None
    return lb_common.ConsistentHashingLbConfig(hash_balance_factor=inputs.hash_balance_factor)


def _typed_config(inputs: ClusterInputs, policy: LbPolicy) -> betterproto2.Message:
    """The extension config message for ``load_balancing_policy``.

    https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/cluster.proto#envoy-v3-api-msg-config-cluster-v3-loadbalancingpolicy
    """
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
    if policy is LbPolicy.LOAD_REPORT:
        # https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/load_balancing_policies/client_side_weighted_round_robin/v3/client_side_weighted_round_robin.proto
        # In-band reports (response headers); weight = rps / utilization.
        tuning = inputs.load_report
        assert tuning is not None
        return lb_cswrr.ClientSideWeightedRoundRobin(
            enable_oob_load_report=False,
            blackout_period=ms(tuning.blackout_period_ms),
            weight_update_period=ms(tuning.weight_update_period_ms),
            weight_expiration_period=ms(tuning.weight_expiration_period_ms),
            error_utilization_penalty=tuning.error_utilization_penalty,
        )
    raise AssertionError(f"unhandled policy {policy}")


def _entry(inputs: ClusterInputs, policy: LbPolicy) -> cluster_v3.LoadBalancingPolicyPolicy:
    return cluster_v3.LoadBalancingPolicyPolicy(
        typed_extension_config=core.TypedExtensionConfig(
            name=TYPED_POLICY_NAME[policy], typed_config=pack(_typed_config(inputs, policy))
        )
    )


def typed_policy(inputs: ClusterInputs) -> cluster_v3.LoadBalancingPolicy:
    policy = envoy_policy(inputs.policy)
    entries = [_entry(inputs, policy)]
    if policy is LbPolicy.LOAD_REPORT:
        entries.append(_entry(inputs, LbPolicy.LEAST_REQUEST))
    return cluster_v3.LoadBalancingPolicy(policies=entries)


def set_legacy_lb(cluster: cluster_v3.Cluster, inputs: ClusterInputs) -> None:
    """``lb_policy`` plus its ``*_lb_config`` (a oneof) and ``common_lb_config``.

    https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/cluster.proto#envoy-v3-api-field-config-cluster-v3-cluster-lb-policy
    """
    policy = envoy_policy(inputs.policy)
    if policy is LbPolicy.LOAD_REPORT:
        cluster.load_balancing_policy = typed_policy(inputs)
        return
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
        common = cluster.common_lb_config or cluster_v3.ClusterCommonLbConfig()
        common.consistent_hashing_lb_config = (
            cluster_v3.ClusterCommonLbConfigConsistentHashingLbConfig(
                hash_balance_factor=inputs.hash_balance_factor
            )
        )
        cluster.common_lb_config = common

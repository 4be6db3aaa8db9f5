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

import enum
from dataclasses import dataclass, field, replace

from envoy_data_plane.envoy.config.cluster import v3 as cluster_v3
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.extensions.upstreams.http import v3 as upstream_http
from envoy_data_plane.envoy.type import v3 as type_v3

from controlplane.model import (
    CircuitBreakers,
    HealthCheck,
    LbPolicy,
    LoadReportTuning,
    ModelService,
    OutlierDetection,
    SlowStart,
    Version,
    affinity_cluster_name,
    batch_cluster_name,
    cluster_name,
    hybrid_header,
)
from xds.resources import hashing
from xds.resources._common import ads_config_source, ms, pack
from xds.resources.policies import envoy_policy, set_legacy_lb, typed_policy

CONNECT_TIMEOUT_MS = 5_000
# Envoy's documented default for LEAST_REQUEST; stated explicitly so the pushed
# config says what it does (weight / (active + 1) ^ bias for unequal weights).
ACTIVE_REQUEST_BIAS = 1.0
HTTP_PROTOCOL_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

_SLOW_START_POLICIES = (LbPolicy.ROUND_ROBIN, LbPolicy.LEAST_REQUEST)


class LbApi(enum.Enum):
    TYPED = "typed"
    LEGACY = "legacy"


@dataclass(frozen=True)
class ClusterInputs:
    """Everything a Cluster depends on, normalized so equal Clusters have equal inputs.

    Not the traffic weight and not the endpoints (those are RDS and EDS). Fields
    a policy ignores are cleared: ``pool_bucket``/``hash_balance_factor`` only
    for hashing policies, ``slow_start`` only for round robin / least request.
    ``policy`` is what the cluster runs (a hybrid version's affinity cluster
    runs Maglev, its own cluster least request).
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
    active_request_bias: float = ACTIVE_REQUEST_BIAS
    load_report: LoadReportTuning | None = None
    panic_threshold: float | None = None  # percent; None: Envoy's 50
    retry_budget: tuple[float, int] | None = None  # (percent, min concurrency)


def cluster_inputs(
    service: ModelService, version: Version, *, lb_api: LbApi = LbApi.TYPED
) -> ClusterInputs:
    """The version's own cluster ``<service>/<version>``."""
    lb = service.load_balancing
    policy = LbPolicy.LEAST_REQUEST if lb.policy is LbPolicy.HYBRID else lb.policy
    hashing_policy = policy.is_hashing
    retries = service.retries
    return ClusterInputs(
        name=cluster_name(service.name, version.name),
        policy=policy,
        pool_bucket=hashing.pool_bucket(len(version.endpoints)) if hashing_policy else 0,
        hash_balance_factor=(
            hashing.hash_balance_factor(lb.bounded_load)
            if hashing_policy and lb.bounded_load is not None
            else None
        ),
        # Envoy supports slow start only for these two policies.
        slow_start=service.slow_start
        if envoy_policy(policy) in _SLOW_START_POLICIES else None,
        health_check=service.health_check,
        outlier_detection=service.outlier_detection,
        circuit_breakers=service.circuit_breakers,
        lb_api=lb_api,
        active_request_bias=lb.active_request_bias
        if envoy_policy(policy) is LbPolicy.LEAST_REQUEST else ACTIVE_REQUEST_BIAS,
        load_report=(lb.load_report or LoadReportTuning())
        if policy is LbPolicy.LOAD_REPORT else None,
        panic_threshold=service.failover.panic_threshold if service.failover else None,
        retry_budget=(retries.budget_percent, retries.min_concurrency) if retries else None,
    )


def affinity_inputs(service: ModelService, version: Version, base: ClusterInputs) -> ClusterInputs:
    """Hybrid: ``<service>/<version>/affinity``, Maglev under bounded load, same endpoints."""
    factor = service.load_balancing.bounded_load
    return replace(
        base,
        name=affinity_cluster_name(service.name, version.name),
        policy=LbPolicy.MAGLEV,
        pool_bucket=hashing.pool_bucket(len(version.endpoints)),
        hash_balance_factor=hashing.hash_balance_factor(factor) if factor is not None else None,
        slow_start=None,
        active_request_bias=ACTIVE_REQUEST_BIAS,
    )


def batch_inputs(service: ModelService, version: Version, base: ClusterInputs) -> ClusterInputs:
    """Offline class: ``<service>/<version>/batch``, least request under the batch cap.

    The cap is per proxy (each Envoy counts its own requests); until the routing
    controller has sized it, batch gets nothing.
    """
    cap = service.routing.batch_cap(version.name)
    cb = service.circuit_breakers
    return replace(
        base,
        name=batch_cluster_name(service.name, version.name),
        policy=LbPolicy.LEAST_REQUEST,
        pool_bucket=0,
        hash_balance_factor=None,
        slow_start=None,
        active_request_bias=ACTIVE_REQUEST_BIAS,
        load_report=None,
        circuit_breakers=replace(cb, max_requests=cap, max_pending_requests=cap),
    )


def service_cluster_inputs(
    service: ModelService, *, lb_api: LbApi = LbApi.TYPED
) -> list[tuple[Version, ClusterInputs]]:
    """Every cluster of a service: per version its own, then affinity and batch ones."""
    out: list[tuple[Version, ClusterInputs]] = []
    for version in service.versions:
        base = cluster_inputs(service, version, lb_api=lb_api)
        out.append((version, base))
        if hybrid_header(service) is not None:
            out.append((version, affinity_inputs(service, version, base)))
        if service.offline is not None:
            out.append((version, batch_inputs(service, version, base)))
    return out


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
        circuit_breakers=_circuit_breakers(inputs.circuit_breakers, inputs.retry_budget),
    )
    if inputs.health_check is not None:
        cluster.health_checks = [_health_check(inputs.health_check)]
    if inputs.outlier_detection is not None:
        cluster.outlier_detection = _outlier_detection(inputs.outlier_detection)
    if inputs.lb_api is LbApi.TYPED:
        cluster.load_balancing_policy = typed_policy(inputs)
    else:
        set_legacy_lb(cluster, inputs)
    if inputs.panic_threshold is not None:
        # Read from common_lb_config with either encoding of the policy.
        common = cluster.common_lb_config or cluster_v3.ClusterCommonLbConfig()
        common.healthy_panic_threshold = type_v3.Percent(value=inputs.panic_threshold)
        cluster.common_lb_config = common
    return cluster


def _circuit_breakers(
    cb: CircuitBreakers, retry_budget: tuple[float, int] | None
) -> cluster_v3.CircuitBreakers:
    # https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/circuit_breaker.proto
    thresholds = cluster_v3.CircuitBreakersThresholds(
        priority=core.RoutingPriority.DEFAULT,
        max_connections=cb.max_connections,
        max_pending_requests=cb.max_pending_requests,
        max_requests=cb.max_requests,
        max_retries=cb.max_retries,
    )
    if retry_budget is not None:
        # With a budget, max_retries no longer applies: retries in flight are
        # bounded by a share of the requests in flight instead.
        percent, minimum = retry_budget
        thresholds.retry_budget = cluster_v3.CircuitBreakersThresholdsRetryBudget(
            budget_percent=type_v3.Percent(value=percent), min_retry_concurrency=minimum
        )
    return cluster_v3.CircuitBreakers(thresholds=[thresholds])


def _health_check(hc: HealthCheck) -> core.HealthCheck:
    # https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/core/v3/health_check.proto
    return core.HealthCheck(
        timeout=ms(hc.timeout_ms),
        interval=ms(hc.interval_ms),
        unhealthy_threshold=hc.unhealthy_threshold,
        healthy_threshold=hc.healthy_threshold,
        # Envoy checks a cluster that has never carried traffic only every 60 s
        # by default (measured: failover delayed by ≈57 s). A canary at weight 0,
        # or a failover priority that takes no traffic until the first pool
        # fails, is exactly such a cluster, and its health must be known
        # *before* traffic moves onto it, so it is checked as often as a busy
        # one (a GET /health is negligible next to a generation).
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

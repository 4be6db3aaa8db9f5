"""RouteConfiguration (RDS) per service: the traffic split across versions.

The split is one ``weighted_clusters`` route over *every* version, weight-0
ones included, always in the order of ``ModelService.versions``. Keeping the
list stable matters for sticky version choice: with ``use_hash_policy`` Envoy
maps a request's hash onto the cumulative weights in list order, so a user
only moves when the boundary moves past their hash, not because the list was
reordered. https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/route/v3/route_components.proto#envoy-v3-api-msg-config-route-v3-weightedcluster
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envoy_data_plane.envoy.config.route import v3 as route_v3

from controlplane.model import (
    HashKey,
    ModelService,
    Timeouts,
    cluster_name,
    route_config_name,
)
from xds.resources._common import ms


@dataclass(frozen=True)
class RouteInputs:
    service: str
    clusters: tuple[tuple[str, int], ...]  # (cluster name, weight) in version order
    hash_key: HashKey | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)


def route_inputs(service: ModelService) -> RouteInputs:
    return RouteInputs(
        service=service.name,
        clusters=tuple((cluster_name(service.name, v.name), v.weight) for v in service.versions),
        hash_key=service.load_balancing.hash_key,
        timeouts=service.timeouts,
    )


def route_cluster_refs(inputs: RouteInputs) -> frozenset[str]:
    """Every cluster the route config names (weight 0 included: Envoy still resolves it)."""
    return frozenset(name for name, _ in inputs.clusters)


def hash_policies(key: HashKey | None) -> list[route_v3.RouteActionHashPolicy]:
    """``RouteAction.hash_policy`` for the key (empty when there is none).

    https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/route/v3/route_components.proto#envoy-v3-api-msg-config-route-v3-routeaction-hashpolicy
    """
    if key is None:
        return []
    if key.header is not None:
        policy = route_v3.RouteActionHashPolicy(
            header=route_v3.RouteActionHashPolicyHeader(header_name=key.header)
        )
    elif key.cookie is not None:
        cookie = route_v3.RouteActionHashPolicyCookie(name=key.cookie.name, path=key.cookie.path)
        # With a ttl Envoy sets the cookie when the request lacks it, so a new
        # user becomes sticky from the first response; without one it only
        # hashes a cookie the application sets itself.
        if key.cookie.ttl_ms > 0:
            cookie.ttl = ms(key.cookie.ttl_ms)
        policy = route_v3.RouteActionHashPolicy(cookie=cookie)
    elif key.source_ip:
        policy = route_v3.RouteActionHashPolicy(
            connection_properties=route_v3.RouteActionHashPolicyConnectionProperties(source_ip=True)
        )
    else:
        return []
    return [policy]


def build_route_configuration(inputs: RouteInputs) -> route_v3.RouteConfiguration:
    policies = hash_policies(inputs.hash_key)
    weighted = route_v3.WeightedCluster(
        clusters=[
            route_v3.WeightedClusterClusterWeight(name=name, weight=weight)
            for name, weight in inputs.clusters
        ],
        # total_weight is deprecated in v3: Envoy sums the weights (ours sum to 100).
    )
    if policies:
        # The same hash that picks the host also picks the version, so a user
        # keeps the same model version while the split moves past them.
        weighted.use_hash_policy = True
    action = route_v3.RouteAction(
        weighted_clusters=weighted,
        hash_policy=policies,
        # Generations stream for minutes; Envoy's 15 s default route timeout
        # would cut them. 0 disables a timeout.
        # https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/route/v3/route_components.proto#envoy-v3-api-field-config-route-v3-routeaction-timeout
        timeout=ms(inputs.timeouts.request_ms),
        idle_timeout=ms(inputs.timeouts.idle_ms),
    )
    return route_v3.RouteConfiguration(
        name=route_config_name(inputs.service),
        virtual_hosts=[
            route_v3.VirtualHost(
                name=inputs.service,
                domains=["*"],
                routes=[
                    route_v3.Route(
                        name="versions",
                        match=route_v3.RouteMatch(prefix="/"),
                        route=action,
                    )
                ],
            )
        ],
    )

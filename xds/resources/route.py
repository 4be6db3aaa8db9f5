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

from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.config.route import v3 as route_v3
from envoy_data_plane.envoy.type import v3 as type_v3
from envoy_data_plane.envoy.type.matcher import v3 as matcher_v3

from controlplane.model import (
    HashKey,
    ModelService,
    Timeouts,
    Unavailable,
    cluster_name,
    route_config_name,
)
from xds.resources._common import ms


@dataclass(frozen=True)
class RouteInputs:
    service: str
    clusters: tuple[tuple[str, float], ...]  # (cluster name, weight percent) in version order
    hash_key: HashKey | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    cohorts: tuple[tuple[str, str, str], ...] = ()  # (header, value, cluster)
    mirrors: tuple[tuple[str, float], ...] = ()  # (cluster, percent)
    unavailable: Unavailable | None = None


def route_inputs(service: ModelService) -> RouteInputs:
    traffic = service.traffic
    return RouteInputs(
        service=service.name,
        clusters=tuple((cluster_name(service.name, v.name), v.weight) for v in service.versions),
        hash_key=service.load_balancing.hash_key,
        timeouts=service.timeouts,
        cohorts=tuple((c.header, c.value, cluster_name(service.name, c.version))
                      for c in traffic.cohorts),
        mirrors=tuple((cluster_name(service.name, m.version), m.percent)
                      for m in traffic.mirrors),
        unavailable=traffic.unavailable,
    )


def route_cluster_refs(inputs: RouteInputs) -> frozenset[str]:
    """Every cluster the route config names (weight 0 included: Envoy still resolves it)."""
    names = {name for name, _ in inputs.clusters}
    names.update(cluster for _, _, cluster in inputs.cohorts)
    names.update(cluster for cluster, _ in inputs.mirrors)
    return frozenset(names)


def envoy_weights(weights: tuple[float, ...]) -> tuple[int, ...]:
    """Integer cluster weights: percents as they are, or basis points when one is fractional.

    Envoy sums the weights itself (``total_weight`` is deprecated in v3), so the
    scale is free; whole percents keep the pushed config readable.
    """
    if all(float(w).is_integer() for w in weights):
        return tuple(int(w) for w in weights)
    return tuple(round(w * 100) for w in weights)


def _fraction(percent: float) -> core.RuntimeFractionalPercent:
    if float(percent).is_integer():
        value = type_v3.FractionalPercent(
            numerator=int(percent), denominator=type_v3.FractionalPercentDenominatorType.HUNDRED)
    else:
        value = type_v3.FractionalPercent(
            numerator=round(percent * 10_000),
            denominator=type_v3.FractionalPercentDenominatorType.MILLION)
    return core.RuntimeFractionalPercent(default_value=value)


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


def _action(inputs: RouteInputs, policies: list[route_v3.RouteActionHashPolicy],
            cluster: str | None = None) -> route_v3.RouteAction:
    action = route_v3.RouteAction(
        hash_policy=policies,
        # Generations stream for minutes; Envoy's 15 s default route timeout
        # would cut them. 0 disables a timeout.
        # https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/route/v3/route_components.proto#envoy-v3-api-field-config-route-v3-routeaction-timeout
        timeout=ms(inputs.timeouts.request_ms),
        idle_timeout=ms(inputs.timeouts.idle_ms),
        # Copies whose answers Envoy drops (blue-green's first phase):
        # https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/route/v3/route_components.proto#envoy-v3-api-msg-config-route-v3-routeaction-requestmirrorpolicy
        request_mirror_policies=[
            route_v3.RouteActionRequestMirrorPolicy(cluster=name, runtime_fraction=_fraction(p))
            for name, p in inputs.mirrors
        ],
    )
    if cluster is not None:
        action.cluster = cluster
        return action
    weights = envoy_weights(tuple(w for _, w in inputs.clusters))
    weighted = route_v3.WeightedCluster(
        clusters=[
            route_v3.WeightedClusterClusterWeight(name=name, weight=weight)
            for (name, _), weight in zip(inputs.clusters, weights, strict=True)
        ],
    )
    if policies:
        # The same hash that picks the host also picks the version, so a user
        # keeps the same model version while the split moves past them.
        weighted.use_hash_policy = True
    action.weighted_clusters = weighted
    return action


def _routes(inputs: RouteInputs) -> list[route_v3.Route]:
    if inputs.unavailable is not None:
        # A strict synchronized switch: no proxy serves either version until every
        # proxy is ready for the new one; clients retry after the window.
        return [route_v3.Route(
            name="switching",
            match=route_v3.RouteMatch(prefix="/"),
            direct_response=route_v3.DirectResponseAction(
                status=503,
                body=core.DataSource(inline_string="switching model versions; retry\n")),
            response_headers_to_add=[core.HeaderValueOption(
                header=core.HeaderValue(key="retry-after",
                                        value=str(inputs.unavailable.retry_after_s)),
                append_action=core.HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
            )],
        )]
    policies = hash_policies(inputs.hash_key)
    routes = [
        route_v3.Route(
            name=f"cohort-{i}",
            match=route_v3.RouteMatch(prefix="/", headers=[route_v3.HeaderMatcher(
                name=header, string_match=matcher_v3.StringMatcher(exact=value))]),
            route=_action(inputs, policies, cluster),
        )
        for i, (header, value, cluster) in enumerate(inputs.cohorts)
    ]
    routes.append(route_v3.Route(name="versions", match=route_v3.RouteMatch(prefix="/"),
                                 route=_action(inputs, policies)))
    return routes


def build_route_configuration(inputs: RouteInputs) -> route_v3.RouteConfiguration:
    return route_v3.RouteConfiguration(
        name=route_config_name(inputs.service),
        virtual_hosts=[
            route_v3.VirtualHost(name=inputs.service, domains=["*"], routes=_routes(inputs))
        ],
    )

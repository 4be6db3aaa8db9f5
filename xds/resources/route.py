"""RouteConfiguration (RDS) per service: the traffic split across versions.

The split is one ``weighted_clusters`` route over *every* version, weight-0
ones included, always in the order of ``ModelService.versions``. Keeping the
list stable matters for sticky version choice: with ``use_hash_policy`` Envoy
maps a request's hash onto the cumulative weights in list order, so a user
only moves when the boundary moves past their hash, not because the list was
reordered. https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/route/v3/route_components.proto#envoy-v3-api-msg-config-route-v3-weightedcluster
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.config.route import v3 as route_v3
from envoy_data_plane.envoy.extensions.retry.host.previous_hosts import v3 as previous_hosts
from envoy_data_plane.envoy.type import v3 as type_v3
from envoy_data_plane.envoy.type.matcher import v3 as matcher_v3

from controlplane.model import (
    HashKey,
    LbPolicy,
    ModelService,
    Retries,
    Timeouts,
    Unavailable,
    affinity_cluster_name,
    batch_cluster_name,
    batch_route_config_name,
    cluster_name,
    hybrid_header,
    route_config_name,
)
from xds.resources._common import ms, pack

# Asking a pod for an ORCA load report in its response headers, and the header it
# answers with (Envoy's client-side weighted round robin reads it; the client
# need not see it). https://github.com/envoyproxy/envoy/blob/main/source/common/orca/orca_parser.h
ORCA_REQUEST_HEADER = "endpoint-load-metrics-format"
ORCA_RESPONSE_HEADER = "endpoint-load-metrics"
CLASS_HEADER = "x-sluice-class"


@dataclass(frozen=True)
class RouteInputs:
    service: str
    clusters: tuple[tuple[str, float], ...]  # (cluster name, weight percent) in version order
    hash_key: HashKey | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    cohorts: tuple[tuple[str, str, str], ...] = ()  # (header, value, cluster)
    mirrors: tuple[tuple[str, float], ...] = ()  # (cluster, percent)
    unavailable: Unavailable | None = None
    # Hybrid: requests carrying the key header go to these hash clusters.
    affinity: tuple[str, ...] = ()  # one per version, in version order
    # Offline class: batch requests (header == value) go to these clusters.
    batch: tuple[str, ...] = ()
    batch_match: tuple[str, str] | None = None  # (header, value); None: own listener only
    retries: Retries | None = None
    orca: bool = False  # ask pods for ORCA load reports (policy load_report)
    name: str = ""  # the route config's name; "" is the service's


def route_inputs(service: ModelService) -> RouteInputs:
    traffic = service.traffic
    names = [v.name for v in service.versions]
    offline = service.offline
    hybrid = hybrid_header(service) is not None
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
        affinity=tuple(affinity_cluster_name(service.name, n) for n in names) if hybrid else (),
        batch=tuple(batch_cluster_name(service.name, n) for n in names) if offline else (),
        batch_match=(offline.header, offline.value)
        if offline is not None and offline.header is not None else None,
        retries=service.retries,
        orca=service.load_balancing.policy is LbPolicy.LOAD_REPORT,
    )


def batch_route_inputs(service: ModelService) -> RouteInputs | None:
    """The batch listener's route config (``<service>/batch-routes``): every request is batch."""
    offline = service.offline
    if offline is None or offline.listener is None:
        return None
    base = route_inputs(service)
    return replace(base, name=batch_route_config_name(service.name), hash_key=None,
                   cohorts=(), mirrors=(), affinity=(), batch_match=None)


def route_cluster_refs(inputs: RouteInputs) -> frozenset[str]:
    """Every cluster the route config names (weight 0 included: Envoy still resolves it)."""
    if inputs.name:  # a batch listener's routes name only the batch clusters
        return frozenset(inputs.batch)
    names = {name for name, _ in inputs.clusters}
    names.update(cluster for _, _, cluster in inputs.cohorts)
    names.update(cluster for cluster, _ in inputs.mirrors)
    names.update(inputs.affinity)
    if inputs.batch_match is not None:
        names.update(inputs.batch)
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


def retry_policy(retries: Retries) -> route_v3.RetryPolicy:
    """Retries only where no response byte has reached the client, on another pod.

    https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/router_filter#x-envoy-retry-on
    Envoy never retries once it has started the response downstream; the
    conditions here also exclude 5xx answers (a pod that answered did the work).
    The cluster's retry budget bounds how many retries run at once.
    """
    return route_v3.RetryPolicy(
        retry_on=",".join(retries.on),
        num_retries=retries.attempts,
        retry_host_predicate=[route_v3.RetryPolicyRetryHostPredicate(
            name="envoy.retry_host_predicates.previous_hosts",
            typed_config=pack(previous_hosts.PreviousHostsPredicate()),
        )],
        host_selection_retry_max_attempts=3,
    )


def _action(inputs: RouteInputs, policies: list[route_v3.RouteActionHashPolicy],
            cluster: str | None = None, names: tuple[str, ...] | None = None,
            mirror: bool = True) -> route_v3.RouteAction:
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
        ] if mirror else [],
    )
    if inputs.retries is not None:
        action.retry_policy = retry_policy(inputs.retries)
    if cluster is not None:
        action.cluster = cluster
        return action
    weights = envoy_weights(tuple(w for _, w in inputs.clusters))
    targets = names or tuple(name for name, _ in inputs.clusters)
    weighted = route_v3.WeightedCluster(
        clusters=[
            route_v3.WeightedClusterClusterWeight(name=name, weight=weight)
            for name, weight in zip(targets, weights, strict=True)
        ],
    )
    if policies:
        # The same hash that picks the host also picks the version, so a user
        # keeps the same model version while the split moves past them.
        weighted.use_hash_policy = True
    action.weighted_clusters = weighted
    return action


def _unavailable(inputs: RouteInputs, unavailable: Unavailable) -> list[route_v3.Route]:
    # A strict synchronized switch: no proxy serves either version until every
    # proxy is ready for the new one; clients retry after the window.
    return [route_v3.Route(
        name="switching",
        match=route_v3.RouteMatch(prefix="/"),
        direct_response=route_v3.DirectResponseAction(
            status=503,
            body=core.DataSource(inline_string="switching model versions; retry\n")),
        response_headers_to_add=[core.HeaderValueOption(
            header=core.HeaderValue(key="retry-after", value=str(unavailable.retry_after_s)),
            append_action=core.HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
        )],
    )]


def _header(name: str, value: str | None = None) -> route_v3.HeaderMatcher:
    if value is None:
        return route_v3.HeaderMatcher(name=name, present_match=True)
    return route_v3.HeaderMatcher(name=name, string_match=matcher_v3.StringMatcher(exact=value))


def _set_header(key: str, value: str) -> core.HeaderValueOption:
    return core.HeaderValueOption(
        header=core.HeaderValue(key=key, value=value),
        append_action=core.HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def _orca(route: route_v3.Route) -> route_v3.Route:
    route.request_headers_to_add = [*route.request_headers_to_add,
                                    _set_header(ORCA_REQUEST_HEADER, "TEXT")]
    route.response_headers_to_remove = [ORCA_RESPONSE_HEADER]
    return route


def _batch_route(inputs: RouteInputs, match: route_v3.RouteMatch) -> route_v3.Route:
    """Batch requests: their own clusters (the cap), marked for the pods' schedulers
    (``x-sluice-class: batch``; vLLM's own priority field is the client's to set)."""
    return route_v3.Route(name="batch", match=match,
                          route=_action(inputs, [], names=inputs.batch, mirror=False),
                          request_headers_to_add=[_set_header(CLASS_HEADER, "batch")])


def _routes(inputs: RouteInputs) -> list[route_v3.Route]:
    if inputs.unavailable is not None:
        return _unavailable(inputs, inputs.unavailable)
    if inputs.name:  # the batch listener: everything to the batch clusters
        only = _batch_route(inputs, route_v3.RouteMatch(prefix="/"))
        return [_orca(only) if inputs.orca else only]
    policies = hash_policies(inputs.hash_key)
    routes: list[route_v3.Route] = []
    if inputs.batch_match is not None:
        header, value = inputs.batch_match
        routes.append(_batch_route(inputs, route_v3.RouteMatch(
            prefix="/", headers=[_header(header, value)])))
    routes += [
        route_v3.Route(
            name=f"cohort-{i}",
            match=route_v3.RouteMatch(prefix="/", headers=[_header(header, value)]),
            route=_action(inputs, policies, cluster),
        )
        for i, (header, value, cluster) in enumerate(inputs.cohorts)
    ]
    if inputs.affinity and inputs.hash_key is not None and inputs.hash_key.header is not None:
        # Hybrid: keyed requests stick to their pod (bounded load), the rest go by
        # least request; one cluster cannot do both, so two clusters, one route each.
        routes.append(route_v3.Route(
            name="affinity",
            match=route_v3.RouteMatch(prefix="/", headers=[_header(inputs.hash_key.header)]),
            route=_action(inputs, policies, names=inputs.affinity)))
        policies = []
    routes.append(route_v3.Route(name="versions", match=route_v3.RouteMatch(prefix="/"),
                                 route=_action(inputs, policies)))
    return [_orca(r) for r in routes] if inputs.orca else routes


def build_route_configuration(inputs: RouteInputs) -> route_v3.RouteConfiguration:
    return route_v3.RouteConfiguration(
        name=inputs.name or route_config_name(inputs.service),
        virtual_hosts=[
            route_v3.VirtualHost(name=inputs.service, domains=["*"], routes=_routes(inputs))
        ],
    )

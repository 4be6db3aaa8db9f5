"""The desired-state model: what users declare, validated and frozen.

Everything here is immutable and hashable so that pure builders downstream
(``xds.resources``) can memoize on it: a cluster whose inputs did not change is
neither rebuilt nor re-serialized. Durations are integer milliseconds so that
equality is exact.

``controlplane.config`` turns YAML into these objects (and is the only place
that validates); nothing else constructs them from untrusted input.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field

API_VERSION = "sluice.dev/v1alpha1"
MODEL_SERVICE_KIND = "ModelService"


class LbPolicy(enum.Enum):
    ROUND_ROBIN = "round_robin"
    LEAST_REQUEST = "least_request"
    RANDOM = "random"
    RING_HASH = "ring_hash"
    MAGLEV = "maglev"
    # Least request over endpoint weights the control plane derives from measured
    # response times and load (``controlplane.routing``).
    RESPONSE_TIME = "response_time"
    # Envoy's client_side_weighted_round_robin, fed by ORCA reports from the pods.
    LOAD_REPORT = "load_report"
    # Requests with the hash key: Maglev under bounded load (their own cluster,
    # ``<service>/<version>/affinity``); requests without it: least request.
    HYBRID = "hybrid"

    @property
    def is_hashing(self) -> bool:
        """The version's own cluster hashes requests (ring hash or Maglev)."""
        return self in (LbPolicy.RING_HASH, LbPolicy.MAGLEV)

    @property
    def takes_hash_key(self) -> bool:
        return self.is_hashing or self is LbPolicy.HYBRID

    @property
    def is_least_request(self) -> bool:
        """Envoy runs LEAST_REQUEST on the version's own cluster."""
        return self in (LbPolicy.LEAST_REQUEST, LbPolicy.RESPONSE_TIME, LbPolicy.HYBRID)


class EndpointHealth(enum.Enum):
    """Health status the control plane asserts for an endpoint (EDS ``health_status``)."""

    UNKNOWN = "unknown"  # let Envoy's active health checks decide
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"  # terminating / being updated: no new requests


@dataclass(frozen=True)
class CookieHashKey:
    name: str
    ttl_ms: int = 0  # 0: a session cookie Envoy does not generate
    path: str = "/"


@dataclass(frozen=True)
class HashKey:
    """What a request is hashed on. Exactly one of the three is set."""

    header: str | None = None
    cookie: CookieHashKey | None = None
    source_ip: bool = False


@dataclass(frozen=True)
class Capacity:
    """Endpoint weights from a label (GPU type): ``{h100: 2, a100: 1}`` on ``labels.gpu``."""

    table: tuple[tuple[str, float], ...]  # sorted (label value, relative capacity > 0)
    label: str = "gpu"

    def factor(self, endpoint: Endpoint) -> float | None:
        """The endpoint's capacity, or None when its label is missing or not in the table."""
        return self.factor_of(dict(endpoint.labels).get(self.label))

    def factor_of(self, value: str | None) -> float | None:
        """The capacity of label ``value`` (whatever its case: H100 is h100), else None."""
        return self._folded.get(value.casefold()) if value is not None else None

    @functools.cached_property
    def _folded(self) -> dict[str, float]:
        return {k.casefold(): v for k, v in self.table}


@dataclass(frozen=True)
class ResponseTimeTuning:
    """How the control plane turns measured response times into endpoint weights."""

    interval_ms: int = 2_000  # between weight updates (and load reports)
    hysteresis: float = 0.15  # ignore target changes below this fraction
    max_step: float = 1.5  # a weight moves at most by this factor per update
    floor: float = 0.05  # no endpoint below this fraction of the mean weight
    stale_after_ms: int = 10_000  # no fresh signal for this long: keep the last weight
    prometheus: str | None = None  # pods' vLLM gauges refine the weights when set


@dataclass(frozen=True)
class LoadReportTuning:
    """Envoy's client_side_weighted_round_robin settings (ORCA weights in the proxy)."""

    blackout_period_ms: int = 1_000
    weight_update_period_ms: int = 1_000
    weight_expiration_period_ms: int = 180_000
    error_utilization_penalty: float = 1.0


@dataclass(frozen=True)
class LoadBalancing:
    policy: LbPolicy = LbPolicy.LEAST_REQUEST
    hash_key: HashKey | None = None
    # Bounded load as a factor over the mean (1.25 = a host takes at most 125 %
    # of the mean in-flight requests); Envoy's hash_balance_factor = 100 × this.
    bounded_load: float | None = None
    # LEAST_REQUEST: weight / (active + 1) ^ bias (Envoy's default 1.0).
    active_request_bias: float = 1.0
    capacity: Capacity | None = None
    response_time: ResponseTimeTuning | None = None  # policy response_time only
    load_report: LoadReportTuning | None = None  # policy load_report only


@dataclass(frozen=True)
class HealthCheck:
    # A pod that refuses connections takes no traffic within about 6 s (three failed
    # checks 2 s apart; a slow answer adds the timeout to each); three, not two, so a
    # busy pod or machine missing one answer is not taken out.
    path: str = "/health"
    interval_ms: int = 2_000
    timeout_ms: int = 2_000
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3


@dataclass(frozen=True)
class OutlierDetection:
    consecutive_5xx: int = 5
    interval_ms: int = 10_000
    base_ejection_time_ms: int = 30_000
    max_ejection_percent: int = 50


@dataclass(frozen=True)
class SlowStart:
    window_ms: int
    aggression: float = 1.0
    min_weight_percent: float = 10.0


@dataclass(frozen=True)
class CircuitBreakers:
    max_connections: int = 10_000
    max_pending_requests: int = 10_000
    max_requests: int = 10_000
    max_retries: int = 3


@dataclass(frozen=True)
class Timeouts:
    # LLM generations stream for minutes: Envoy's 15 s route default would cut them.
    request_ms: int = 600_000
    idle_ms: int = 300_000


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    weight: int = 1
    labels: tuple[tuple[str, str], ...] = ()  # sorted (key, value) pairs
    health: EndpointHealth = EndpointHealth.UNKNOWN
    priority: int = 0  # 0 first; higher priorities take traffic when lower ones fail

    @property
    def key(self) -> str:
        """``address:port`` (IPv6 in brackets): how signals and routing weights name it."""
        return f"[{self.address}]:{self.port}" if ":" in self.address else \
            f"{self.address}:{self.port}"


@dataclass(frozen=True)
class Version:
    name: str
    # Percent of the service's traffic, 0..100; versions sum to 100. Declared
    # weights are whole percents; an experiment may set fractional ones.
    weight: float
    endpoints: tuple[Endpoint, ...] = ()
    # Endpoints discovered in Kubernetes instead of listed (``endpoints: {kubernetes: ...}``);
    # the store fills ``endpoints`` from what the discovery found.
    discovery: KubeEndpoints | None = None


@dataclass(frozen=True)
class KubeEndpoints:
    """A version's endpoints from Kubernetes: a Service's EndpointSlices, or pods by label."""

    port: int | str  # a port number, or the name of a port of the Service / the pods
    namespace: str | None = None  # None: the ModelService's own (or Sluice's) namespace
    service: str | None = None  # EndpointSlices labelled kubernetes.io/service-name=service
    selector: tuple[tuple[str, str], ...] = ()  # or pods with all these labels (sorted)

    def describe(self, namespace: str) -> str:
        if self.service is not None:
            return f"EndpointSlices of Service {namespace}/{self.service}, port {self.port}"
        labels = ",".join(f"{k}={v}" for k, v in self.selector)
        return f"pods {labels} in {namespace}, port {self.port}"


@dataclass(frozen=True)
class GatewayApiRouter:
    """Weights go to an HTTPRoute's backendRefs (one backend Service per version)."""

    http_route: str
    backends: tuple[tuple[str, str], ...]  # version -> Service name
    namespace: str | None = None
    port: int | None = None  # port of backendRefs Sluice adds


@dataclass(frozen=True)
class IstioRouter:
    """Weights go to a VirtualService's routes; a DestinationRule holds one subset per version."""

    virtual_service: str
    host: str
    destination_rule: str | None = None
    namespace: str | None = None
    subsets: tuple[tuple[str, str], ...] = ()  # version -> subset name (default: the version)
    subset_label: str = "version"  # the pod label a subset selects on

    def subset(self, version: str) -> str:
        return dict(self.subsets).get(version, version)


@dataclass(frozen=True)
class RouterSpec:
    """Which traffic layer an experiment moves: Sluice's own xDS (None), or one of these."""

    gateway_api: GatewayApiRouter | None = None
    istio: IstioRouter | None = None

    @property
    def kind(self) -> str:
        return "gatewayAPI" if self.gateway_api else "istio" if self.istio else "xds"


@dataclass(frozen=True)
class Cohort:
    """Requests whose header has this exact value go to ``version`` (an A/B cohort)."""

    header: str
    value: str
    version: str


@dataclass(frozen=True)
class Mirror:
    """Copies of ``percent`` of the requests go to ``version``; its answers are dropped."""

    version: str
    percent: float


@dataclass(frozen=True)
class Unavailable:
    """Every request is answered 503 with ``Retry-After`` (a strict synchronized switch)."""

    retry_after_s: int = 1


@dataclass(frozen=True)
class TrafficShape:
    """Routing beyond the weighted split, set by a running experiment (empty otherwise)."""

    cohorts: tuple[Cohort, ...] = ()
    mirrors: tuple[Mirror, ...] = ()
    unavailable: Unavailable | None = None


@dataclass(frozen=True)
class ListenerSpec:
    address: str = "0.0.0.0"
    port: int = 10000


@dataclass(frozen=True)
class Failover:
    """Priority failover (endpoint ``priority``) and panic mode."""

    overprovisioning_factor: int = 140  # Envoy's default: 1.4 × a priority's healthy share
    panic_threshold: float = 50.0  # percent healthy below which Envoy ignores health


RETRY_CONDITIONS = ("connect-failure", "refused-stream", "reset", "reset-before-request")


@dataclass(frozen=True)
class Retries:
    """Retries before any response byte reached the client, bounded by a budget."""

    on: tuple[str, ...] = ("connect-failure", "refused-stream", "reset")
    attempts: int = 2  # retries per request (after the first try)
    budget_percent: float = 20.0  # retries in flight at most this % of requests in flight
    min_concurrency: int = 3  # ... but always this many


@dataclass(frozen=True)
class Offline:
    """The batch class: same pods, own clusters, a concurrency cap sized from spare capacity."""

    header: str | None = "x-priority"  # requests with header == value are batch
    value: str = "batch"
    listener: ListenerSpec | None = None  # or a listener of their own
    concurrency_per_pod: int = 8  # a capacity-1 pod holds this many requests comfortably
    max_concurrency: int | None = None  # upper bound on the whole cap
    retry_after_s: int = 5
    interval_ms: int = 2_000


@dataclass(frozen=True)
class RoutingState:
    """Set by the routing controller (never by users): endpoint weights and the batch cap.

    ``weights`` replace the pushed weight of the endpoint with that ``key`` in
    every version (routing owns per-endpoint weights; an experiment owns version
    weights and membership). ``batch_caps`` is the batch cap per proxy of each
    version's batch cluster, ``batch_max_requests`` their sum (the cap of every
    version's batch cluster when ``batch_caps`` is empty).
    """

    weights: tuple[tuple[str, int], ...] = ()  # sorted (endpoint key, weight >= 1)
    batch_max_requests: int | None = None
    batch_caps: tuple[tuple[str, int], ...] = ()  # sorted (version name, cap per proxy)

    def batch_cap(self, version: str) -> int:
        """The cap of ``version``'s batch cluster (0 until the controller has sized it)."""
        if self.batch_caps:
            return dict(self.batch_caps).get(version, 0)
        return self.batch_max_requests or 0


@dataclass(frozen=True)
class ModelService:
    name: str
    listener: ListenerSpec
    versions: tuple[Version, ...]
    load_balancing: LoadBalancing = field(default_factory=LoadBalancing)
    health_check: HealthCheck | None = None
    outlier_detection: OutlierDetection | None = None
    slow_start: SlowStart | None = None
    circuit_breakers: CircuitBreakers = field(default_factory=CircuitBreakers)
    timeouts: Timeouts = field(default_factory=Timeouts)
    failover: Failover | None = None
    retries: Retries | None = None
    offline: Offline | None = None
    traffic: TrafficShape = field(default_factory=TrafficShape)
    routing: RoutingState = field(default_factory=RoutingState)
    router: RouterSpec | None = None  # None: xDS (Sluice's own ADS)

    def version(self, name: str) -> Version:
        for v in self.versions:
            if v.name == name:
                return v
        raise KeyError(name)


def cluster_name(service: str, version: str) -> str:
    """Envoy cluster for one model version (a stable contract: DESIGN §3)."""
    return f"{service}/{version}"


def affinity_cluster_name(service: str, version: str) -> str:
    """Hybrid policy: the version's hash cluster for requests that carry the key."""
    return f"{service}/{version}/affinity"


def batch_cluster_name(service: str, version: str) -> str:
    """Offline class: the version's cluster for batch requests (its own concurrency cap)."""
    return f"{service}/{version}/batch"


def listener_name(service: str) -> str:
    return f"{service}/listener"


def route_config_name(service: str) -> str:
    return f"{service}/routes"


def batch_listener_name(service: str) -> str:
    return f"{service}/batch-listener"


def batch_route_config_name(service: str) -> str:
    return f"{service}/batch-routes"


HYBRID_HEADER = "x-session-id"  # hybrid's key header unless hashKey names another


def hybrid_header(service: ModelService) -> str | None:
    """The key header of a hybrid service (its keyed requests go to the affinity clusters)."""
    lb = service.load_balancing
    if lb.policy is LbPolicy.HYBRID and lb.hash_key is not None:
        return lb.hash_key.header
    return None


# Pushed weights are scaled by this when capacities or measured weights are in play,
# so fractional capacities (1.5) and small moves survive Envoy's integer weights.
WEIGHT_SCALE = 100


def scaled_weights(service: ModelService) -> bool:
    lb = service.load_balancing
    return lb.capacity is not None or lb.policy is LbPolicy.RESPONSE_TIME


def prior_weight(service: ModelService, endpoint: Endpoint) -> int:
    """The weight an endpoint gets before (or without) measurements: declared × capacity."""
    if not scaled_weights(service):
        return endpoint.weight
    capacity = service.load_balancing.capacity
    factor = capacity.factor(endpoint) if capacity is not None else None
    return max(1, round(endpoint.weight * (1.0 if factor is None else factor) * WEIGHT_SCALE))


def pushed_weights(service: ModelService, endpoints: tuple[Endpoint, ...]) -> tuple[int, ...]:
    """What EDS carries for ``endpoints``: the routing controller's weight, else the prior."""
    dynamic = dict(service.routing.weights)
    return tuple(dynamic.get(e.key) or prior_weight(service, e) for e in endpoints)


@dataclass(frozen=True)
class DesiredState:
    """All services, sorted by name; what the snapshot builder consumes."""

    services: tuple[ModelService, ...] = ()

    def service(self, name: str) -> ModelService:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)

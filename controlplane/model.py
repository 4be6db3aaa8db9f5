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
from dataclasses import dataclass, field

API_VERSION = "sluice.dev/v1alpha1"
MODEL_SERVICE_KIND = "ModelService"


class LbPolicy(enum.Enum):
    ROUND_ROBIN = "round_robin"
    LEAST_REQUEST = "least_request"
    RANDOM = "random"
    RING_HASH = "ring_hash"
    MAGLEV = "maglev"

    @property
    def is_hashing(self) -> bool:
        return self in (LbPolicy.RING_HASH, LbPolicy.MAGLEV)


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
class LoadBalancing:
    policy: LbPolicy = LbPolicy.LEAST_REQUEST
    hash_key: HashKey | None = None
    # Bounded load as a factor over the mean (1.25 = a host takes at most 125 %
    # of the mean in-flight requests); Envoy's hash_balance_factor = 100 × this.
    bounded_load: float | None = None


@dataclass(frozen=True)
class HealthCheck:
    path: str = "/health"
    interval_ms: int = 5_000
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


@dataclass(frozen=True)
class Version:
    name: str
    # Percent of the service's traffic, 0..100; versions sum to 100. Declared
    # weights are whole percents; an experiment may set fractional ones.
    weight: float
    endpoints: tuple[Endpoint, ...] = ()


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
    traffic: TrafficShape = field(default_factory=TrafficShape)

    def version(self, name: str) -> Version:
        for v in self.versions:
            if v.name == name:
                return v
        raise KeyError(name)


def cluster_name(service: str, version: str) -> str:
    """Envoy cluster for one model version (a stable contract: DESIGN §3)."""
    return f"{service}/{version}"


def listener_name(service: str) -> str:
    return f"{service}/listener"


def route_config_name(service: str) -> str:
    return f"{service}/routes"


@dataclass(frozen=True)
class DesiredState:
    """All services, sorted by name; what the snapshot builder consumes."""

    services: tuple[ModelService, ...] = ()

    def service(self, name: str) -> ModelService:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)

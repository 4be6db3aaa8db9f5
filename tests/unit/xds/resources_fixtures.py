"""Shared builders of model objects for the xds.resources tests."""

from __future__ import annotations

from typing import Any

import betterproto2

from controlplane.model import (
    Endpoint,
    EndpointHealth,
    HashKey,
    HealthCheck,
    LbPolicy,
    ListenerSpec,
    LoadBalancing,
    ModelService,
    OutlierDetection,
    SlowStart,
    Version,
)

_DEFAULT_HEALTH_CHECK = HealthCheck()
_DEFAULT_OUTLIER_DETECTION = OutlierDetection()


def roundtrip(message: betterproto2.Message) -> Any:
    """Serialize and parse back, so assertions see what goes on the wire.

    Typed ``Any``: tests walk optional sub-messages freely and let a missing
    one fail the test at run time.
    """
    return type(message).parse(bytes(message))


def pods(n: int, *, port: int = 8000, subnet: int = 0) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(f"10.{subnet}.{i // 250}.{i % 250 + 1}", port) for i in range(n))


def service(
    *,
    policy: LbPolicy = LbPolicy.LEAST_REQUEST,
    hash_key: HashKey | None = None,
    bounded_load: float | None = None,
    weights: tuple[int, ...] = (20, 80),
    pool: int = 3,
    health_check: HealthCheck | None = _DEFAULT_HEALTH_CHECK,
    outlier_detection: OutlierDetection | None = _DEFAULT_OUTLIER_DETECTION,
    slow_start: SlowStart | None = None,
) -> ModelService:
    versions = tuple(
        Version(f"v{len(weights) - i}", w, pods(pool, subnet=i)) for i, w in enumerate(weights)
    )
    return ModelService(
        name="chat",
        listener=ListenerSpec("127.0.0.1", 10000),
        versions=versions,
        load_balancing=LoadBalancing(policy, hash_key, bounded_load),
        health_check=health_check,
        outlier_detection=outlier_detection,
        slow_start=slow_start,
    )


def labelled_endpoint(health: EndpointHealth = EndpointHealth.UNKNOWN) -> Endpoint:
    return Endpoint(
        "10.1.2.3", 8000, weight=2, labels=(("gpu", "h100"), ("zone", "a")), health=health
    )


def type_of(value: object) -> type:
    """``type(value)`` without mypy narrowing, so loosely typed wire checks stay loose."""
    return type(value)

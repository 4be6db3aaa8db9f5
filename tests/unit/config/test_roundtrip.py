"""Property: a valid service written with ``service_to_dict`` loads back equal."""

from __future__ import annotations

import jsonschema  # type: ignore[import-untyped]
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.config import load_text, modelservice_json_schema, service_to_dict
from controlplane.model import (
    CircuitBreakers,
    CookieHashKey,
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
    Timeouts,
    Version,
)

VALIDATOR = jsonschema.Draft202012Validator(modelservice_json_schema())

names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?", fullmatch=True)
ips = st.ip_addresses().map(str)
dns_names = st.from_regex(r"([a-z0-9]([-a-z0-9]{0,5}[a-z0-9])?\.){0,3}[a-z][a-z0-9]{0,5}",
                          fullmatch=True)
ports = st.integers(1, 65535)
positive_ms = st.integers(1, 999_999_999)
any_ms = st.integers(0, 999_999_999)
label_keys = st.from_regex(
    r"([a-z0-9]{1,5}\.[a-z]{2,3}/)?[A-Za-z0-9]([-_.A-Za-z0-9]{0,5}[A-Za-z0-9])?", fullmatch=True
)
label_values = st.from_regex(r"(([A-Za-z0-9][-_.A-Za-z0-9]{0,5})?[A-Za-z0-9])?", fullmatch=True)
labels = st.dictionaries(label_keys, label_values, max_size=3).map(
    lambda d: tuple(sorted(d.items()))
)
paths = st.from_regex(r"/[a-z0-9/_.-]{0,12}", fullmatch=True)

endpoints = st.builds(
    Endpoint,
    address=ips,
    port=ports,
    weight=st.integers(1, 1_000_000),
    labels=labels,
    health=st.sampled_from(EndpointHealth),
)


@st.composite
def versions(draw: st.DrawFn) -> tuple[Version, ...]:
    vnames = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=len(vnames) - 1,
                                max_size=len(vnames) - 1)))
    bounds = [0, *cuts, 100]
    return tuple(
        Version(
            name=name,
            weight=bounds[i + 1] - bounds[i],
            endpoints=tuple(draw(st.lists(
                endpoints, min_size=1, max_size=3, unique_by=lambda e: (e.address, e.port)
            ))),
        )
        for i, name in enumerate(vnames)
    )


hash_keys = st.one_of(
    st.builds(HashKey, header=st.from_regex(r"x-[a-z0-9-]{1,12}", fullmatch=True)),
    st.builds(HashKey, cookie=st.builds(CookieHashKey, name=names, ttl_ms=any_ms, path=paths)),
    st.just(HashKey(source_ip=True)),
)


@st.composite
def services(draw: st.DrawFn) -> ModelService:
    policy = draw(st.sampled_from(LbPolicy))
    if policy.is_hashing:
        lb = LoadBalancing(
            policy,
            draw(hash_keys),
            draw(st.none() | st.floats(1.0, 1000.0, exclude_min=True)),
        )
    else:
        lb = LoadBalancing(policy)
    slow_start = None
    if policy in (LbPolicy.ROUND_ROBIN, LbPolicy.LEAST_REQUEST):
        slow_start = draw(st.none() | st.builds(
            SlowStart,
            window_ms=positive_ms,
            aggression=st.floats(0.0, 100.0, exclude_min=True),
            min_weight_percent=st.floats(0.0, 100.0),
        ))
    return ModelService(
        name=draw(names),
        listener=ListenerSpec(draw(ips), draw(ports)),
        versions=draw(versions()),
        load_balancing=lb,
        health_check=draw(st.none() | st.builds(
            HealthCheck, path=paths, interval_ms=positive_ms, timeout_ms=positive_ms,
            healthy_threshold=st.integers(1, 1000), unhealthy_threshold=st.integers(1, 1000),
        )),
        outlier_detection=draw(st.none() | st.builds(
            OutlierDetection, consecutive_5xx=st.integers(1, 1000), interval_ms=positive_ms,
            base_ejection_time_ms=positive_ms, max_ejection_percent=st.integers(0, 100),
        )),
        slow_start=slow_start,
        circuit_breakers=draw(st.builds(CircuitBreakers, *[st.integers(0, 2**32 - 1)] * 4)),
        timeouts=draw(st.builds(Timeouts, request_ms=any_ms, idle_ms=any_ms)),
    )


@settings(max_examples=100, deadline=None)
@given(services())
def test_service_round_trips_through_yaml(service: ModelService) -> None:
    written = service_to_dict(service)
    result = load_text(yaml.safe_dump(written, sort_keys=False))
    assert result.errors == ()
    assert result.state is not None
    assert result.state.services == (service,)
    assert VALIDATOR.is_valid(written)

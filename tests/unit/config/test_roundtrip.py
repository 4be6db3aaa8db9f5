"""Property: a valid service written with ``service_to_dict`` loads back equal."""

from __future__ import annotations

import dataclasses

import jsonschema  # type: ignore[import-untyped]
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.config import load_text, modelservice_json_schema, service_to_dict
from controlplane.model import (
    RETRY_CONDITIONS,
    Capacity,
    CircuitBreakers,
    CookieHashKey,
    Endpoint,
    EndpointHealth,
    Failover,
    HashKey,
    HealthCheck,
    LbPolicy,
    ListenerSpec,
    LoadBalancing,
    LoadReportTuning,
    ModelService,
    Offline,
    OutlierDetection,
    ResponseTimeTuning,
    Retries,
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
            endpoints=tuple(
                dataclasses.replace(e, priority=j % 2)  # priorities 0, 1: no gap
                for j, e in enumerate(draw(st.lists(
                    endpoints, min_size=1, max_size=3, unique_by=lambda e: (e.address, e.port)
                )))),
        )
        for i, name in enumerate(vnames)
    )


hash_keys = st.one_of(
    st.builds(HashKey, header=st.from_regex(r"x-[a-z0-9-]{1,12}", fullmatch=True)),
    st.builds(HashKey, cookie=st.builds(CookieHashKey, name=names, ttl_ms=any_ms, path=paths)),
    st.just(HashKey(source_ip=True)),
)


durations = st.integers(1, 10**6)
capacities = st.builds(
    Capacity,
    table=st.dictionaries(label_values.filter(bool), st.floats(0.01, 1000.0), min_size=1,
                          max_size=3).map(lambda d: tuple(sorted(d.items()))),
    label=st.sampled_from(["gpu", "accel"]),
)


@st.composite
def load_balancing(draw: st.DrawFn) -> LoadBalancing:
    policy = draw(st.sampled_from(LbPolicy))
    hash_key = bounded = None
    if policy is LbPolicy.HYBRID:
        hash_key = draw(st.builds(HashKey, header=st.from_regex(r"x-[a-z0-9-]{1,12}",
                                                               fullmatch=True)))
        bounded = draw(st.floats(1.0, 1000.0, exclude_min=True))
    elif policy.is_hashing:
        hash_key = draw(hash_keys)
        bounded = draw(st.none() | st.floats(1.0, 1000.0, exclude_min=True))
    return LoadBalancing(
        policy, hash_key, bounded,
        active_request_bias=draw(st.floats(0.0, 10.0)) if policy.is_least_request else 1.0,
        capacity=draw(st.none() | capacities),
        response_time=draw(st.none() | st.builds(
            ResponseTimeTuning, interval_ms=durations, hysteresis=st.floats(0.0, 0.9),
            max_step=st.floats(1.0, 10.0, exclude_min=True),
            floor=st.floats(0.0, 1.0, exclude_min=True), stale_after_ms=durations))
        if policy is LbPolicy.RESPONSE_TIME else None,
        load_report=draw(st.none() | st.builds(
            LoadReportTuning, blackout_period_ms=st.integers(0, 10**6),
            weight_update_period_ms=durations, weight_expiration_period_ms=durations,
            error_utilization_penalty=st.floats(0.0, 100.0)))
        if policy is LbPolicy.LOAD_REPORT else None,
    )


offline = st.builds(
    Offline,
    header=st.just("x-priority"),
    value=st.sampled_from(["batch", "low"]),
    listener=st.none(),
    concurrency_per_pod=st.integers(1, 10_000),
    max_concurrency=st.none() | st.integers(0, 1_000_000),
    retry_after_s=st.integers(1, 3600),
    interval_ms=durations,
)


@st.composite
def services(draw: st.DrawFn) -> ModelService:
    lb = draw(load_balancing())
    policy = lb.policy
    slow_start = None
    if policy in (LbPolicy.ROUND_ROBIN, LbPolicy.LEAST_REQUEST, LbPolicy.RESPONSE_TIME,
                  LbPolicy.HYBRID):
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
        failover=draw(st.none() | st.builds(Failover, st.integers(100, 100_000),
                                            st.floats(0.0, 100.0))),
        retries=draw(st.none() | st.builds(
            Retries, on=st.lists(st.sampled_from(RETRY_CONDITIONS), min_size=1, max_size=4,
                                 unique=True).map(tuple),
            attempts=st.integers(1, 10), budget_percent=st.floats(0.0, 100.0, exclude_min=True),
            min_concurrency=st.integers(1, 10_000))),
        offline=draw(st.none() | offline),
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

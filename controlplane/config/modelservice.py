"""The ``ModelService`` kind: cross-field rules, building the model, and back to YAML shape."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TypeVar

from controlplane.config import modelservice_kube as kube
from controlplane.config import modelservice_routing as routing
from controlplane.config.errors import Errors
from controlplane.config.fields import Value
from controlplane.config.fields import opt as _opt
from controlplane.config.kinds import Accepted, Document, KindDef
from controlplane.config.shapes import MODEL_SERVICE_SPEC
from controlplane.model import (
    API_VERSION,
    HYBRID_HEADER,
    MODEL_SERVICE_KIND,
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

T = TypeVar("T")


def _host_key(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address.lower().removesuffix(".")


# --- rules within one document ------------------------------------------------------


def check_service(doc: Document, errors: Errors) -> None:
    spec = doc.spec
    if spec is None:
        return
    versions = spec.get("versions")
    if versions is not None:
        _check_versions(doc, versions, errors)
    _check_load_balancing(doc, spec, errors)
    kube.check(doc, spec, errors)
    routing.check_retries(doc, spec, errors)
    routing.check_offline(doc, spec, errors)
    routing.check_weight_totals(doc, spec, errors)


def _check_versions(doc: Document, versions: Value, errors: Errors) -> None:
    first: dict[str, Value] = {}
    weights: list[tuple[str, int]] = []
    for i, version in enumerate(versions.items()):
        name = version.get("name")
        if name is not None:
            if name.text() in first:
                line = first[name.text()].mark.line
                doc.error(errors, name.mark, name.path,
                          f"duplicate version name '{name.text()}' (first at line {line})")
            else:
                first[name.text()] = name
        weight = version.get("weight")
        if weight is not None and len(weights) == i:
            weights.append((name.text() if name is not None else f"[{i}]", weight.integer()))
        endpoints = kube.static_endpoints(version)
        if endpoints is not None:
            _check_endpoints(doc, endpoints, errors)
            routing.check_priorities(doc, version, errors)
    total = sum(w for _, w in weights)
    if len(weights) == len(versions.items()) and total != 100:
        split = ", ".join(f"{n}: {w}" for n, w in weights)
        doc.error(errors, versions, versions.path,
                  f"version weights must add up to 100, got {total} ({split})")


def _check_endpoints(doc: Document, endpoints: Value, errors: Errors) -> None:
    seen: dict[tuple[str, int], Value] = {}
    for endpoint in endpoints.items():
        address, port = endpoint.get("address"), endpoint.get("port")
        if address is None or port is None:
            continue
        key = (_host_key(address.text()), port.integer())
        if key in seen:
            other = seen[key]
            doc.error(errors, endpoint, endpoint.path,
                      f"duplicate endpoint {address.text()}:{port.integer()} "
                      f"(same as {other.path.rsplit('.', 1)[-1]} at line {other.mark.line})")
        else:
            seen[key] = endpoint


def _policy(spec: Value) -> tuple[LbPolicy, bool] | None:
    """The policy and whether it was written; None when it was reported as invalid."""
    if not spec.has("loadBalancing"):
        return LbPolicy.LEAST_REQUEST, False
    lb = spec.get("loadBalancing")
    if lb is None:
        return None
    if not lb.has("policy"):
        return LbPolicy.LEAST_REQUEST, False
    policy = lb.get("policy")
    return (LbPolicy(policy.text()), True) if policy is not None else None


def _check_load_balancing(doc: Document, spec: Value, errors: Errors) -> None:
    found = _policy(spec)
    if found is None:
        return
    policy, written = found
    shown = policy.value if written else f"{policy.value} by default"
    routing.check_load_balancing(doc, spec, spec.get("loadBalancing"), policy, shown, errors)


# --- rules against other documents --------------------------------------------------


def _binds_together(a: ListenerSpec, b: ListenerSpec) -> bool:
    if a.port != b.port:
        return False
    ia, ib = ipaddress.ip_address(a.address), ipaddress.ip_address(b.address)
    return ia == ib or ia.is_unspecified or ib.is_unspecified


def check_service_against(doc: Document, value: object, accepted: Accepted,
                          errors: Errors) -> None:
    assert isinstance(value, ModelService) and doc.spec is not None
    listener = doc.spec.fields()["listener"]
    offline = doc.spec.get("offline")
    own = offline.get("listener") if offline is not None else None
    mine = [(value.listener, listener)]
    if value.offline is not None and value.offline.listener is not None and own is not None:
        mine.append((value.offline.listener, own))
    for other in accepted.of_kind(MODEL_SERVICE_KIND):
        theirs = other.value
        assert isinstance(theirs, ModelService)
        taken = [theirs.listener]
        if theirs.offline is not None and theirs.offline.listener is not None:
            taken.append(theirs.offline.listener)
        for spec, at in mine:
            for used in taken:
                if _binds_together(spec, used):
                    doc.error(errors, at, at.path,
                              f"listener {spec.address}:{spec.port} conflicts with service "
                              f"'{theirs.name}' on {used.address}:{used.port} ({other.where})")
                    return


# --- building -------------------------------------------------------------------------


def _ms(v: Value) -> int:
    return v.integer()


def _section(spec: Value, name: str, build: Callable[[Value], T]) -> T | None:
    child = spec.get(name)
    return build(child) if child is not None else None


def build_service(doc: Document) -> ModelService:
    spec = doc.spec
    assert spec is not None and doc.name is not None
    listener = spec.fields()["listener"]
    return ModelService(
        name=doc.name,
        listener=ListenerSpec(
            address=listener.fields()["address"].text(),
            port=listener.fields()["port"].integer(),
        ),
        versions=tuple(_version(v) for v in spec.fields()["versions"].items()),
        load_balancing=_section(spec, "loadBalancing", _load_balancing) or LoadBalancing(),
        health_check=_section(spec, "healthCheck", _health_check),
        outlier_detection=_section(spec, "outlierDetection", _outlier_detection),
        slow_start=_section(spec, "slowStart", _slow_start),
        circuit_breakers=_section(spec, "circuitBreakers", _circuit_breakers)
        or CircuitBreakers(),
        timeouts=_section(spec, "timeouts", _timeouts) or Timeouts(),
        failover=_section(spec, "failover", routing.failover),
        retries=_section(spec, "retries", routing.retries),
        offline=_section(spec, "offline", routing.offline),
        router=_section(spec, "router", kube.router),
    )


def _version(v: Value) -> Version:
    f = v.fields()
    listed = kube.static_endpoints(v)
    return Version(
        name=f["name"].text(),
        weight=f["weight"].integer(),
        endpoints=tuple(_endpoint(e) for e in listed.items()) if listed is not None else (),
        discovery=kube.discovery(v),
    )


def _endpoint(v: Value) -> Endpoint:
    d = Endpoint("", 0)
    return Endpoint(
        address=v.fields()["address"].text(),
        port=v.fields()["port"].integer(),
        weight=_opt(v, "weight", Value.integer, d.weight),
        labels=_opt(v, "labels", _labels, d.labels),
        health=_opt(v, "health", lambda h: EndpointHealth(h.text()), d.health),
        priority=_opt(v, "priority", Value.integer, d.priority),
    )


def _labels(v: Value) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, x.text()) for k, x in v.fields().items()))


def _load_balancing(v: Value) -> LoadBalancing:
    d = LoadBalancing()
    policy = _opt(v, "policy", lambda p: LbPolicy(p.text()), d.policy)
    # Hybrid caps the keyed requests' pods at 125 % of the mean unless told otherwise.
    bounded = 1.25 if policy is LbPolicy.HYBRID else d.bounded_load
    return LoadBalancing(
        policy=policy,
        hash_key=_section(v, "hashKey", _hash_key) or (
            HashKey(header=HYBRID_HEADER) if policy is LbPolicy.HYBRID else None),
        bounded_load=_opt(v, "boundedLoad", Value.number, bounded),
        active_request_bias=_opt(v, "activeRequestBias", Value.number, d.active_request_bias),
        capacity=routing.capacity(v),
        response_time=_section(v, "responseTime", routing.response_time),
        load_report=_section(v, "loadReport", routing.load_report),
    )


def _hash_key(v: Value) -> HashKey:
    d = CookieHashKey("")
    return HashKey(
        header=_opt(v, "header", Value.text, None),
        cookie=_section(v, "cookie", lambda c: CookieHashKey(
            name=c.fields()["name"].text(),
            ttl_ms=_opt(c, "ttl", _ms, d.ttl_ms),
            path=_opt(c, "path", Value.text, d.path),
        )),
        source_ip=_opt(v, "sourceIp", Value.flag, False),
    )


def _health_check(v: Value) -> HealthCheck:
    d = HealthCheck()
    return HealthCheck(
        path=_opt(v, "path", Value.text, d.path),
        interval_ms=_opt(v, "interval", _ms, d.interval_ms),
        timeout_ms=_opt(v, "timeout", _ms, d.timeout_ms),
        healthy_threshold=_opt(v, "healthyThreshold", Value.integer, d.healthy_threshold),
        unhealthy_threshold=_opt(v, "unhealthyThreshold", Value.integer, d.unhealthy_threshold),
    )


def _outlier_detection(v: Value) -> OutlierDetection:
    d = OutlierDetection()
    return OutlierDetection(
        consecutive_5xx=_opt(v, "consecutive5xx", Value.integer, d.consecutive_5xx),
        interval_ms=_opt(v, "interval", _ms, d.interval_ms),
        base_ejection_time_ms=_opt(v, "baseEjectionTime", _ms, d.base_ejection_time_ms),
        max_ejection_percent=_opt(v, "maxEjectionPercent", Value.integer,
                                  d.max_ejection_percent),
    )


def _slow_start(v: Value) -> SlowStart:
    d = SlowStart(window_ms=0)
    return SlowStart(
        window_ms=v.fields()["window"].integer(),
        aggression=_opt(v, "aggression", Value.number, d.aggression),
        min_weight_percent=_opt(v, "minWeightPercent", Value.number, d.min_weight_percent),
    )


def _circuit_breakers(v: Value) -> CircuitBreakers:
    d = CircuitBreakers()
    return CircuitBreakers(
        max_connections=_opt(v, "maxConnections", Value.integer, d.max_connections),
        max_pending_requests=_opt(v, "maxPendingRequests", Value.integer,
                                  d.max_pending_requests),
        max_requests=_opt(v, "maxRequests", Value.integer, d.max_requests),
        max_retries=_opt(v, "maxRetries", Value.integer, d.max_retries),
    )


def _timeouts(v: Value) -> Timeouts:
    d = Timeouts()
    return Timeouts(
        request_ms=_opt(v, "request", _ms, d.request_ms),
        idle_ms=_opt(v, "idle", _ms, d.idle_ms),
    )


MODEL_SERVICE = KindDef(
    kind=MODEL_SERVICE_KIND,
    api_version=API_VERSION,
    spec=MODEL_SERVICE_SPEC,
    check=check_service,
    build=build_service,
    check_against=check_service_against,
    description="A model service and its versions (Sluice ModelService).",
    advise=routing.advise_capacity,
)

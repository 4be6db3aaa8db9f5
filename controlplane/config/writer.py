"""A ``ModelService`` back in its YAML shape (camelCase), e.g. for the HTTP API."""

from __future__ import annotations

from controlplane.config.durations import format_duration
from controlplane.config.modelservice_kube import discovery_dict, router_dict
from controlplane.model import (
    API_VERSION,
    MODEL_SERVICE_KIND,
    Endpoint,
    LoadBalancing,
    ModelService,
    Offline,
)


def service_to_dict(service: ModelService) -> dict[str, object]:
    """The document that loads back into ``service`` (every field written out)."""
    spec: dict[str, object] = {
        "listener": {"address": service.listener.address, "port": service.listener.port},
        "versions": [
            {
                "name": v.name,
                "weight": int(v.weight) if float(v.weight).is_integer() else v.weight,
                "endpoints": discovery_dict(v) if v.discovery is not None
                else [_endpoint_dict(e) for e in v.endpoints],
            }
            for v in service.versions
        ],
        "loadBalancing": _lb_dict(service.load_balancing),
    }
    if (hc := service.health_check) is not None:
        spec["healthCheck"] = {
            "path": hc.path,
            "interval": format_duration(hc.interval_ms),
            "timeout": format_duration(hc.timeout_ms),
            "healthyThreshold": hc.healthy_threshold,
            "unhealthyThreshold": hc.unhealthy_threshold,
        }
    if (od := service.outlier_detection) is not None:
        spec["outlierDetection"] = {
            "consecutive5xx": od.consecutive_5xx,
            "interval": format_duration(od.interval_ms),
            "baseEjectionTime": format_duration(od.base_ejection_time_ms),
            "maxEjectionPercent": od.max_ejection_percent,
        }
    if (ss := service.slow_start) is not None:
        spec["slowStart"] = {
            "window": format_duration(ss.window_ms),
            "aggression": ss.aggression,
            "minWeightPercent": ss.min_weight_percent,
        }
    cb = service.circuit_breakers
    spec["circuitBreakers"] = {
        "maxConnections": cb.max_connections,
        "maxPendingRequests": cb.max_pending_requests,
        "maxRequests": cb.max_requests,
        "maxRetries": cb.max_retries,
    }
    spec["timeouts"] = {
        "request": format_duration(service.timeouts.request_ms),
        "idle": format_duration(service.timeouts.idle_ms),
    }
    if (fo := service.failover) is not None:
        spec["failover"] = {"overprovisioningFactor": fo.overprovisioning_factor,
                            "panicThreshold": fo.panic_threshold}
    if (rt := service.retries) is not None:
        spec["retries"] = {"retryOn": list(rt.on), "attempts": rt.attempts,
                           "budget": {"percent": rt.budget_percent,
                                      "minConcurrency": rt.min_concurrency}}
    if (off := service.offline) is not None:
        spec["offline"] = _offline_dict(off)
    if service.router is not None:
        spec["router"] = router_dict(service.router)
    return {
        "apiVersion": API_VERSION,
        "kind": MODEL_SERVICE_KIND,
        "metadata": {"name": service.name},
        "spec": spec,
    }


def _endpoint_dict(e: Endpoint) -> dict[str, object]:
    out: dict[str, object] = {"address": e.address, "port": e.port, "weight": e.weight}
    if e.labels:
        out["labels"] = dict(e.labels)
    out["health"] = e.health.value
    out["priority"] = e.priority
    return out


def _offline_dict(off: Offline) -> dict[str, object]:
    out: dict[str, object] = {}
    if off.header is not None:
        out["header"] = {"name": off.header, "value": off.value}
    if off.listener is not None:
        out["listener"] = {"address": off.listener.address, "port": off.listener.port}
    out["concurrencyPerPod"] = off.concurrency_per_pod
    if off.max_concurrency is not None:
        out["maxConcurrency"] = off.max_concurrency
    out["retryAfter"] = format_duration(off.retry_after_s * 1000)
    out["interval"] = format_duration(off.interval_ms)
    return out


def _lb_dict(lb: LoadBalancing) -> dict[str, object]:
    out: dict[str, object] = {"policy": lb.policy.value}
    if (hk := lb.hash_key) is not None:
        if hk.header is not None:
            out["hashKey"] = {"header": hk.header}
        elif hk.cookie is not None:
            out["hashKey"] = {"cookie": {"name": hk.cookie.name,
                                         "ttl": format_duration(hk.cookie.ttl_ms),
                                         "path": hk.cookie.path}}
        else:
            out["hashKey"] = {"sourceIp": True}
    if lb.bounded_load is not None:
        out["boundedLoad"] = lb.bounded_load
    if lb.policy.is_least_request:
        out["activeRequestBias"] = lb.active_request_bias
    if (cap := lb.capacity) is not None:
        out["capacity"] = dict(cap.table)
        out["capacityLabel"] = cap.label
    if (rt := lb.response_time) is not None:
        out["responseTime"] = {
            "interval": format_duration(rt.interval_ms), "hysteresis": rt.hysteresis,
            "maxStep": rt.max_step, "floor": rt.floor,
            "staleAfter": format_duration(rt.stale_after_ms),
        }
        if rt.prometheus is not None:
            out["responseTime"]["prometheus"] = rt.prometheus  # type: ignore[index]
    if (lr := lb.load_report) is not None:
        out["loadReport"] = {
            "blackoutPeriod": format_duration(lr.blackout_period_ms),
            "weightUpdatePeriod": format_duration(lr.weight_update_period_ms),
            "weightExpirationPeriod": format_duration(lr.weight_expiration_period_ms),
            "errorUtilizationPenalty": lr.error_utilization_penalty,
        }
    return out

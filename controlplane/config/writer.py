"""A ``ModelService`` back in its YAML shape (camelCase), e.g. for the HTTP API."""

from __future__ import annotations

from controlplane.config.durations import format_duration
from controlplane.model import (
    API_VERSION,
    MODEL_SERVICE_KIND,
    Endpoint,
    LoadBalancing,
    ModelService,
)


def service_to_dict(service: ModelService) -> dict[str, object]:
    """The document that loads back into ``service`` (every field written out)."""
    spec: dict[str, object] = {
        "listener": {"address": service.listener.address, "port": service.listener.port},
        "versions": [
            {
                "name": v.name,
                "weight": int(v.weight) if float(v.weight).is_integer() else v.weight,
                "endpoints": [_endpoint_dict(e) for e in v.endpoints],
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
    return out

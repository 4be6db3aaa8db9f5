"""``ModelService`` routing sections: cross-field rules, warnings and builders.

Covers the load-balancing extras (capacity, activeRequestBias, responseTime,
loadReport, hybrid), endpoint priorities, failover, retries and the offline
class. ``modelservice`` calls these; each problem is reported once, where it
was written.
"""

from __future__ import annotations

import ipaddress

from controlplane.config.errors import Errors
from controlplane.config.fields import Value
from controlplane.config.kinds import Document
from controlplane.config.shapes import (
    HASHING_POLICIES,
    LEAST_REQUEST_POLICIES,
    SLOW_START_POLICIES,
)
from controlplane.model import (
    WEIGHT_SCALE,
    Capacity,
    Failover,
    LbPolicy,
    ListenerSpec,
    LoadReportTuning,
    Offline,
    ResponseTimeTuning,
    Retries,
)
from controlplane.routing.weights import DRIFT, UINT32_MAX


def either(names: tuple[str, ...] | list[str]) -> str:
    """``a, b or c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


_TUNING = {"responseTime": LbPolicy.RESPONSE_TIME, "loadReport": LbPolicy.LOAD_REPORT}


def check_load_balancing(doc: Document, spec: Value, lb: Value | None, policy: LbPolicy,
                         shown: str, errors: Errors) -> None:
    """Every rule that ties a loadBalancing field to the policy."""
    if lb is not None and policy.is_hashing and not lb.has("hashKey"):
        at = lb.get("policy") or lb
        doc.error(errors, at.mark, f"{lb.path}.hashKey",
                  f"policy {policy.value} hashes requests: add loadBalancing.hashKey, e.g. "
                  "hashKey: {header: x-session-id} (or cookie: {name: ...}, or sourceIp: true)")
    if lb is not None and policy is LbPolicy.HYBRID:
        key = lb.get("hashKey")
        if key is not None and not key.has("header"):
            doc.error(errors, lb.fields()["hashKey"], f"{lb.path}.hashKey",
                      "policy hybrid tells keyed requests from the rest by a header: use "
                      "hashKey: {header: NAME}")
    if lb is None:
        _check_slow_start(doc, spec, policy, errors)
        return
    if not policy.takes_hash_key:
        hashing = either(HASHING_POLICIES)
        for name in ("hashKey", "boundedLoad"):
            if lb.has(name):
                doc.error(errors, lb.fields()[name], f"{lb.path}.{name}",
                          f"only valid with policy {hashing} (policy is {shown}); remove "
                          f"{name} or set policy: maglev")
    if lb.has("activeRequestBias") and policy.value not in LEAST_REQUEST_POLICIES:
        doc.error(errors, lb.fields()["activeRequestBias"], f"{lb.path}.activeRequestBias",
                  f"only valid with policy {either(LEAST_REQUEST_POLICIES)} (policy is "
                  f"{shown})")
    for name, wants in _TUNING.items():
        if lb.has(name) and policy is not wants:
            doc.error(errors, lb.fields()[name], f"{lb.path}.{name}",
                      f"tunes policy {wants.value} (policy is {shown}); remove {name} or set "
                      f"policy: {wants.value}")
    table = lb.get("capacity")
    if table is not None and not table.fields():
        doc.error(errors, table, f"{lb.path}.capacity",
                  "needs at least one GPU type, e.g. capacity: {h100: 2, a100: 1}")
    seen: dict[str, str] = {}
    for gpu, entry in table.fields().items() if table is not None else ():
        if gpu.casefold() in seen:
            doc.error(errors, entry, f"{lb.path}.capacity.{gpu}",
                      f"the same GPU type as {seen[gpu.casefold()]} (labels match whatever "
                      "their case)")
        seen.setdefault(gpu.casefold(), gpu)
    if lb.has("capacityLabel") and not lb.has("capacity"):
        doc.error(errors, lb.fields()["capacityLabel"], f"{lb.path}.capacityLabel",
                  "names the label capacity is keyed on; add loadBalancing.capacity, e.g. "
                  "capacity: {h100: 2, a100: 1}")
    _check_slow_start(doc, spec, policy, errors)


def _check_slow_start(doc: Document, spec: Value, policy: LbPolicy, errors: Errors) -> None:
    if spec.has("slowStart") and policy.value not in SLOW_START_POLICIES:
        doc.error(errors, spec.fields()["slowStart"], f"{spec.path}.slowStart",
                  f"only valid with policy {either(SLOW_START_POLICIES)} (Envoy ignores "
                  f"it with {policy.value}); remove slowStart or change the policy")


def check_priorities(doc: Document, version: Value, errors: Errors) -> None:
    """A version's endpoint priorities start at 0 and leave no gap (Envoy's rule)."""
    endpoints = version.get("endpoints")
    if endpoints is None or not isinstance(endpoints.data, list):  # none, or discovered
        return
    priorities: set[int] = set()
    for endpoint in endpoints.items():
        priority = endpoint.get("priority")
        if priority is not None:
            priorities.add(priority.integer())
        elif not endpoint.has("priority"):
            priorities.add(0)
    found = sorted(priorities)
    if found and found != list(range(len(found))):
        shown = ", ".join(str(p) for p in found)
        doc.error(errors, endpoints, endpoints.path,
                  f"endpoint priorities must start at 0 and leave no gap (got {shown})")


def check_weight_totals(doc: Document, spec: Value, errors: Errors) -> None:
    """Envoy rejects an endpoint update whose weights in one priority add up to more
    than uint32 (hashing balancers sum every zone of a priority). response_time moves
    weights between versions, priorities and zones, within ``DRIFT``× their total over
    the service: that total must leave the room.

    https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/endpoint/v3/endpoint_components.proto#envoy-v3-api-field-config-endpoint-v3-lbendpoint-load-balancing-weight
    """
    lb, versions = spec.get("loadBalancing"), spec.get("versions")
    policy = lb.get("policy") if lb is not None else None
    measured = policy is not None and policy.text() == LbPolicy.RESPONSE_TIME.value
    table = lb.get("capacity") if lb is not None else None
    entries = table.fields() if table is not None else {}
    if versions is None or not all(v.ok for v in entries.values()):
        return  # reported where it was written
    table_of = capacity(lb) if lb is not None else None
    scale = WEIGHT_SCALE if measured or table_of is not None else 1
    how = f"weight × capacity × {WEIGHT_SCALE}" if scale > 1 else "weight"
    service: dict[tuple[str, int], int] = {}  # each endpoint once, for response_time
    for version in versions.items():
        endpoints = version.get("endpoints")
        if endpoints is None or not isinstance(endpoints.data, list):
            continue
        totals: dict[int, int] = {}
        for endpoint in endpoints.items():
            weight, priority = endpoint.get("weight"), endpoint.get("priority")
            address, port = endpoint.get("address"), endpoint.get("port")
            labels = endpoint.get("labels")
            value = labels.get(table_of.label) if labels is not None and table_of else None
            factor = (table_of.factor_of(value.text()) if table_of and value else None) or 1.0
            pushed = max(1, round((weight.integer() if weight is not None else 1)
                                  * factor * scale))
            level = priority.integer() if priority is not None else 0
            totals[level] = totals.get(level, 0) + pushed
            if address is not None and port is not None:
                service.setdefault((address.text(), port.integer()), pushed)
        for level, total in sorted(totals.items()):
            if total > UINT32_MAX and not measured:
                doc.error(errors, endpoints, endpoints.path,
                          f"the endpoints' weights ({how}) add up to {total} at priority "
                          f"{level}, above Envoy's limit of {UINT32_MAX}: lower the weights "
                          "or capacities")
    limit = UINT32_MAX // round(DRIFT)
    if measured and (total := sum(service.values())) > limit:
        doc.error(errors, versions, versions.path,
                  f"the endpoints' weights ({how}) add up to {total}; response_time moves "
                  f"them within {round(DRIFT)}× that, so at most {limit} (Envoy's limit is "
                  f"{UINT32_MAX}): lower the weights or capacities")


def check_retries(doc: Document, spec: Value, errors: Errors) -> None:
    retries = spec.get("retries")
    on = retries.get("retryOn") if retries is not None else None
    seen: set[str] = set()
    for item in on.items() if on is not None else ():
        if item.ok and item.text() in seen:
            doc.error(errors, item.mark, item.path, f"'{item.text()}' is listed twice")
        elif item.ok:
            seen.add(item.text())


def _listener(v: Value) -> ListenerSpec:
    return ListenerSpec(v.fields()["address"].text(), v.fields()["port"].integer())


def _same_socket(a: ListenerSpec, b: ListenerSpec) -> bool:
    if a.port != b.port:
        return False
    ia, ib = ipaddress.ip_address(a.address), ipaddress.ip_address(b.address)
    return ia == ib or ia.is_unspecified or ib.is_unspecified


def check_offline(doc: Document, spec: Value, errors: Errors) -> None:
    offline, listener = spec.get("offline"), spec.get("listener")
    own = offline.get("listener") if offline is not None else None
    if own is None or listener is None or not own.has("port") or not listener.has("port"):
        return
    if own.get("address") is None or own.get("port") is None:
        return
    if listener.get("address") is None or listener.get("port") is None:
        return
    if _same_socket(_listener(own), _listener(listener)):
        doc.error(errors, own, own.path,
                  "the batch listener must differ from the service's listener")


def advise_capacity(doc: Document, warnings: Errors) -> None:
    """Endpoints whose capacity label is missing or not in the table get the default weight."""
    spec = doc.spec
    lb = spec.get("loadBalancing") if spec is not None else None
    table = lb.get("capacity") if lb is not None else None
    versions = spec.get("versions") if spec is not None else None
    if table is None or versions is None or lb is None:
        return
    label_value = lb.get("capacityLabel")
    label = label_value.text() if label_value is not None else "gpu"
    if not all(v.ok for v in table.fields().values()):
        return  # the table's own errors come first
    known = sorted(table.fields())
    table_of = capacity(lb)
    for version in versions.items():
        endpoints = version.get("endpoints")
        listed = endpoints is not None and isinstance(endpoints.data, list)  # not discovered
        for endpoint in endpoints.items() if endpoints is not None and listed else ():
            labels = endpoint.get("labels")
            value = labels.get(label) if labels is not None else None
            if value is not None and table_of is not None and \
                    table_of.factor_of(value.text()) is not None:
                continue
            got = f"{label}: {value.text()}" if value is not None else f"no {label} label"
            doc.error(warnings, endpoint, endpoint.path,
                      f"{got}, not in loadBalancing.capacity ({', '.join(known)}): it gets "
                      "the default weight (its own weight, capacity 1)")


# --- building -------------------------------------------------------------------------


def _ms_or(v: Value, name: str, default: int) -> int:
    child = v.get(name)
    return child.integer() if child is not None else default


def _num_or(v: Value, name: str, default: float) -> float:
    child = v.get(name)
    return child.number() if child is not None else default


def capacity(lb: Value) -> Capacity | None:
    table = lb.get("capacity")
    if table is None:
        return None
    label = lb.get("capacityLabel")
    return Capacity(
        table=tuple(sorted((k, v.number()) for k, v in table.fields().items())),
        label=label.text() if label is not None else "gpu",
    )


def response_time(v: Value) -> ResponseTimeTuning:
    d = ResponseTimeTuning()
    return ResponseTimeTuning(
        interval_ms=_ms_or(v, "interval", d.interval_ms),
        hysteresis=_num_or(v, "hysteresis", d.hysteresis),
        max_step=_num_or(v, "maxStep", d.max_step),
        floor=_num_or(v, "floor", d.floor),
        stale_after_ms=_ms_or(v, "staleAfter", d.stale_after_ms),
        prometheus=prom.text() if (prom := v.get("prometheus")) is not None else None,
    )


def load_report(v: Value) -> LoadReportTuning:
    d = LoadReportTuning()
    return LoadReportTuning(
        blackout_period_ms=_ms_or(v, "blackoutPeriod", d.blackout_period_ms),
        weight_update_period_ms=_ms_or(v, "weightUpdatePeriod", d.weight_update_period_ms),
        weight_expiration_period_ms=_ms_or(v, "weightExpirationPeriod",
                                           d.weight_expiration_period_ms),
        error_utilization_penalty=_num_or(v, "errorUtilizationPenalty",
                                          d.error_utilization_penalty),
    )


def failover(v: Value) -> Failover:
    d = Failover()
    return Failover(
        overprovisioning_factor=_ms_or(v, "overprovisioningFactor", d.overprovisioning_factor),
        panic_threshold=_num_or(v, "panicThreshold", d.panic_threshold),
    )


def retries(v: Value) -> Retries:
    d = Retries()
    on = v.get("retryOn")
    budget = v.get("budget")
    return Retries(
        on=tuple(i.text() for i in on.items()) if on is not None else d.on,
        attempts=_ms_or(v, "attempts", d.attempts),
        budget_percent=_num_or(budget, "percent", d.budget_percent) if budget else
        d.budget_percent,
        min_concurrency=_ms_or(budget, "minConcurrency", d.min_concurrency) if budget else
        d.min_concurrency,
    )


def offline(v: Value) -> Offline:
    d = Offline()
    header = v.get("header")
    listener = v.get("listener")
    name: str | None = d.header
    value = d.value
    if header is not None:
        got_name, got_value = header.get("name"), header.get("value")
        name = got_name.text() if got_name is not None else d.header
        value = got_value.text() if got_value is not None else d.value
    elif listener is not None:
        name = None  # only its own listener
    cap = v.get("maxConcurrency")
    return Offline(
        header=name,
        value=value,
        listener=_listener(listener) if listener is not None else None,
        concurrency_per_pod=_ms_or(v, "concurrencyPerPod", d.concurrency_per_pod),
        max_concurrency=cap.integer() if cap is not None else None,
        retry_after_s=max(1, round(_ms_or(v, "retryAfter", d.retry_after_s * 1000) / 1000)),
        interval_ms=_ms_or(v, "interval", d.interval_ms),
    )

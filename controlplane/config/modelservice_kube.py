"""``ModelService`` parts for Kubernetes: discovered endpoints and the router.

``endpoints: {kubernetes: {...}}`` names where a version's endpoints come from
(``controlplane.kube.discovery`` fills them in); ``router`` names the traffic
layer experiments move (``controlplane.routers``). Checks, builders and the way
back to YAML, each reported where it was written.
"""

from __future__ import annotations

from controlplane.config.errors import Errors
from controlplane.config.fields import Value
from controlplane.config.kinds import Document
from controlplane.model import (
    GatewayApiRouter,
    IstioRouter,
    KubeEndpoints,
    RouterSpec,
    Version,
)


def static_endpoints(version: Value) -> Value | None:
    """The version's endpoint list, or None (discovered, or reported as invalid)."""
    endpoints = version.get("endpoints")
    return endpoints if endpoints is not None and isinstance(endpoints.data, list) else None


def check(doc: Document, spec: Value, errors: Errors) -> None:
    versions = spec.get("versions")
    names = []
    for version in versions.items() if versions is not None else ():
        name = version.get("name")
        if name is not None:
            names.append(name.text())
        endpoints = version.get("endpoints")
        kube = endpoints.get("kubernetes") if endpoints is not None and isinstance(
            endpoints.data, dict) else None
        selector = kube.get("selector") if kube is not None else None
        if selector is not None and not selector.fields():
            doc.error(errors, selector, selector.path,
                      "needs at least one label: an empty selector would match every pod")
    router = spec.get("router")
    if router is None or versions is None or len(names) != len(versions.items()):
        return
    gateway, istio = router.get("gatewayAPI"), router.get("istio")
    if gateway is not None and gateway.get("backends") is not None:
        _check_per_version(doc, gateway.fields()["backends"], names, errors, every=True)
    if istio is not None and istio.get("subsets") is not None:
        _check_per_version(doc, istio.fields()["subsets"], names, errors, every=False)


def _check_per_version(doc: Document, table: Value, names: list[str], errors: Errors,
                       every: bool) -> None:
    for key, value in table.fields().items():
        if key not in names:
            doc.error(errors, value, value.path,
                      f"'{key}' is not a version of this service ({', '.join(names)})")
    missing = [n for n in names if n not in table.fields()]
    if every and missing:
        doc.error(errors, table, table.path,
                  f"every version needs a backend Service; missing: {', '.join(missing)}")


# --- building -------------------------------------------------------------------------


def _text(v: Value, name: str) -> str | None:
    child = v.get(name)
    return child.text() if child is not None else None


def _pairs(v: Value | None) -> tuple[tuple[str, str], ...]:
    if v is None:
        return ()
    return tuple(sorted((k, x.text()) for k, x in v.fields().items()))


def discovery(version: Value) -> KubeEndpoints | None:
    endpoints = version.fields()["endpoints"]
    if not isinstance(endpoints.data, dict):
        return None
    kube = endpoints.fields()["kubernetes"]
    port = kube.fields()["port"]
    return KubeEndpoints(
        port=port.integer() if isinstance(port.data, int) else port.text(),
        namespace=_text(kube, "namespace"),
        service=_text(kube, "service"),
        selector=_pairs(kube.get("selector")),
    )


def router(v: Value) -> RouterSpec | None:
    gateway, istio = v.get("gatewayAPI"), v.get("istio")
    if gateway is not None:
        port = gateway.get("port")
        return RouterSpec(gateway_api=GatewayApiRouter(
            http_route=gateway.fields()["httpRoute"].text(),
            backends=_pairs(gateway.get("backends")),
            namespace=_text(gateway, "namespace"),
            port=port.integer() if port is not None else None,
        ))
    if istio is not None:
        return RouterSpec(istio=IstioRouter(
            virtual_service=istio.fields()["virtualService"].text(),
            host=istio.fields()["host"].text(),
            destination_rule=_text(istio, "destinationRule"),
            namespace=_text(istio, "namespace"),
            subsets=_pairs(istio.get("subsets")),
            subset_label=_text(istio, "subsetLabel") or "version",
        ))
    return None  # xds


# --- back to YAML -----------------------------------------------------------------------


def discovery_dict(version: Version) -> dict[str, object]:
    d = version.discovery
    assert d is not None
    out: dict[str, object] = {}
    if d.namespace is not None:
        out["namespace"] = d.namespace
    if d.service is not None:
        out["service"] = d.service
    else:
        out["selector"] = dict(d.selector)
    out["port"] = d.port
    return {"kubernetes": out}


def router_dict(spec: RouterSpec | None) -> dict[str, object]:
    if spec is not None and (g := spec.gateway_api) is not None:
        gateway: dict[str, object] = {"httpRoute": g.http_route, "backends": dict(g.backends)}
        if g.namespace is not None:
            gateway["namespace"] = g.namespace
        if g.port is not None:
            gateway["port"] = g.port
        return {"gatewayAPI": gateway}
    if spec is not None and (i := spec.istio) is not None:
        istio: dict[str, object] = {"virtualService": i.virtual_service, "host": i.host,
                                    "subsetLabel": i.subset_label}
        if i.destination_rule is not None:
            istio["destinationRule"] = i.destination_rule
        if i.namespace is not None:
            istio["namespace"] = i.namespace
        if i.subsets:
            istio["subsets"] = dict(i.subsets)
        return {"istio": istio}
    return {"xds": {}}

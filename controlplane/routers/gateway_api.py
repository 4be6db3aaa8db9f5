"""Gateway API router: the weights of an HTTPRoute's ``backendRefs``.

Works with any implementation of ``gateway.networking.k8s.io/v1`` (Envoy
Gateway, Istio, Contour, GKE ...): every rule that refers to one of the
service's backend Services gets one backendRef per version, weighted in
hundredths of a percent (10000 = all), a version at 0 keeping its ref at
weight 0; refs to other backends are left alone. The weights are in effect
once the route is written and, when its status reports parents, each parent
has accepted this generation.
"""

from __future__ import annotations

import copy
from typing import Any

from controlplane.kube.client import HTTP_ROUTES, KubeError
from controlplane.model import ModelService
from controlplane.routers.external import ExternalRouter, replace_with_retry

Obj = dict[str, Any]
SCALE = 100  # backendRef weight per percent


def set_weights(route: Obj, backends: dict[str, str], weights: dict[str, float],
                port: int | None = None) -> Obj:
    """The route with our backends weighted; raises ValueError when no rule refers to them."""
    out = copy.deepcopy(route)
    ours = set(backends.values())
    touched = 0
    for rule in (out.get("spec") or {}).get("rules") or []:
        refs = rule.get("backendRefs") or []
        mine = [r for r in refs if r.get("name") in ours and r.get("kind", "Service") ==
                "Service" and r.get("group", "") == ""]
        if not mine:
            continue
        touched += 1
        known_port = next((r.get("port") for r in mine if r.get("port")), port)
        by_name = {r["name"]: r for r in mine}
        new_refs = [r for r in refs if r not in mine]
        for version, backend in backends.items():
            ref = dict(by_name.get(backend) or {"name": backend})
            if "port" not in ref and known_port is not None:
                ref["port"] = known_port
            ref["weight"] = round(weights.get(version, 0.0) * SCALE)
            new_refs.append(ref)
        rule["backendRefs"] = new_refs
    if not touched:
        raise ValueError(f"no rule refers to the backends {', '.join(sorted(ours))}")
    return out


def acceptance(route: Obj) -> str | None:
    """None when every parent in the status accepted the route's generation (or there is
    no status yet to say otherwise); else what is missing."""
    generation = (route.get("metadata") or {}).get("generation")
    parents = (route.get("status") or {}).get("parents") or []
    for parent in parents:
        name = (parent.get("parentRef") or {}).get("name", "?")
        accepted = next((c for c in parent.get("conditions") or []
                         if c.get("type") == "Accepted"), None)
        if accepted is None:
            return f"parent {name} has not reported yet"
        if generation is not None and accepted.get("observedGeneration", generation) < \
                generation:
            return f"parent {name} has not seen generation {generation} yet"
        if accepted.get("status") != "True":
            return f"parent {name} did not accept it: {accepted.get('message', '')}"[:300]
    return None


class GatewayApiRouter(ExternalRouter):
    name = "gatewayAPI"

    def _where(self, service: str) -> tuple[str, str]:
        spec = self.store.declared.service(service).router
        assert spec is not None and spec.gateway_api is not None
        return spec.gateway_api.namespace or self.namespace_of(service), spec.gateway_api.http_route

    def describe(self, service: str) -> str:
        try:
            ns, name = self._where(service)
        except (KeyError, AssertionError):
            return f"HTTPRoute of {service}"
        return f"HTTPRoute {ns}/{name}"

    def write(self, service: ModelService, weights: dict[str, float]) -> str | None:
        assert service.router is not None and service.router.gateway_api is not None
        g = service.router.gateway_api
        ns, name = self._where(service.name)

        def change(route: Obj) -> Obj:
            try:
                return set_weights(route, dict(g.backends), weights, g.port)
            except ValueError as exc:
                raise KubeError(422, "Invalid", f"HTTPRoute {ns}/{name}: {exc}") from exc

        done = replace_with_retry(
            self.kube, lambda: self.kube.get(HTTP_ROUTES, ns, name), change,
            lambda body: self.kube.replace(HTTP_ROUTES, ns, name, body))
        return acceptance(done)

    def check(self, service: ModelService) -> str | None:
        ns, name = self._where(service.name)
        route = self.kube.get(HTTP_ROUTES, ns, name)
        return acceptance(route) if route is not None else "the HTTPRoute is gone"

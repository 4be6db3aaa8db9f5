"""Istio router: a VirtualService's route weights and a DestinationRule's subsets.

The DestinationRule (when named) gets one subset per version, selecting the
pods whose ``subsetLabel`` is the version's name; subsets of other names are
left alone, and subsets are written before any route points at them. Every
HTTP route of the VirtualService that sends to the service's host gets one
destination per version; Istio wants whole percents adding up to 100 (with
the share other hosts keep), so weights are rounded by largest remainder.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from controlplane.kube.client import DESTINATION_RULES, VIRTUAL_SERVICES, KubeError
from controlplane.model import IstioRouter as IstioSpec
from controlplane.model import ModelService
from controlplane.routers.external import ExternalRouter, replace_with_retry

Obj = dict[str, Any]


def whole_percents(weights: dict[str, float], total: int = 100) -> dict[str, int]:
    """Integers that add up to ``total``, each as close to its share as possible."""
    share = sum(weights.values())
    if share <= 0:
        return dict.fromkeys(weights, 0)
    exact = {k: w * total / share for k, w in weights.items()}
    out = {k: math.floor(x) for k, x in exact.items()}
    left = total - sum(out.values())
    for k in sorted(exact, key=lambda k: (out[k] - exact[k], k))[:left]:
        out[k] += 1
    return out


def set_routes(vs: Obj, spec: IstioSpec, weights: dict[str, float]) -> Obj:
    out = copy.deepcopy(vs)
    touched = 0
    for http in (out.get("spec") or {}).get("http") or []:
        routes = http.get("route") or []
        mine = [r for r in routes if (r.get("destination") or {}).get("host") == spec.host]
        if not mine:
            continue
        touched += 1
        others = [r for r in routes if r not in mine]
        kept = sum(int(r.get("weight", 0)) for r in others)
        template = mine[0].get("destination") or {}
        new = []
        for version, percent in whole_percents(weights, 100 - kept).items():
            destination = {**template, "host": spec.host, "subset": spec.subset(version)}
            new.append({"destination": destination, "weight": percent})
        http["route"] = others + new
    if not touched:
        raise ValueError(f"no HTTP route sends to host {spec.host}")
    return out


def set_subsets(dr: Obj, spec: IstioSpec, versions: list[str]) -> Obj:
    out = copy.deepcopy(dr)
    body = out.setdefault("spec", {})
    body.setdefault("host", spec.host)
    names = {spec.subset(v): v for v in versions}
    subsets = [s for s in body.get("subsets") or [] if s.get("name") not in names]
    old = {s.get("name"): s for s in body.get("subsets") or []}
    for name, version in names.items():
        subset = dict(old.get(name) or {"name": name})
        subset["labels"] = {spec.subset_label: version}
        subsets.append(subset)
    body["subsets"] = subsets
    return out


class IstioRouter(ExternalRouter):
    name = "istio"

    def _spec(self, service: str) -> tuple[str, IstioSpec]:
        spec = self.store.declared.service(service).router
        assert spec is not None and spec.istio is not None
        return spec.istio.namespace or self.namespace_of(service), spec.istio

    def describe(self, service: str) -> str:
        try:
            ns, spec = self._spec(service)
        except (KeyError, AssertionError):
            return f"VirtualService of {service}"
        return f"VirtualService {ns}/{spec.virtual_service}"

    def write(self, service: ModelService, weights: dict[str, float]) -> str | None:
        ns, spec = self._spec(service.name)
        versions = [v.name for v in service.versions]
        if spec.destination_rule is not None:
            dr_name = spec.destination_rule
            replace_with_retry(
                self.kube, lambda: self.kube.get(DESTINATION_RULES, ns, dr_name),
                lambda dr: set_subsets(dr, spec, versions),
                lambda body: self.kube.replace(DESTINATION_RULES, ns, dr_name, body))

        def change(vs: Obj) -> Obj:
            try:
                return set_routes(vs, spec, weights)
            except ValueError as exc:
                raise KubeError(422, "Invalid", f"VirtualService {ns}/"
                                f"{spec.virtual_service}: {exc}") from exc

        replace_with_retry(
            self.kube, lambda: self.kube.get(VIRTUAL_SERVICES, ns, spec.virtual_service),
            change, lambda body: self.kube.replace(VIRTUAL_SERVICES, ns,
                                                   spec.virtual_service, body))
        return None

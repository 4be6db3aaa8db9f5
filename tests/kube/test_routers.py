"""Each router writes the weights it should (Gateway API, Istio) and says when they hold."""

from __future__ import annotations

from typing import Any

from controlplane.config import load_text
from controlplane.kube.client import HTTP_ROUTES, VIRTUAL_SERVICES, Kube
from controlplane.model import IstioRouter as IstioSpec
from controlplane.rollout.sync import SyncReport
from controlplane.routers import routers_for
from controlplane.routers.gateway_api import GatewayApiRouter, acceptance, set_weights
from controlplane.routers.istio import IstioRouter, set_routes, set_subsets, whole_percents
from controlplane.store import Store, TrafficOverride
from tests.kube.apiserver import ApiServer

SERVICE = """\
apiVersion: sluice.dev/v1alpha1
kind: ModelService
metadata: {name: chat}
spec:
  listener: {address: 127.0.0.1, port: 10000}
  router: %s
  versions:
    - {name: v1, weight: 100, endpoints: [{address: 10.0.0.1, port: 80}]}
    - {name: v2, weight: 0, endpoints: [{address: 10.0.0.2, port: 80}]}
"""
GATEWAY = "{gatewayAPI: {httpRoute: chat, namespace: models, backends: {v1: chat-v1, v2: chat-v2}}}"
ISTIO = ("{istio: {virtualService: chat, destinationRule: chat, namespace: models, "
         "host: chat.models.svc.cluster.local}}")


def http_route() -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "chat", "namespace": "models"},
            "spec": {"parentRefs": [{"name": "gateway"}], "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                 "backendRefs": [{"name": "chat-v1", "port": 8000, "weight": 1},
                                 {"name": "mirror", "port": 80, "weight": 0}]},
                {"backendRefs": [{"name": "static", "port": 80}]}]}}


def test_gateway_weights_in_hundredths_of_a_percent() -> None:
    route = set_weights(http_route(), {"v1": "chat-v1", "v2": "chat-v2"}, {"v1": 87.5, "v2": 12.5})
    rules = route["spec"]["rules"]
    assert rules[0]["backendRefs"] == [
        {"name": "mirror", "port": 80, "weight": 0},
        {"name": "chat-v1", "port": 8000, "weight": 8750},
        {"name": "chat-v2", "port": 8000, "weight": 1250}]  # added, with the known port
    assert rules[1] == http_route()["spec"]["rules"][1]  # not ours: untouched


def test_gateway_acceptance_follows_the_route_status() -> None:
    route = {"metadata": {"generation": 3}}
    assert acceptance(route) is None  # no status yet: the write is what counts
    route["status"] = {"parents": [{"parentRef": {"name": "gw"}, "conditions": [
        {"type": "Accepted", "status": "True", "observedGeneration": 2}]}]}
    assert "generation 3" in (acceptance(route) or "")
    route["status"]["parents"][0]["conditions"][0]["observedGeneration"] = 3
    assert acceptance(route) is None


def test_istio_whole_percents_and_subsets() -> None:
    assert whole_percents({"v1": 66.67, "v2": 33.33}) == {"v1": 67, "v2": 33}
    assert sum(whole_percents({"a": 33.3, "b": 33.3, "c": 33.4}).values()) == 100
    spec = IstioSpec(virtual_service="chat", host="chat.models.svc.cluster.local")
    vs = {"spec": {"http": [{"route": [{"destination": {"host": spec.host, "port":
                                                         {"number": 8000}}}]}]}}
    out = set_routes(vs, spec, {"v1": 75.0, "v2": 25.0})
    assert out["spec"]["http"][0]["route"] == [
        {"destination": {"host": spec.host, "port": {"number": 8000}, "subset": "v1"},
         "weight": 75},
        {"destination": {"host": spec.host, "port": {"number": 8000}, "subset": "v2"},
         "weight": 25}]
    dr = set_subsets({"spec": {"subsets": [{"name": "old", "labels": {"version": "v0"}}]}},
                     spec, ["v1", "v2"])
    assert dr["spec"]["host"] == spec.host
    assert [s["name"] for s in dr["spec"]["subsets"]] == ["old", "v1", "v2"]
    assert dr["spec"]["subsets"][2]["labels"] == {"version": "v2"}


def store_with(router: str) -> Store:
    store = Store(("file",))
    result = load_text(SERVICE % router, "chat.yaml")
    assert not result.errors, result.errors
    store.apply_load("file", result)
    return store


class NoProxies:
    def sync(self, service: str, versions: object, revision: int) -> SyncReport:
        return SyncReport(True, (), (), ())

    def admin_urls(self) -> list[str]:
        return []


def test_gateway_router_writes_the_route(apiserver: ApiServer, kube: Kube) -> None:
    apiserver.put(http_route())
    store = store_with(GATEWAY)
    router = GatewayApiRouter(kube, store, lambda s: "models")
    router.leading = True
    pick = routers_for(store, NoProxies(), {"gatewayAPI": router})
    assert pick("chat") is router
    token = router.apply("chat", TrafficOverride.of("experiment/x", {"v1": 90, "v2": 10}))
    assert not router.in_effect("chat", ("v1", "v2"), token).synced
    router.sync_once()
    assert router.in_effect("chat", ("v1", "v2"), token).synced
    route = kube.get(HTTP_ROUTES, "models", "chat")
    assert route is not None
    weights = {r["name"]: r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]}
    assert weights == {"mirror": 0, "chat-v1": 9000, "chat-v2": 1000}
    # The gateway reports an older generation: not in effect until it catches up.
    route["status"] = {"parents": [{"parentRef": {"name": "gateway"}, "conditions": [
        {"type": "Accepted", "status": "True", "observedGeneration": 1}]}]}
    apiserver.put(route)
    token = router.apply("chat", TrafficOverride.of("experiment/x", {"v1": 50, "v2": 50}))
    router.sync_once()
    report = router.in_effect("chat", ("v1", "v2"), token)
    assert not report.synced and "generation" in report.describe()
    route = kube.get(HTTP_ROUTES, "models", "chat")
    assert route is not None
    route["status"]["parents"][0]["conditions"][0]["observedGeneration"] = \
        route["metadata"]["generation"]
    apiserver.put(route)
    router.sync_once()
    assert router.in_effect("chat", ("v1", "v2"), token).synced


def test_gateway_router_reports_a_missing_route(kube: Kube) -> None:
    store = store_with(GATEWAY)
    router = GatewayApiRouter(kube, store, lambda s: "models")
    token = router.apply("chat", TrafficOverride.of("experiment/x", {"v1": 90, "v2": 10}))
    router.sync_once()
    report = router.in_effect("chat", ("v1", "v2"), token)
    assert not report.synced and "not found" in report.describe()


def test_istio_router_writes_subsets_then_routes(apiserver: ApiServer, kube: Kube) -> None:
    host = "chat.models.svc.cluster.local"
    apiserver.put({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                   "metadata": {"name": "chat", "namespace": "models"},
                   "spec": {"host": host}})
    apiserver.put({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                   "metadata": {"name": "chat", "namespace": "models"},
                   "spec": {"hosts": [host], "http": [
                       {"route": [{"destination": {"host": host}}]}]}})
    store = store_with(ISTIO)
    router = IstioRouter(kube, store, lambda s: "models")
    token = router.apply("chat", TrafficOverride.of("experiment/x", {"v1": 66.7, "v2": 33.3}))
    router.sync_once()
    assert router.in_effect("chat", ("v1", "v2"), token).synced
    vs = kube.get(VIRTUAL_SERVICES, "models", "chat")
    assert vs is not None
    assert [(r["destination"]["subset"], r["weight"]) for r in vs["spec"]["http"][0]["route"]] \
        == [("v1", 67), ("v2", 33)]
    dr = apiserver.get("destinationrules", "models", "chat")
    assert dr is not None
    assert [s["labels"] for s in dr["spec"]["subsets"]] == [{"version": "v1"}, {"version": "v2"}]

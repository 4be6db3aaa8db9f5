"""Pods and EndpointSlices → endpoints, and the discovery that feeds the store."""

from __future__ import annotations

import asyncio
from typing import Any

from controlplane.config import load_text
from controlplane.kube.client import Kube
from controlplane.kube.discovery import Discovery
from controlplane.kube.endpoints import from_pods, from_slices, gpu_key
from controlplane.model import Capacity, EndpointHealth, LbPolicy
from controlplane.store import DISCOVERY_SLOW_START_MS, Store
from tests.kube.apiserver import ApiServer
from tests.kube.conftest import node, pod
from tests.kube.test_informer import until

CAPACITY = Capacity(table=(("a100", 1.0), ("h100", 2.0)))
NODES = {"/gpu-a": node("gpu-a", **{"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                                   "topology.kubernetes.io/zone": "zone-a"}),
         "/gpu-b": node("gpu-b", **{"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"})}


def endpoint_slice(name: str, endpoints: list[dict[str, Any]], port: int = 8000,
                   port_name: str = "http") -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "models",
                         "labels": {"kubernetes.io/service-name": "chat-v1"}},
            "addressType": "IPv4", "ports": [{"name": port_name, "port": port}],
            "endpoints": endpoints}


def test_gpu_labels_map_to_the_capacity_table() -> None:
    assert gpu_key("NVIDIA-H100-80GB-HBM3", ["h100", "a100"]) == "h100"
    assert gpu_key("nvidia-tesla-a100", ["h100", "a100"]) == "a100"
    assert gpu_key("NVIDIA-L40S", ["l4", "l40s"]) == "l40s"
    assert gpu_key("Tesla-T4", ["h100"]) == "tesla-t4"  # unknown: itself, lowercased


def test_pods_ready_terminating_unready_and_without_ip() -> None:
    pods = [
        pod("ready", "10.0.0.2", node="gpu-a"),
        pod("draining", "10.0.0.1", terminating=True, node="gpu-b"),
        pod("unready", "10.0.0.3", ready=False),
        pod("starting", None),
        pod("gone", "10.0.0.4", ready=False, terminating=True),
    ]
    found = from_pods(pods, "http", NODES, CAPACITY)
    assert [(e.address, e.port, e.health) for e in found.endpoints] == [
        ("10.0.0.1", 8000, EndpointHealth.DRAINING), ("10.0.0.2", 8000, EndpointHealth.HEALTHY)]
    assert dict(found.endpoints[1].labels) == {"gpu": "h100", "zone": "zone-a"}
    assert dict(found.endpoints[0].labels) == {"gpu": "a100"}
    assert found.notes == ("pod starting has no IP yet",)  # left out, and said so
    assert from_pods([pod("x", None, ready=False)], 8000, {}).notes == ()  # not ready: quiet


def test_unknown_gpu_gets_the_default_weight_and_a_note() -> None:
    labelled = pod("p", "10.0.0.9", labels={"app": "chat", "nvidia.com/gpu.product": "Tesla-T4"})
    found = from_pods([labelled], 8000, {}, CAPACITY)
    assert found.unknown_gpus == ("Tesla-T4",)
    [endpoint] = found.endpoints
    assert CAPACITY.factor(endpoint) is None  # so it weighs as capacity 1


def test_endpoint_slices_conditions_and_named_ports() -> None:
    slices = [endpoint_slice("a", [
        {"addresses": ["10.1.0.1"], "conditions": {"ready": True}, "nodeName": "gpu-a"},
        {"addresses": ["10.1.0.2"], "conditions": {"ready": False, "serving": True,
                                                   "terminating": True}, "zone": "zone-b"},
        {"addresses": ["10.1.0.3"], "conditions": {"ready": False, "serving": False}},
        {"addresses": ["10.1.0.4"], "conditions": {}},  # nil ready means ready
    ], port=9000)]
    found = from_slices(slices, "http", NODES, CAPACITY)
    assert [(e.address, e.port, e.health.value) for e in found.endpoints] == [
        ("10.1.0.1", 9000, "healthy"), ("10.1.0.2", 9000, "draining"),
        ("10.1.0.4", 9000, "healthy")]
    assert dict(found.endpoints[1].labels) == {"zone": "zone-b"}
    assert from_slices(slices, "grpc", NODES).endpoints == ()
    assert "no port grpc" in from_slices(slices, "grpc", NODES).notes[0]


SERVICES = """\
apiVersion: sluice.dev/v1alpha1
kind: ModelService
metadata: {name: chat}
spec:
  listener: {address: 127.0.0.1, port: 10000}
  loadBalancing: {capacity: {h100: 2, a100: 1}}
  versions:
    - name: v1
      weight: 100
      endpoints: {kubernetes: {namespace: models, selector: {app: chat}, port: http}}
    - name: v2
      weight: 0
      endpoints: {kubernetes: {namespace: models, selector: {app: nothing}, port: 8000}}
---
apiVersion: sluice.dev/v1alpha1
kind: ModelService
metadata: {name: embed}
spec:
  listener: {address: 127.0.0.1, port: 10001}
  versions:
    - {name: v1, weight: 100, endpoints: [{address: 10.9.0.1, port: 80}]}
"""


async def test_discovery_feeds_the_store_and_reports_what_is_missing(
        apiserver: ApiServer, kube: Kube) -> None:
    store = Store(("file",))
    store.apply_load("file", load_text(SERVICES, "chat.yaml"))
    apiserver.put(node("gpu-a", **{"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}))
    apiserver.put(pod("p1", "10.0.0.1", node="gpu-a"))
    apiserver.put(pod("p2", "10.0.0.2", ready=False))
    discovery = Discovery(kube, store, lambda service: "models")
    stop = asyncio.Event()
    discovery.reconcile()
    task = asyncio.create_task(discovery.run(stop))
    try:
        await until(lambda: store.ready and len(store.state.service("chat").version("v1")
                                                .endpoints) == 1)
        chat = store.state.service("chat")
        [p1] = chat.version("v1").endpoints
        assert (p1.address, dict(p1.labels)["gpu"]) == ("10.0.0.1", "h100")
        assert chat.version("v2").endpoints == ()  # a selector that matches nothing
        assert discovery.view("chat")["v2"]["notes"][0].startswith("no endpoints")  # type: ignore[index]
        assert chat.slow_start is not None and chat.slow_start.window_ms == \
            DISCOVERY_SLOW_START_MS and chat.load_balancing.policy is LbPolicy.LEAST_REQUEST
        assert store.state.service("embed").slow_start is None  # static: as declared
        apiserver.put(pod("p2", "10.0.0.2"))  # becomes ready
        apiserver.put(pod("p1", "10.0.0.1", terminating=True, node="gpu-a"))
        await until(lambda: [e.health for e in store.state.service("chat").version("v1")
                             .endpoints] == [EndpointHealth.DRAINING, EndpointHealth.HEALTHY])
        apiserver.remove("Pod", "models", "p1")
        await until(lambda: len(store.state.service("chat").version("v1").endpoints) == 1)
    finally:
        stop.set()
        await task


async def test_a_forbidden_watch_fails_readiness_and_the_rest_serves(
        apiserver: ApiServer, kube: Kube) -> None:
    apiserver.forbid("list", "pods")
    store = Store(("file",))
    store.apply_load("file", load_text(SERVICES, "chat.yaml"))
    discovery = Discovery(kube, store, lambda service: "models")
    stop = asyncio.Event()
    discovery.reconcile()
    task = asyncio.create_task(discovery.run(stop))
    try:
        await until(lambda: any("forbidden by RBAC" in m for m in store.conditions().values()))
        assert not store.ready
        assert [e.address for e in store.state.service("embed").version("v1").endpoints] == \
            ["10.9.0.1"]
        apiserver.forbid("list", "pods", False)
        await until(lambda: store.ready)
    finally:
        stop.set()
        await task

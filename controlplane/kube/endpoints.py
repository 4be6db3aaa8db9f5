"""Pods and EndpointSlices → a version's endpoints (pure).

Health follows Kubernetes' own conditions: a ready endpoint serves; one that
is terminating but still serving drains (DRAINING: no new requests, the
generations in flight finish); anything else is left out (not ready, no IP
yet, finished). The GPU type comes from the pod's or its node's labels
(``nvidia.com/gpu.product`` and friends) and is written, shortened to a key of
the service's capacity table (``NVIDIA-H100-80GB-HBM3`` → ``h100``), on the
endpoint's capacity label, so ``loadBalancing.capacity`` weights it; the zone
goes on the ``zone`` label. Endpoints are sorted by address and port so every
replica builds the same resources.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.model import Capacity, Endpoint, EndpointHealth

Obj = dict[str, Any]

# Where clusters put the GPU model, most specific first: NVIDIA GPU feature discovery,
# GKE, EKS, and plain conventions.
GPU_LABELS = ("nvidia.com/gpu.product", "cloud.google.com/gke-accelerator",
              "k8s.amazonaws.com/accelerator", "accelerator", "gpu")
ZONE_LABELS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
ZONE = "zone"
_TOKENS = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class Found:
    endpoints: tuple[Endpoint, ...]
    notes: tuple[str, ...] = ()  # what was left out or guessed, for the log and status
    unknown_gpus: tuple[str, ...] = ()  # GPU labels not in the capacity table


def gpu_key(product: str, known: Iterable[str]) -> str:
    """The capacity-table key a GPU label means, else the label itself (lowercased)."""
    text = product.lower()
    keys = sorted({k.lower(): k for k in known}.items(), key=lambda kv: -len(kv[0]))
    tokens = set(_TOKENS.split(text))
    for lower, key in keys:
        if lower == text or lower in tokens:
            return key
    for lower, key in keys:
        if lower in text:
            return key
    cleaned = re.sub(r"[^a-z0-9._-]", "-", text).strip("-._")[:63].rstrip("-._")
    return cleaned or "unknown"


def _first(labels: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    return next((labels[n] for n in names if labels.get(n)), None)


class _Builder:
    def __init__(self, nodes: Mapping[str, Obj], capacity: Capacity | None) -> None:
        self.nodes = nodes
        self.capacity = capacity
        self.label = capacity.label if capacity is not None else "gpu"
        self.known = [k for k, _ in capacity.table] if capacity is not None else []
        self.found: dict[tuple[str, int], Endpoint] = {}
        self.notes: list[str] = []
        self.unknown: set[str] = set()

    def node_labels(self, node: str | None) -> Mapping[str, str]:
        obj = self.nodes.get(f"/{node}") if node else None
        return ((obj or {}).get("metadata") or {}).get("labels") or {}

    def add(self, address: str, port: int, health: EndpointHealth, own: Mapping[str, str],
            node: str | None, zone: str | None) -> None:
        node_labels = self.node_labels(node)
        labels: dict[str, str] = {}
        product = _first(own, GPU_LABELS) or _first(node_labels, GPU_LABELS)
        if product is not None:
            key = gpu_key(product, self.known)
            labels[self.label] = key
            if self.capacity is not None and key not in self.known:
                self.unknown.add(product)
        zone = zone or _first(node_labels, ZONE_LABELS)
        if zone:
            labels[ZONE] = zone
        endpoint = Endpoint(address, port, labels=tuple(sorted(labels.items())), health=health)
        old = self.found.get((address, port))
        if old is None or (old.health is EndpointHealth.DRAINING
                           and health is not EndpointHealth.DRAINING):
            self.found[(address, port)] = endpoint

    def result(self) -> Found:
        endpoints = tuple(self.found[k] for k in sorted(self.found))
        return Found(endpoints, tuple(self.notes), tuple(sorted(self.unknown)))


def _health(ready: bool, serving: bool, terminating: bool) -> EndpointHealth | None:
    if ready and not terminating:
        return EndpointHealth.HEALTHY
    if serving and terminating:
        return EndpointHealth.DRAINING
    return None


def from_slices(slices: Iterable[Obj], port: int | str, nodes: Mapping[str, Obj],
                capacity: Capacity | None = None) -> Found:
    """The endpoints of a Service's EndpointSlices (``discovery.k8s.io/v1``)."""
    b = _Builder(nodes, capacity)
    for s in slices:
        if s.get("addressType") not in ("IPv4", "IPv6"):
            continue
        number = _slice_port(s.get("ports") or [], port)
        name = (s.get("metadata") or {}).get("name", "?")
        if number is None:
            b.notes.append(f"EndpointSlice {name} has no port {port}")
            continue
        for e in s.get("endpoints") or []:
            conditions = e.get("conditions") or {}
            ready = conditions.get("ready") is not False  # nil means ready
            serving = conditions.get("serving", ready) is not False
            terminating = conditions.get("terminating") is True
            health = _health(ready, serving, terminating)
            addresses = e.get("addresses") or []
            if health is None or not addresses:
                continue
            b.add(addresses[0], number, health, {}, e.get("nodeName"), e.get("zone"))
    return b.result()


def _slice_port(ports: list[Obj], port: int | str) -> int | None:
    for p in ports:
        if isinstance(port, int) and p.get("port") == port:
            return port
        if isinstance(port, str) and p.get("name") == port and p.get("port"):
            return int(p["port"])
    if isinstance(port, int) and not ports:
        return port  # a headless Service without ports: the number given
    return None


def from_pods(pods: Iterable[Obj], port: int | str, nodes: Mapping[str, Obj],
              capacity: Capacity | None = None) -> Found:
    """The endpoints of pods picked by a label selector."""
    b = _Builder(nodes, capacity)
    for pod in pods:
        meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, \
            pod.get("status") or {}
        name = meta.get("name", "?")
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in status.get("conditions") or [])
        health = _health(ready, ready, meta.get("deletionTimestamp") is not None)
        if health is None:
            continue
        address = status.get("podIP")
        if not address:
            b.notes.append(f"pod {name} has no IP yet")
            continue
        number = port if isinstance(port, int) else _container_port(spec, port)
        if number is None:
            b.notes.append(f"pod {name} has no container port named {port}")
            continue
        b.add(address, number, health, meta.get("labels") or {}, spec.get("nodeName"), None)
    return b.result()


def _container_port(spec: Obj, name: str) -> int | None:
    for container in spec.get("containers") or []:
        for p in container.get("ports") or []:
            if p.get("name") == name and p.get("containerPort"):
                return int(p["containerPort"])
    return None

"""Routing tests' world: simulated pods, Sluice in this event loop, one real Envoy.

The service ``chat`` has one version ``v1`` over the pods; each test passes the
``spec`` fields it is about (``loadBalancing``, ``offline``, ...). Envoy is
bootstrapped by ``sluice bootstrap``'s code, so it sends load reports (LRS) to
Sluice and announces its admin address.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.podsim import PodSpec, start_pods
from controlplane.podsim.server import Pods
from tests.integration.conftest import EnvoyFactory
from tests.integration.harness import LOCALHOST, EnvoyProcess, Reply, async_wait_for, free_port
from tests.integration.xds_env import ConfigDir, InProcessControlPlane, start_envoy


def pod(**kw: Any) -> PodSpec:
    kw.setdefault("default_max_tokens", 4)
    return PodSpec(service="chat", version="v1", **kw)


Versions = Sequence[tuple[str, int, Sequence[int]]]  # (name, weight, indexes of its pods)


def chat_doc(pods: Pods, listener: int, spec: dict[str, Any],
             endpoint_extra: Sequence[dict[str, Any]] = (),
             versions: Versions = ()) -> dict[str, Any]:
    endpoints = [{"address": LOCALHOST, "port": p.spec.port} for p in pods]
    for endpoint, extra in zip(endpoints, endpoint_extra, strict=False):
        endpoint.update(extra)
    split = versions or [("v1", 100, range(len(endpoints)))]
    body = {"listener": {"address": LOCALHOST, "port": listener},
            "versions": [{"name": name, "weight": weight,
                          "endpoints": [endpoints[i] for i in members]}
                         for name, weight, members in split], **spec}
    return {"apiVersion": "sluice.dev/v1alpha1", "kind": "ModelService",
            "metadata": {"name": "chat"}, "spec": body}


@dataclass
class RoutingWorld:
    pods: Pods
    config: ConfigDir
    sluice: InProcessControlPlane
    envoy: EnvoyProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}/v1/chat/completions"

    def weights(self, cluster: str = "chat/v1") -> dict[int, int]:
        """Port -> the weight Envoy runs for that pod."""
        found = self.envoy.clusters().get(cluster)
        return {h.port: h.weight for h in found.hosts} if found else {}

    def port_of(self, i: int) -> int:
        return self.pods[i].spec.port


def by_pod(replies: Sequence[Reply]) -> Counter[str | None]:
    return Counter(r.pod for r in replies if r.status == 200)


@contextlib.asynccontextmanager
async def routing_world(tmp_path: Path, envoy_factory: EnvoyFactory, specs: Sequence[PodSpec],
                        spec: dict[str, Any],
                        endpoint_extra: Sequence[dict[str, Any]] = (),
                        versions: Versions = ()) -> AsyncIterator[RoutingWorld]:
    """The pods, Sluice serving ``spec`` over ``versions`` (one version ``v1`` of
    every pod unless given), and an Envoy that runs every pod."""
    clusters = [f"chat/{name}" for name, _, _ in versions] or ["chat/v1"]
    listener = free_port()
    async with start_pods(specs) as pods:
        config = ConfigDir(tmp_path / "config")
        config.write(chat_doc(pods, listener, spec, endpoint_extra, versions),
                     name="chat.yaml")
        async with InProcessControlPlane(config) as sluice:
            envoy = await start_envoy(envoy_factory, "gw", sluice.xds_port, delta=False)
            world = RoutingWorld(pods, config, sluice, envoy, listener)
            await async_wait_for(
                lambda: sum(len(world.weights(c)) for c in clusters) == len(specs), 15,
                what=f"{', '.join(clusters)} with every pod on Envoy")
            yield world

"""Kubernetes mode end to end: pods from the API server double, Sluice, a real Envoy, load.

Pods join (not ready, then ready), terminate (draining while their requests
finish, then deleted), and lose readiness, under steady traffic through Envoy:
not one request fails. Simulated pods all listen on 127.0.0.1, each on its own
port, named ``http`` in the pod spec (the ModelService says ``port: http``).
"""

from __future__ import annotations

import json
from pathlib import Path

from controlplane.model import cluster_name
from controlplane.podsim import start_pods
from tests.integration.conftest import EnvoyFactory
from tests.integration.experiments_env import Load, chat_url, pod
from tests.integration.harness import EnvoyProcess, async_wait_for, free_port
from tests.integration.xds_env import start_envoy
from tests.kube.apiserver import ApiServer
from tests.kube.env import Replica, model_service, sim_pod

CLUSTER = cluster_name("chat", "v1")


def hosts(envoy: EnvoyProcess) -> dict[int, str]:
    """Port → Envoy's EDS health of each host of chat/v1."""
    found = envoy.clusters().get(CLUSTER)
    if found is None:
        return {}
    return {h.port: str(h.health.get("eds_health_status", "HEALTHY")) for h in found.hosts}


async def test_pods_come_and_go_under_traffic_without_a_failed_request(
        tmp_path: Path, envoy_factory: EnvoyFactory) -> None:
    listener = free_port()
    with ApiServer(bookmark_interval=0.2) as api:
        async with start_pods([pod("v1"), pod("v1"), pod("v1")]) as sims:
            p1, p2, p3 = (s.spec.port for s in sims)
            api.put(sim_pod("p1", p1))
            api.put(sim_pod("p2", p2))
            api.put(model_service("chat", listener, [
                {"name": "v1", "weight": 100, "endpoints": {"kubernetes": {
                    "selector": {"app": "chat", "version": "v1"}, "port": "http"}}}]))
            async with Replica(api.url, "r1") as sluice:
                envoy = await start_envoy(envoy_factory, "gw", sluice.app.xds_port, delta=False)
                await envoy.async_wait_for(lambda: set(hosts(envoy)) == {p1, p2}, 20,
                                           what="p1 and p2 in Envoy")
                clusters = json.dumps(envoy.config_dump(resource="dynamic_active_clusters"))
                assert "slow_start_config" in clusters  # pods that join ramp up
                load = Load([chat_url(listener)], rate=60, concurrency=6,
                            max_seconds=90).start()
                await async_wait_for(lambda: len(load.replies) >= 30, 20, what="traffic")

                api.put(sim_pod("p3", p3, ready=False))  # joins, not ready yet
                await async_wait_for(lambda: len(load.replies) >= 60, 20, what="traffic")
                assert set(hosts(envoy)) == {p1, p2}
                api.put(sim_pod("p3", p3))  # ready: serves
                await envoy.async_wait_for(lambda: set(hosts(envoy)) == {p1, p2, p3}, 20,
                                           what="p3 joins")

                api.put(sim_pod("p1", p1, terminating=True))  # terminating: drains
                await envoy.async_wait_for(lambda: hosts(envoy).get(p1) == "DRAINING", 20,
                                           what="p1 draining")
                await async_wait_for(lambda: len(load.replies) >= 150, 30, what="traffic")
                api.remove("Pod", "models", "p1")  # gone once its requests finished
                await envoy.async_wait_for(lambda: set(hosts(envoy)) == {p2, p3}, 20,
                                           what="p1 removed")
                assert sims[0].listener is not None
                await sims[0].listener.stop()  # its process ends

                api.put(sim_pod("p2", p2, ready=False))  # loses readiness
                await envoy.async_wait_for(lambda: set(hosts(envoy)) == {p3}, 20,
                                           what="p2 out")
                served_by_p3 = sum(sims[2].responses.values())
                await async_wait_for(lambda: sum(sims[2].responses.values()) >= served_by_p3 + 30,
                                     30, what="p3 serving alone")
                replies = await load.stop()
            failed = [r for r in replies if r.status != 200]
            assert len(replies) > 200 and not failed, failed[:5]

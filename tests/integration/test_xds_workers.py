"""``sluice serve --workers 2``: two processes accept xDS streams on one port.

- real Envoys (SotW and Delta) and raw ADS clients spread over both processes
  all reach SYNCED on one content-hash version per type; /api/v1/proxies and
  the metrics show every stream, whichever process serves it; NACKs sent to
  either process show up; a weight change reaches every Envoy;
- a worker process SIGKILLed is started again, Envoy keeps serving meanwhile,
  and every proxy is SYNCED again, on a config changed after the restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.integration.conftest import EnvoyFactory
from tests.integration.harness import LOCALHOST, DemoUpstreams, async_wait_for, free_port
from tests.integration.xds_env import (
    ConfigDir,
    InProcessControlPlane,
    TrafficLoop,
    chat_url,
    get_json,
    get_text,
    route_weights,
    service_doc,
    start_envoy,
    traffic,
    ver,
    wait_serving,
    wait_workers,
    wanted_weights,
)
from xds._wire import wire_pb2

pytestmark = pytest.mark.integration

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
SOTW = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
RAW_CLIENTS = 24  # one connection each: all on one process has odds of 2^-23


class RawClient:
    """One SotW stream on its own connection: asks for clusters, then NACKs them."""

    def __init__(self, port: int, node_id: str) -> None:
        self.channel = grpc.aio.insecure_channel(
            f"{LOCALHOST}:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        self.node_id = node_id
        self.requests: asyncio.Queue[bytes] = asyncio.Queue()
        self.responses: asyncio.Queue[Any] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _requests(self) -> AsyncIterator[bytes]:
        while True:
            yield await self.requests.get()

    async def _run(self) -> None:
        call = self.channel.stream_stream(SOTW)(self._requests())
        async for raw in call:
            self.responses.put_nowait(wire_pb2.DiscoveryResponseView.FromString(raw))

    async def start(self) -> Any:
        node = wire_pb2.NodeView(id=self.node_id, cluster="raw").SerializeToString()
        self.requests.put_nowait(wire_pb2.DiscoveryRequestView(
            node=node, type_url=CLUSTER_TYPE).SerializeToString())
        self.task = asyncio.create_task(self._run())
        return await asyncio.wait_for(self.responses.get(), 30)

    def nack(self, response: Any) -> None:
        self.requests.put_nowait(wire_pb2.DiscoveryRequestView(
            type_url=CLUSTER_TYPE, response_nonce=response.nonce,
            error_detail=wire_pb2.StatusView(code=3, message=f"{self.node_id} refuses"),
        ).SerializeToString())

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.channel.close()


async def test_streams_on_both_processes_form_one_fleet(
        tmp_path: Path, envoy_factory: EnvoyFactory, demo_upstreams: DemoUpstreams) -> None:
    v1, v2 = (await demo_upstreams.start("v1", "v2")).specs
    listen = free_port()
    config = ConfigDir(tmp_path / "conf")
    config.write(service_doc("chat", listen, [ver("v1", 90, v1.port), ver("v2", 10, v2.port)]))
    async with InProcessControlPlane(config, workers=2) as cp:
        envoys = [await start_envoy(envoy_factory, f"gw-{i}", cp.xds_port, delta=i == 1)
                  for i in range(2)]
        await wait_serving(chat_url(listen))
        clients = [RawClient(cp.xds_port, f"raw-{i:02d}") for i in range(RAW_CLIENTS)]
        try:
            firsts = [await c.start() for c in clients]
            # Every process serves the same bytes under the same version.
            assert len({(f.version_info, tuple(f.resources)) for f in firsts}) == 1
            for client, first in zip(clients, firsts, strict=True):
                client.nack(first)

            async def nacked() -> list[dict[str, Any]] | None:
                raw = [p for p in await cp.proxies() if p["id"].startswith("raw-")]
                done = len(raw) == RAW_CLIENTS and all(
                    p["types"][0]["status"] == "NACKED" for p in raw)
                return raw if done else None

            raw = await async_wait_for(nacked, 20, interval=0.2, what="every raw client NACKED")
            assert {p["worker"] for p in raw} == {0, 1}
            await filtered_listings(cp, raw)
            assert {p["types"][0]["lastNack"] for p in raw} == {
                f"raw-{i:02d} refuses" for i in range(RAW_CLIENTS)}
            async def counted() -> bool:
                nacks = await cp.metric("sluice_xds_nacks_total",
                                        {"type": "Cluster", "variant": "sotw"})
                streams = await cp.metric("sluice_xds_connected_proxies")
                return nacks == RAW_CLIENTS and streams == RAW_CLIENTS + 2

            await async_wait_for(counted, 10, interval=0.2, what="metrics of both processes")

            # A weight change reaches both Envoys, wherever they are served.
            config.write(service_doc("chat", listen,
                                     [ver("v1", 30, v1.port), ver("v2", 70, v2.port)]))
            want = wanted_weights("chat", {"v1": 30, "v2": 70})
            for envoy in envoys:
                await envoy.async_wait_for(lambda e=envoy: route_weights(e, "chat") == want,
                                           10, what="30/70")
            for i in range(2):
                await cp.wait_synced(f"gw-{i}")
            gateways = [p for p in await cp.proxies() if p["id"].startswith("gw-")]
            for type_index in range(4):
                assert len({p["types"][type_index]["versionAcked"] for p in gateways}) == 1
        finally:
            for c in clients:
                await c.close()


async def filtered_listings(cp: InProcessControlPlane, raw: list[dict[str, Any]]) -> None:
    """/api/v1/proxies filters every process's streams alike (raw clients: all NACKED)."""
    base = cp.admin_url + "/api/v1/proxies"
    by_process = {p["worker"]: p["id"] for p in raw}  # one raw client on each process
    picked = sorted(by_process.values())
    doc = await get_json(f"{base}?node={picked[0]}&node={picked[1]}")
    assert [p["id"] for p in doc["proxies"]] == picked and doc["total"] == 2
    assert {p["worker"] for p in doc["proxies"]} == {0, 1}
    doc = await get_json(f"{base}?cluster=raw&synced=false")
    assert doc["total"] == RAW_CLIENTS
    assert sorted(p["id"] for p in doc["proxies"]) == sorted(p["id"] for p in raw)
    assert (await get_json(f"{base}?cluster=raw&synced=true"))["total"] == 0
    doc = await get_json(f"{base}?cluster=raw&limit=5")
    assert [p["id"] for p in doc["proxies"]] == [f"raw-{i:02d}" for i in range(5)]
    assert doc["total"] == RAW_CLIENTS
    for bad, says in (("limit=0", "limit"), ("synced=yes", "synced"), ("nodes=x", "'nodes'")):
        status, text = await get_text(f"{base}?{bad}")
        assert status == 400 and says in text, (bad, status, text)


async def test_a_killed_worker_comes_back_and_its_proxies_resync(
        tmp_path: Path, envoy_factory: EnvoyFactory, demo_upstreams: DemoUpstreams) -> None:
    v1, v2 = (await demo_upstreams.start("v1", "v2")).specs
    listen = free_port()
    url = chat_url(listen)
    config = ConfigDir(tmp_path / "conf")
    config.write(service_doc("chat", listen, [ver("v1", 80, v1.port), ver("v2", 20, v2.port)]))
    async with InProcessControlPlane(config, workers=2) as cp:
        pool = cp.app.pool
        assert pool is not None
        envoys = [await start_envoy(envoy_factory, f"gw-{i}", cp.xds_port, delta=i % 2 == 1)
                  for i in range(4)]
        await wait_serving(url)
        for i in range(4):
            await cp.wait_synced(f"gw-{i}")
        old_pid = pool.workers[1].process.pid
        loop = TrafficLoop(url, concurrency=4, max_requests=2_000, max_seconds=8)
        async with traffic(loop):
            await asyncio.sleep(0.3)
            os.kill(old_pid, signal.SIGKILL)
            await async_wait_for(
                lambda: 1 in pool.workers and pool.workers[1].process.pid != old_pid
                and pool.workers[1].listening, 30, what="worker 1 started again")
        assert loop.failures() == [], loop.failures()[:5]
        await wait_workers(cp.app)
        config.write(service_doc("chat", listen, [ver("v1", 50, v1.port), ver("v2", 50, v2.port)]))
        want = wanted_weights("chat", {"v1": 50, "v2": 50})
        for envoy in envoys:
            await envoy.async_wait_for(lambda e=envoy: route_weights(e, "chat") == want, 30,
                                       what="50/50 after the restart")

        async def all_synced() -> bool:
            proxies = await cp.proxies()
            return sorted(p["id"] for p in proxies) == [f"gw-{i}" for i in range(4)] and all(
                p["synced"] for p in proxies)

        await async_wait_for(all_synced, 30, interval=0.2, what="every Envoy SYNCED once more")

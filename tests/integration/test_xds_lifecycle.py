"""Config lifecycle against a real Envoy, over SotW and Delta ADS.

- a config Envoy rejects is NACKed once, not resent in a loop, shown in
  ``/api/v1/proxies`` and counted; the last good config keeps serving; a fix
  syncs again;
- the control plane SIGKILLed: Envoy keeps serving; restarted on the same
  port: Envoy reconnects and is SYNCED;
- a YAML edit reaches Envoy within 2 s;
- two Envoys (SotW and Delta) stay served and SYNCED while a client sends
  garbage on the ADS methods.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.integration.conftest import EnvoyFactory
from tests.integration.harness import (
    LOCALHOST,
    DemoUpstreams,
    EnvoyProcess,
    free_port,
    send_requests,
)
from tests.integration.xds_env import (
    MODES,
    ConfigDir,
    InProcessControlPlane,
    SubprocessControlPlane,
    TrafficLoop,
    chat_url,
    route_weights,
    service_doc,
    start_envoy,
    traffic,
    ver,
    wait_serving,
    wanted_weights,
    xds_trouble,
)

pytestmark = pytest.mark.integration

EDIT_DEADLINE_S = 2.0  # functional requirement: a YAML edit reaches Envoy within 2 s


def variant(delta: bool) -> str:
    return "delta" if delta else "sotw"


async def all_ok(url: str, n: int = 40) -> None:
    replies = await send_requests(url, n, concurrency=4)
    assert [r for r in replies if r.status != 200] == []


# --------------------------------------------------------------------------- NACK


@MODES
async def test_rejected_config_is_nacked_once_and_last_good_keeps_serving(
    delta: bool, tmp_path: Path, envoy_factory: EnvoyFactory, demo_upstreams: DemoUpstreams
) -> None:
    """A listener on a port another socket holds: valid for Sluice, rejected by Envoy."""
    (v1,) = (await demo_upstreams.start("v1")).specs
    good_port = free_port()
    config = ConfigDir(tmp_path / "conf")
    chat = service_doc("chat", good_port, [ver("v1", 100, v1.port)])
    config.write(chat)

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind((LOCALHOST, 0))
        holder.listen()
        taken = holder.getsockname()[1]

        async with InProcessControlPlane(config) as cp:
            envoy = await start_envoy(envoy_factory, "nacker", cp.xds_port, delta=delta)
            await wait_serving(chat_url(good_port))
            await cp.wait_synced("nacker")
            rejected_before = envoy.stat("listener_manager.lds.update_rejected")
            assert rejected_before == 0

            config.write(chat, service_doc("blocked", taken, [ver("v1", 100, v1.port)]))

            async def listener_nacked() -> dict[str, Any] | None:
                p = await cp.proxy("nacker")
                types = {t["type"]: t for t in p["types"]} if p else {}
                lds = types.get("envoy.config.listener.v3.Listener")
                return lds if lds and lds["status"] == "NACKED" else None

            lds = await envoy.async_wait_for(listener_nacked, 10, what="Listener NACKED")
            assert lds["lastNack"], lds
            assert str(taken) in lds["lastNack"], lds["lastNack"]
            await envoy.async_wait_for(
                lambda: envoy.stat("listener_manager.lds.update_rejected") >= 1, 5, what="rejected"
            )
            labels = {"type": "Listener", "variant": variant(delta)}
            pushes = await cp.metric("sluice_xds_pushes_total", labels)

            # Not resent in a loop: nothing moves while the config stays as it is.
            await asyncio.sleep(2.0)
            assert envoy.stat("listener_manager.lds.update_rejected") == 1
            assert await cp.metric("sluice_xds_nacks_total", labels) == 1
            assert await cp.metric("sluice_xds_pushes_total", labels) == pushes
            lds = await listener_nacked()
            assert lds is not None, "the NACK is no longer visible in /api/v1/proxies"

            # The last good config keeps serving.
            await all_ok(chat_url(good_port))
            assert "blocked/listener" not in listener_names(envoy)

            # Fix the config: the blocked service moves to a free port.
            fixed_port = free_port()
            config.write(chat, service_doc("blocked", fixed_port, [ver("v1", 100, v1.port)]))
            await wait_serving(chat_url(fixed_port))
            proxy = await cp.wait_synced("nacker")
            assert all(t["status"] == "SYNCED" for t in proxy["types"]), proxy
            await all_ok(chat_url(good_port))
            assert envoy.stat("listener_manager.lds.update_rejected") == 1
            assert await cp.metric("sluice_xds_nacks_total", labels) == 1
            assert xds_trouble(envoy) == {"listener_manager.lds.update_rejected": 1}


def listener_names(envoy: EnvoyProcess) -> set[str]:
    dump = envoy.config_dump(resource="dynamic_listeners")
    return {c["name"] for c in dump.get("configs", []) if c.get("active_state")}


# --------------------------------------------------------------------------- kill / restart


@MODES
async def test_control_plane_killed_envoy_keeps_serving_and_resyncs_on_restart(
    delta: bool, tmp_path: Path, envoy_factory: EnvoyFactory, demo_upstreams: DemoUpstreams
) -> None:
    v1, v2 = (await demo_upstreams.start("v1", "v2")).specs
    listen = free_port()
    url = chat_url(listen)
    config = ConfigDir(tmp_path / "conf")
    config.write(service_doc("chat", listen, [ver("v1", 80, v1.port), ver("v2", 20, v2.port)]))
    cp = SubprocessControlPlane(config, tmp_path / "sluice.log")
    try:
        await cp.start()
        envoy = await start_envoy(envoy_factory, "survivor", cp.xds_port, delta=delta)
        await wait_serving(url)
        await cp.wait_synced("survivor")
        assert envoy.stat("control_plane.connected_state") == 1

        loop = TrafficLoop(url, concurrency=4, max_requests=3_000, max_seconds=10)
        async with traffic(loop):
            await asyncio.sleep(0.3)
            cp.kill()
            killed_at = time.monotonic()
            await envoy.async_wait_for(
                lambda: envoy.stat("control_plane.connected_state") == 0, 5, what="disconnected"
            )
            await asyncio.sleep(max(0.0, killed_at + 2.0 - time.monotonic()))
        after_kill = loop.since(killed_at)
        assert loop.failures() == [], loop.failures()[:5]
        assert len(after_kill) >= 50, f"only {len(after_kill)} requests after the kill"
        assert loop.last_at >= killed_at + 1.9, "traffic stopped early"
        assert {r.version for r in after_kill} == {"v1", "v2"}

        restarted_at = time.monotonic()
        await cp.start()  # same xDS and admin ports
        await envoy.async_wait_for(
            lambda: envoy.stat("control_plane.connected_state") == 1, 30, what="reconnected"
        )
        print(f"reconnected {time.monotonic() - restarted_at:.2f} s after the restart began")
        proxy = await cp.wait_synced("survivor", timeout=10)
        assert proxy["variant"] == variant(delta)
        await all_ok(url)

        # The new stream carries updates.
        config.write(service_doc("chat", listen, [ver("v1", 50, v1.port), ver("v2", 50, v2.port)]))
        want = wanted_weights("chat", {"v1": 50, "v2": 50})
        await envoy.async_wait_for(lambda: route_weights(envoy, "chat") == want, 10, what="50/50")
        await cp.wait_synced("survivor")
        assert xds_trouble(envoy) == {}
    except BaseException:
        print(cp.log())
        raise
    finally:
        cp.close()


# --------------------------------------------------------------------------- edit latency


@MODES
async def test_yaml_edit_reaches_envoy_within_two_seconds(
    delta: bool, tmp_path: Path, envoy_factory: EnvoyFactory, demo_upstreams: DemoUpstreams
) -> None:
    v1, v2 = (await demo_upstreams.start("v1", "v2")).specs
    listen = free_port()
    config = ConfigDir(tmp_path / "conf")

    def write(w1: int) -> float:
        return config.write(
            service_doc("chat", listen, [ver("v1", w1, v1.port), ver("v2", 100 - w1, v2.port)])
        )

    write(90)
    async with InProcessControlPlane(config) as cp:
        envoy = await start_envoy(envoy_factory, "editor", cp.xds_port, delta=delta)
        await wait_serving(chat_url(listen))
        await cp.wait_synced("editor")

        latencies = []
        for w1 in (60, 30):
            want = wanted_weights("chat", {"v1": w1, "v2": 100 - w1})
            written = write(w1)
            seen = None
            while time.monotonic() - written < 5.0:
                # Off the event loop, so the in-process control plane is not held up.
                if await asyncio.to_thread(route_weights, envoy, "chat") == want:
                    seen = time.monotonic()
                    break
                await asyncio.sleep(0.05)
            assert seen is not None, f"{want} not in Envoy 5 s after the edit\n{envoy.log_tail()}"
            latencies.append(seen - written)
            await cp.wait_synced("editor")
        assert xds_trouble(envoy) == {}

    print(f"edit → Envoy: {', '.join(f'{t:.3f}' for t in latencies)} s")
    assert max(latencies) <= EDIT_DEADLINE_S, f"edit → Envoy took {latencies} s"


# --------------------------------------------------------------------------- abusive client


async def garbage_call(port: int, method: str, payload: bytes) -> grpc.StatusCode:
    """Send ``payload`` (not a valid request) on an ADS method; the status it ended with."""
    async with grpc.aio.insecure_channel(f"{LOCALHOST}:{port}") as channel:
        call = channel.stream_stream(
            f"/envoy.service.discovery.v3.AggregatedDiscoveryService/{method}",
            request_serializer=None,
            response_deserializer=None,
        )

        async def requests() -> AsyncIterator[bytes]:
            yield payload
            await asyncio.sleep(5)  # keep the stream open: the server must end it

        try:
            async with asyncio.timeout(5):
                async for _ in call(requests()):
                    pass
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


def served_by(envoy: EnvoyProcess) -> int:
    return envoy.stat("http.chat.downstream_rq_2xx")


async def test_abusive_client_does_not_disturb_sotw_and_delta_envoys(
    tmp_path: Path, envoy_factory: EnvoyFactory, demo_upstreams: DemoUpstreams
) -> None:
    """Both Envoys bind the service's listener (Envoy sets SO_REUSEPORT), so the
    kernel spreads new connections over the two; each answers some."""
    v1, v2 = (await demo_upstreams.start("v1", "v2")).specs
    listen = free_port()
    url = chat_url(listen)
    config = ConfigDir(tmp_path / "conf")
    config.write(service_doc("chat", listen, [ver("v1", 50, v1.port), ver("v2", 50, v2.port)]))
    async with InProcessControlPlane(config) as cp:
        envoys = {
            "envoy-sotw": await start_envoy(envoy_factory, "envoy-sotw", cp.xds_port, delta=False),
            "envoy-delta": await start_envoy(envoy_factory, "envoy-delta", cp.xds_port, delta=True),
        }
        await wait_serving(url)
        for node in envoys:
            await cp.wait_synced(node)
        assert cp.app.xds.active_streams == 2
        errors_before = await cp.metric("sluice_xds_stream_errors_total")

        garbage = [
            ("StreamAggregatedResources", b"\x0a\xff\xff\xff\xff\x0f"),  # truncated field
            ("DeltaAggregatedResources", b"\xff\xff\xff\xff"),  # not protobuf at all
            ("StreamAggregatedResources", b""),  # an empty request: no node, no type
            ("DeltaAggregatedResources", b""),
        ]
        async with traffic(
            TrafficLoop(url, lambda i: {"connection": "close"}, concurrency=4, max_seconds=10)
        ) as loop:
            codes = await asyncio.gather(
                *(garbage_call(cp.xds_port, method, data) for method, data in garbage)
            )
            # An edit while the garbage was sent still reaches both Envoys.
            config.write(
                service_doc("chat", listen, [ver("v1", 70, v1.port), ver("v2", 30, v2.port)])
            )
            want = wanted_weights("chat", {"v1": 70, "v2": 30})
            for envoy in envoys.values():
                await envoy.async_wait_for(lambda e=envoy: route_weights(e, "chat") == want, 10)
            await asyncio.sleep(0.3)

        assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * len(garbage)
        assert loop.failures() == [], loop.failures()[:5]
        assert len(loop.replies) >= 20
        for node, envoy in envoys.items():
            proxy = await cp.wait_synced(node)
            assert proxy["variant"] == ("delta" if "delta" in node else "sotw")
            assert served_by(envoy) > 0, f"{node} served nothing"
            assert envoy.stat("control_plane.connected_state") == 1
            assert xds_trouble(envoy) == {}
        await cp.async_wait_for_streams(2)
        assert await cp.metric("sluice_xds_stream_errors_total") - errors_before == len(garbage)
        assert {p["id"] for p in await cp.proxies()} == set(envoys)

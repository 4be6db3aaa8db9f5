"""mTLS on the xDS port with real Envoys: the right certificate gets its config, a
certificate for another node gets nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controlplane.app import App, ServeOptions
from tests.integration.conftest import EnvoyFactory
from tests.integration.harness import LOCALHOST, async_wait_for, free_port
from tests.integration.xds_env import (
    ConfigDir,
    get_json,
    get_text,
    service_doc,
    ver,
    wait_workers,
)
from tests.unit.xds.certs import Authority
from xds.bootstrap import ClientTls, render_bootstrap
from xds.tls import TlsFiles


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
async def test_envoys_present_certificates_and_only_their_node_is_served(
        tmp_path: Path, envoy_factory: EnvoyFactory, workers: int) -> None:
    ca = Authority(tmp_path, "ca")
    server = ca.issue("sluice", dns=("localhost",))
    good = ca.issue("gw-good", dns=("gw-good",))
    config = ConfigDir(tmp_path / "config")
    config.write(service_doc("chat", free_port(), [ver("v1", 100, 1)]))
    options = ServeOptions((str(config.path),), f"{LOCALHOST}:0", f"{LOCALHOST}:0",
                           tls=TlsFiles(str(server.cert), str(server.key), str(ca.path)),
                           workers=workers)
    app = App(options)
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(app.run(stop, started))
    try:
        await asyncio.wait_for(started.wait(), 15)
        await async_wait_for(lambda: app.store.ready, 10, what="config loaded")
        await wait_workers(app)  # each process checks certificates on its own streams
        admin = f"http://{LOCALHOST}:{app.admin_port}"
        envoy = envoy_factory(render_bootstrap(
            "gw-good", LOCALHOST, app.xds_port, LOCALHOST, free_port(),
            tls=ClientTls(str(good.cert), str(good.key), str(ca.path))), start=False)
        await envoy.await_ready()
        impostor = envoy_factory(render_bootstrap(  # gw-good's certificate, another node id
            "gw-other", LOCALHOST, app.xds_port, LOCALHOST, free_port(),
            tls=ClientTls(str(good.cert), str(good.key), str(ca.path))), start=False)

        async def good_synced() -> bool:
            proxies = (await get_json(f"{admin}/api/v1/proxies"))["proxies"]
            return any(p["id"] == "gw-good" and p["synced"] for p in proxies)

        await async_wait_for(good_synced, 15, what="gw-good SYNCED over mTLS")
        await asyncio.sleep(3)  # the impostor keeps trying and keeps being refused
        proxies = (await get_json(f"{admin}/api/v1/proxies"))["proxies"]
        assert {p["id"] for p in proxies} == {"gw-good"}
        assert impostor.stat("control_plane.connected_state") == 0
        status, text = await get_text(f"{admin}/metrics")
        assert status == 200
        assert 'sluice_xds_stream_errors_total{reason="PermissionDenied"}' in text
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)

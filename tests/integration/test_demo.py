"""``python -m controlplane.demo`` end to end, on free ports (needs the app and bootstrap)."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.harness import envoy_binary, free_port, send_requests

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _available(module: str, attr: str) -> bool:
    try:
        return hasattr(importlib.import_module(module), attr)
    except ImportError:
        return False


def _config_on_free_ports(src: Path, dst: Path) -> dict[str, int]:
    """Copy the examples with every port replaced; returns service -> listener port."""
    listeners: dict[str, int] = {}
    for path in sorted(src.glob("*.yaml")):
        docs: list[Any] = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for doc in docs:
            spec = doc["spec"]
            spec["listener"]["port"] = listeners[doc["metadata"]["name"]] = free_port()
            for version in spec["versions"]:
                for ep in version.get("endpoints", []):
                    ep["port"] = free_port()
        (dst / path.name).write_text(yaml.safe_dump_all(docs))
    return listeners


@pytest.mark.skipif(
    not (
        _available("controlplane.app", "run_server")
        and _available("xds.bootstrap", "render_bootstrap")
    ),
    reason="controlplane.app.run_server / xds.bootstrap.render_bootstrap not written yet",
)
@pytest.mark.skipif(envoy_binary() is None, reason="envoy binary not installed")
async def test_demo_serves_traffic_and_stops_on_sigterm(tmp_path: Path) -> None:
    conf = tmp_path / "services"
    conf.mkdir()
    listeners = _config_on_free_ports(ROOT / "examples" / "services", conf)
    env = {
        **os.environ,
        "SLUICE_DEMO_CONFIG": str(conf),
        "SLUICE_DEMO_XDS_ADDRESS": f"127.0.0.1:{free_port()}",
        "SLUICE_DEMO_ADMIN_ADDRESS": f"127.0.0.1:{free_port()}",
        "SLUICE_DEMO_ENVOY_ADMIN": f"127.0.0.1:{free_port()}",
        "SLUICE_DEMO_WORKDIR": str(tmp_path / "work"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controlplane.demo",
        cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output: list[str] = []
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(40):
            while not output or "Press Ctrl-C" not in output[-1]:
                line = await proc.stdout.readline()
                assert line, "demo exited early:\n" + "".join(output)
                output.append(line.decode())

        chat = await send_requests(f"http://127.0.0.1:{listeners['chat']}/v1/chat/completions", 20)
        assert {r.status for r in chat} == {200}, chat
        assert {r.version for r in chat} <= {"v1", "v2"}

        sessions = await send_requests(
            f"http://127.0.0.1:{listeners['sessions']}/",
            10,
            lambda i: {"x-session-id": "alice"},
            concurrency=1,  # bounded load (1.25) may spill concurrent requests
            method="GET",
        )
        assert {r.status for r in sessions} == {200}, sessions
        assert len({r.pod for r in sessions}) == 1

        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            rest = await proc.stdout.read()
        output.append(rest.decode())
        assert await asyncio.wait_for(proc.wait(), 5) == 0, "".join(output)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

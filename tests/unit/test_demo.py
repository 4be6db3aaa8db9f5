"""The demo's pure parts: settings from the environment, upstreams and instructions."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.config import load_paths
from controlplane.demo import DemoError, Settings, instructions, upstream_specs
from controlplane.demo_server import UpstreamSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "services"


def test_settings_defaults_and_overrides() -> None:
    assert Settings.from_env({}) == Settings()
    s = Settings.from_env(
        {
            "SLUICE_DEMO_XDS_ADDRESS": "127.0.0.1:28000",
            "SLUICE_DEMO_ADMIN_ADDRESS": "127.0.0.1:28001",
            "SLUICE_DEMO_ENVOY_ADMIN": "127.0.0.1:29901",
            "SLUICE_DEMO_CONFIG": "/tmp/conf",
        }
    )
    assert (s.xds_address, s.admin_address, s.envoy_admin, s.config) == (
        "127.0.0.1:28000",
        "127.0.0.1:28001",
        "127.0.0.1:29901",
        "/tmp/conf",
    )
    with pytest.raises(DemoError, match="SLUICE_DEMO_XDS_ADDRESS: expected HOST:PORT"):
        Settings.from_env({"SLUICE_DEMO_XDS_ADDRESS": "18000"})


def test_examples_give_five_upstreams_and_the_documented_curls() -> None:
    loaded = load_paths([EXAMPLES])
    assert loaded.state is not None, [str(e) for e in loaded.errors]
    specs = upstream_specs(loaded.state)
    assert [(s.pod, s.service, s.version) for s in specs] == [
        ("127.0.0.1:18081", "chat", "v1"),
        ("127.0.0.1:18082", "chat", "v2"),
        ("127.0.0.1:18083", "sessions", "stable"),
        ("127.0.0.1:18084", "sessions", "stable"),
        ("127.0.0.1:18085", "sessions", "canary"),
    ]
    assert all(isinstance(s, UpstreamSpec) for s in specs)
    text = instructions(loaded.state, Settings(), Path("/tmp/x"))
    lines = [line.strip() for line in text.splitlines()]
    assert "curl -s http://127.0.0.1:10000/v1/chat/completions -d '{\"messages\":[]}'" in lines
    assert "curl -s http://127.0.0.1:10001/ -H 'x-session-id: alice'" in lines
    assert "http://127.0.0.1:18001/api/v1/services" in text
    assert "http://127.0.0.1:9901/clusters" in text

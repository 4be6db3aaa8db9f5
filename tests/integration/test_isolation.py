"""One bad document freezes only itself, against a real Envoy: a foreign YAML file and
a broken service in the config directory do not stop edits of the others."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.integration.conftest import EnvoyFactory
from tests.integration.harness import DemoUpstreams, free_port
from tests.integration.xds_env import (
    ConfigDir,
    InProcessControlPlane,
    route_weights,
    service_doc,
    start_envoy,
    ver,
    wanted_weights,
)

ENVOY_BOOTSTRAP = {"node": {"id": "gw", "cluster": "x"},
                   "static_resources": {"clusters": []}}


async def test_edits_reach_envoy_while_a_foreign_file_and_a_broken_service_are_frozen(
        tmp_path: Path, envoy_factory: EnvoyFactory, demo_upstreams: DemoUpstreams) -> None:
    v1 = await demo_upstreams.start("v1")
    v2 = await demo_upstreams.start("v2")
    config = ConfigDir(tmp_path / "config")
    chat_port, other_port = free_port(), free_port()
    (config.path / "envoy.yaml").write_text(yaml.safe_dump(ENVOY_BOOTSTRAP))
    config.write(service_doc("chat", chat_port, [ver("v1", 90, v1.specs[0].port),
                                                 ver("v2", 10, v2.specs[0].port)]),
                 name="chat.yaml")
    config.write(service_doc("other", other_port, [ver("v1", 100, v1.specs[0].port)]),
                 name="other.yaml")
    async with InProcessControlPlane(config) as cp:
        envoy = await start_envoy(envoy_factory, "gw", cp.xds_port, delta=False)
        await envoy.async_wait_for(
            lambda: route_weights(envoy, "other") == wanted_weights("other", {"v1": 100}),
            10, what="other served")
        broken = service_doc("other", other_port, [ver("v1", 100, v1.specs[0].port)])
        broken["spec"]["versions"][0]["weight"] = 60  # weights must add up to 100
        config.write(broken, name="other.yaml")
        for w1 in (80, 70, 60, 50):
            config.write(service_doc("chat", chat_port, [ver("v1", w1, v1.specs[0].port),
                                                         ver("v2", 100 - w1,
                                                             v2.specs[0].port)]),
                         name="chat.yaml")
            want = wanted_weights("chat", {"v1": w1, "v2": 100 - w1})
            await envoy.async_wait_for(lambda want=want: route_weights(envoy, "chat") == want,
                                       10, what=f"chat at {w1}/{100 - w1}")
        assert route_weights(envoy, "other") == wanted_weights("other", {"v1": 100})
        services = await cp.services()
        states = {(d["kind"], d["name"]): d["state"] for d in services["documents"]}
        assert states[("ModelService", "other")] == "frozen"
        assert states[("ModelService", "chat")] == "ok"
        [source] = services["sources"]
        assert any("envoy.yaml" in w and "not a Sluice document" in w
                   for w in source["warnings"])
        assert any("weights must add up to 100" in e for e in source["errors"])

"""Has every proxy ACKed a service's current traffic? (read from the stream machines)"""

from __future__ import annotations

import time

from controlplane.rollout.sync import XdsProxyView
from tests.unit.xds.test_protocol_sotw import FakeEnvoy
from tests.unit.xds.worlds import world
from xds._wire import wire_pb2
from xds.cache import SnapshotCache
from xds.protocol import SotwStream
from xds.server import ProxyInfo, _admin_url

CLUSTERS = {"chat/v1": "c1", "chat/v2": "c2"}


def test_a_step_counts_as_applied_only_when_every_proxy_holds_it() -> None:
    cache = SnapshotCache()
    first = world(CLUSTERS, {"chat/routes": {"chat/v1": 90, "chat/v2": 10}})
    cache.set(first)
    installed = {"revision": 1}
    proxies: list[ProxyInfo] = []
    view = XdsProxyView(cache, lambda: proxies, lambda: installed["revision"])
    envoys = []
    for i in range(2):
        machine = SotwStream(first)
        proxies.append(ProxyInfo(i, f"gw-{i}", "c", "envoy", "sotw", time.time(), machine))
        envoy = FakeEnvoy(machine)
        envoy.start()
        envoys.append(envoy)
    report = view.sync("chat", ("v1", "v2"), 1)
    assert report.synced and report.proxies == ("gw-0", "gw-1")
    assert not view.sync("chat", ("v1", "v2"), 2).built  # revision 2 not installed yet
    second = world(CLUSTERS, {"chat/routes": {"chat/v1": 50, "chat/v2": 50}})
    cache.set(second)
    installed["revision"] = 2
    envoys[0].run(proxies[0].machine.on_snapshot(second))
    report = view.sync("chat", ("v1", "v2"), 2)
    assert not report.synced and report.pending == ("gw-1",)
    assert "1 of 2 proxies have not ACKed" in report.describe()
    envoys[1].run(proxies[1].machine.on_snapshot(second))
    assert view.sync("chat", ("v1", "v2"), 2).synced


def test_proxies_announce_their_admin_url_in_node_metadata() -> None:
    node = wire_pb2.NodeView(id="gw")
    assert _admin_url(node) is None
    node.metadata.update({"sluice.dev/admin": "http://127.0.0.1:9901"})
    assert _admin_url(wire_pb2.NodeView.FromString(node.SerializeToString())) == (
        "http://127.0.0.1:9901")
    node.metadata.update({"sluice.dev/admin": "file:///etc/passwd"})
    assert _admin_url(node) is None

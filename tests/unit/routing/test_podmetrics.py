"""Pod metrics from Prometheus refine response_time weights; garbage is dropped and shown."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from aiohttp import web

from controlplane.model import (
    DesiredState,
    Endpoint,
    LbPolicy,
    ListenerSpec,
    LoadBalancing,
    ModelService,
    ResponseTimeTuning,
    Version,
)
from controlplane.routing.controller import RoutingCollector, RoutingController
from controlplane.routing.podmetrics import PodLoad, fetch_pod_load, parse_vector
from controlplane.store import Store
from xds.lrs import ClusterLoad, EndpointLoad


def vector(*pairs: tuple[str, Any]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"__name__": "m", "instance": i}, "value": [1.0, v]} for i, v in pairs]}}


def test_vectors_split_good_values_from_garbage() -> None:
    good, bad = parse_vector(vector(("a:1", "2"), ("b:1", "NaN"), ("c:1", "-1"),
                                    ("d:1", "x"), ("e:1", "0.5")), 1.0)
    assert good == {"e:1": 0.5} and bad == {"a:1", "b:1", "c:1", "d:1"}  # a: above 1
    with pytest.raises(ValueError):
        parse_vector({"status": "error"}, 1.0)


async def test_fetch_asks_prometheus_for_waiting_and_kv_use() -> None:
    async def query(request: web.Request) -> web.Response:
        if request.query["query"] == "vllm:num_requests_waiting":
            return web.json_response(vector(("10.0.0.1:8000", "4"), ("10.0.0.2:8000", "0")))
        return web.json_response(vector(("10.0.0.1:8000", "0.7"), ("10.0.0.2:8000", "9")))

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        load = await fetch_pod_load(f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()
    assert load.waiting == {"10.0.0.1:8000": 4.0, "10.0.0.2:8000": 0.0}
    assert load.kv_usage == {"10.0.0.1:8000": 0.7}
    assert load.garbage == {"10.0.0.2:8000"}


def _service() -> ModelService:
    eps = (Endpoint("10.0.0.1", 8000), Endpoint("10.0.0.2", 8000), Endpoint("10.0.0.3", 8000))
    return ModelService("chat", ListenerSpec("127.0.0.1", 1), (Version("v1", 100, eps),),
                        load_balancing=LoadBalancing(LbPolicy.RESPONSE_TIME, response_time=(
                            ResponseTimeTuning(prometheus="http://127.0.0.1:9"))))


def test_a_pod_with_a_queue_loses_weight_and_garbage_shows() -> None:
    service = _service()
    store = Store(("t",))
    store._state = DesiredState((service,))
    now = [0.0]
    controller = RoutingController(store, lambda: 1, clock=lambda: now[0])
    # Same response times everywhere; only the pods' own gauges differ.
    controller.pod_load["chat"] = (0.0, PodLoad(
        waiting={"10.0.0.1:8000": 4.0, "10.0.0.2:8000": 0.0},
        kv_usage={"10.0.0.1:8000": 0.6, "10.0.0.2:8000": 0.1},
        garbage=frozenset({"10.0.0.3:8000"})))
    routing = None
    for step in range(4):
        now[0] = step * 2.0
        controller.pod_load["chat"] = (now[0], controller.pod_load["chat"][1])
        controller.on_report("gw", [ClusterLoad("chat/v1", 2.0, tuple(
            EndpointLoad(f"10.0.0.{i}:8000", 40, 40, 0, 4) for i in (1, 2, 3)))])
        routing = controller.routing_for(service, controller.window.take("chat", now[0]),
                                         now[0])
    assert routing is not None
    weights = dict(routing.weights)
    assert weights["10.0.0.1:8000"] < weights["10.0.0.2:8000"]
    assert controller.pod_states["chat"] == {
        "10.0.0.1:8000": "ok", "10.0.0.2:8000": "ok", "10.0.0.3:8000": "garbage"}
    samples = {m.name: m for m in RoutingCollector(controller).collect()}
    shown = {(s.labels["endpoint"], s.labels["state"]): s.value
             for s in samples["sluice_routing_pod_metrics"].samples}
    assert shown[("10.0.0.3:8000", "garbage")] == 1.0
    # Without Prometheus answers (or when they are stale) the pods' gauges are absent.
    controller.pod_load.pop("chat")
    controller.routing_for(dataclasses.replace(service), controller.window.take("chat", 9.0),
                           9.0)
    assert set(controller.pod_states["chat"].values()) == {"absent"}
    assert not math.isnan(weights["10.0.0.3:8000"])

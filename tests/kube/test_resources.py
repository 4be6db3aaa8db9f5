"""Custom resources go through the same loader as files: a resource with an error freezes
only what it defines, at its last good version, and the error names the resource."""

from __future__ import annotations

import asyncio
from typing import Any

from controlplane.config import LoadResult, ObjectState
from controlplane.kube.client import Kube
from controlplane.kube.resources import ResourceSource
from controlplane.kube.status import service_status
from controlplane.store import Store
from tests.kube.apiserver import ApiServer
from tests.kube.env import model_service
from tests.kube.test_informer import until


def chat(v1: int, v2: int) -> dict[str, Any]:
    return model_service("chat", 10000, [
        {"name": "v1", "weight": v1, "endpoints": [{"address": "10.0.0.1", "port": 80}]},
        {"name": "v2", "weight": v2, "endpoints": [{"address": "10.0.0.2", "port": 80}]}])


def embed(port: int) -> dict[str, Any]:
    return model_service("embed", port, [
        {"name": "v1", "weight": 100, "endpoints": [{"address": "10.0.1.1", "port": 80}]}])


async def test_a_broken_resource_freezes_only_itself(apiserver: ApiServer, kube: Kube) -> None:
    store = Store(("kubernetes",))
    loads: list[LoadResult] = []

    def on_result(result: LoadResult) -> None:
        loads.append(result)
        store.apply_load("kubernetes", result)

    source = ResourceSource(kube)
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(on_result, stop))
    try:
        apiserver.put(chat(90, 10))
        apiserver.put(embed(10001))
        await until(lambda: len(store.state.services) == 2)
        apiserver.put(chat(90, 20))  # weights add up to 110
        apiserver.put(embed(10002))  # a good edit of another resource
        await until(lambda: store.state.service("embed").listener.port == 10002)
        status = store.status_of("ModelService", "chat")
        assert status is not None and status.state is ObjectState.FROZEN
        [error] = status.errors
        assert str(error).startswith("k8s:models/ModelService/chat:")
        assert "add up to 100, got 110" in str(error)
        assert {v.name: v.weight for v in store.state.service("chat").versions} == \
            {"v1": 90, "v2": 10}  # the last good version serves
        written = service_status(store, "chat", status, "k8s:models/ModelService/chat", 2, {})
        assert written["document"]["state"] == "frozen"
        assert written["conditions"][0]["status"] == "False"
        assert written["weights"] == {"v1": 90, "v2": 10}
        apiserver.remove("ModelService", "models", "embed")
        await until(lambda: [s.name for s in store.state.services] == ["chat"])
    finally:
        stop.set()
        await task

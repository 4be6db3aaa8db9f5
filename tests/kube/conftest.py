"""Fixtures: the API server double, a client on it, and object builders."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.kube.client import Kube
from tests.kube.apiserver import ApiServer


@pytest.fixture
def apiserver() -> Iterator[ApiServer]:
    with ApiServer(bookmark_interval=0.2) as server:
        yield server


@pytest.fixture
def kube(apiserver: ApiServer) -> Iterator[Kube]:
    client = Kube.at(apiserver.url, timeout=(2.0, 5.0))
    yield client
    client.close()


def pod(name: str, ip: str | None = "10.0.0.1", *, ns: str = "models", ready: bool = True,
        labels: dict[str, str] | None = None, port: int = 8000, node: str | None = None,
        terminating: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns,
                            "labels": labels or {"app": "chat", "version": "v1"}}
    if terminating:
        meta["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    status: dict[str, Any] = {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    spec: dict[str, Any] = {"containers": [{"name": "model", "ports": [
        {"name": "http", "containerPort": port}]}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
            "status": status}


def node(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}

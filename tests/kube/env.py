"""Sluice replicas in Kubernetes mode against the API server double, and resources to feed it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from controlplane.app import App, ServeOptions
from controlplane.kube.options import KubeOptions
from tests.kube.test_informer import until

NS = "models"


def model_service(name: str, listener_port: int, versions: list[dict[str, Any]],
                  **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "sluice.dev/v1alpha1", "kind": "ModelService",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"listener": {"address": "127.0.0.1", "port": listener_port},
                     "versions": versions, **spec}}


def experiment(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "sluice.dev/v1alpha1", "kind": "Experiment",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}


def sim_pod(name: str, port: int, *, version: str = "v1", ready: bool = True,
            terminating: bool = False) -> dict[str, Any]:
    """A pod whose container port ``http`` is a simulated pod's (all on 127.0.0.1)."""
    meta: dict[str, Any] = {"name": name, "namespace": NS,
                            "labels": {"app": "chat", "version": version}}
    if terminating:
        meta["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "model", "ports": [
                {"name": "http", "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"}]}}


class Replica:
    """One ``sluice serve --kubernetes`` in this event loop (fast lease for tests)."""

    def __init__(self, api_url: str, identity: str, token_file: str | None = None) -> None:
        self.options = ServeOptions(
            (), xds_address="127.0.0.1:0", admin_address="127.0.0.1:0",
            api_token_file=token_file,
            kubernetes=KubeOptions(host=api_url, namespace="sluice", identity=identity,
                                   lease_duration_s=2.0, renew_deadline_s=1.5,
                                   retry_period_s=0.25, status_interval_s=0.2,
                                   replica_count_interval_s=0.2))
        self.app = App(self.options)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def leading(self) -> bool:
        return self.app.kube is not None and self.app.kube.leading

    async def __aenter__(self) -> Replica:
        started = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self.app.run(self._stop, started))
        await until(lambda: started.is_set() or self._task.done(), 15)  # type: ignore[union-attr]
        if self._task.done():
            self._task.result()
        await until(lambda: self.app.store.ready, 15)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 15)

    def weights(self, service: str = "chat") -> dict[str, float]:
        return {v.name: v.weight for v in self.app.store.state.service(service).versions}

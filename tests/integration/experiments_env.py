"""A whole experiment on one machine: simulated pods, Sluice, real Envoys, bounded load.

Pods are ``controlplane.podsim`` pods in this event loop; Sluice runs in-process
(or as ``sluice serve`` when a test kills it); Envoys get their config over ADS
and announce their admin address (node metadata), which is where Sluice reads
per-version stats unless a test points the experiment at Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from controlplane.app import App, ServeOptions
from controlplane.podsim import PodSpec, start_pods
from controlplane.podsim.server import Pods
from tests.integration.conftest import EnvoyFactory
from tests.integration.harness import LOCALHOST, EnvoyProcess, async_wait_for, free_port
from tests.integration.xds_env import ConfigDir, start_envoy, wait_workers

TOKEN = "integration-token-0123456789"


def service_doc(pods: Pods, listener_port: int, *, versions: Sequence[str] = ("v1", "v2"),
                hash_header: str | None = None) -> dict[str, Any]:
    """chat: v1 100 %, v2 0 % (present and warm); each version's pods as its endpoints.

    A version without pods of its own (a rolling update's candidate) lists the
    baseline's pods: Sluice moves them across as they are updated."""
    by_version: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        by_version.setdefault(pod.spec.version, []).append(
            {"address": LOCALHOST, "port": pod.spec.port})
    first = by_version[versions[0]]
    spec: dict[str, Any] = {
        "listener": {"address": LOCALHOST, "port": listener_port},
        "versions": [{"name": v, "weight": 100 if i == 0 else 0,
                      "endpoints": by_version.get(v, first)} for i, v in enumerate(versions)],
        "loadBalancing": {"policy": "least_request"},
    }
    if hash_header:
        spec["loadBalancing"] = {"policy": "maglev", "hashKey": {"header": hash_header}}
    return {"apiVersion": "sluice.dev/v1alpha1", "kind": "ModelService",
            "metadata": {"name": "chat"}, "spec": spec}


def experiment_doc(name: str = "rollout", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "service": "chat", "baseline": "v1", "candidate": "v2", "interval": "1s",
        "steps": [25, 50],
        "metrics": [{"name": "errors", "kind": "error_rate", "harmMargin": 0.25,
                     "nonInferiorityMargin": 0.25, "minEffect": 0.05, "minSamples": 60}],
        "stallBudget": "5m",
    }
    body.update(spec)
    return {"apiVersion": "sluice.dev/v1alpha1", "kind": "Experiment",
            "metadata": {"name": name}, "spec": {k: v for k, v in body.items() if v is not None}}


@dataclass
class Reply:
    sent: float
    done: float
    status: int
    version: str | None
    retry_after: str | None = None
    error: str | None = None
    wall: float = field(default_factory=time.time)  # when it was sent, wall clock


@dataclass
class Load:
    """Bounded background requests through Envoy; every reply is kept with its times."""

    urls: Sequence[str]
    rate: float = 150.0
    concurrency: int = 12
    max_seconds: float = 120.0
    headers: Mapping[str, str] = field(default_factory=dict)
    replies: list[Reply] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> Load:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        pause = self.concurrency / self.rate
        timeout = aiohttp.ClientTimeout(total=10)

        async def worker(http: aiohttp.ClientSession, k: int) -> None:
            i = k
            while not self._stop.is_set() and time.monotonic() < deadline:
                url = self.urls[i % len(self.urls)]
                i += 1
                sent, wall = time.monotonic(), time.time()
                try:
                    async with http.post(url, json={"messages": [{"role": "user",
                                                                  "content": "hi"}]},
                                         headers=dict(self.headers)) as r:
                        await r.read()
                        reply = Reply(sent, time.monotonic(), r.status,
                                      r.headers.get("x-sluice-version"),
                                      r.headers.get("retry-after"), wall=wall)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    reply = Reply(sent, time.monotonic(), 0, None, error=repr(exc), wall=wall)
                self.replies.append(reply)
                await asyncio.sleep(max(0.0, sent + pause - time.monotonic()))

        async with aiohttp.ClientSession(timeout=timeout) as http:
            await asyncio.gather(*(worker(http, k) for k in range(self.concurrency)))

    async def stop(self) -> list[Reply]:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 15)
        return self.replies

    def failed(self, allow_503_retry_after: bool = False) -> list[Reply]:
        return [r for r in self.replies if r.status != 200 and not (
            allow_503_retry_after and r.status == 503 and r.retry_after)]

    def versions(self) -> dict[str | None, int]:
        out: dict[str | None, int] = {}
        for r in self.replies:
            if r.status == 200:
                out[r.version] = out.get(r.version, 0) + 1
        return out


class Sluice:
    """Sluice in this event loop, on a config dir, with a state file and an API token."""

    def __init__(self, config: ConfigDir, workdir: Path, workers: int = 1) -> None:
        token = workdir / "token"
        token.write_text(TOKEN)
        self.options = ServeOptions(
            config_paths=(str(config.path),), xds_address=f"{LOCALHOST}:0",
            admin_address=f"{LOCALHOST}:0", state_path=str(workdir / "state.db"),
            poll_interval_s=0.1, api_token_file=str(token), workers=workers)
        self.app = App(self.options)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def admin(self) -> str:
        return f"http://{LOCALHOST}:{self.app.admin_port}"

    async def __aenter__(self) -> Sluice:
        started = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self.app.run(self._stop, started))
        await async_wait_for(lambda: started.is_set() or self._task.done(), 15,  # type: ignore[union-attr]
                             what="sluice started")
        if self._task.done():
            self._task.result()
        await async_wait_for(lambda: self.app.store.ready, 10, what="config loaded")
        await wait_workers(self.app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 15)

    async def experiment(self, name: str = "rollout") -> dict[str, Any] | None:
        async with aiohttp.ClientSession() as http, http.get(
                f"{self.admin}/api/v1/experiments/{name}") as r:
            if r.status == 404:
                return None
            r.raise_for_status()
            doc: dict[str, Any] = await r.json()
            return doc

    async def wait_phase(self, phases: set[str], timeout: float = 60.0,
                         name: str = "rollout") -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            view = await self.experiment(name)
            return view if view is not None and view["phase"] in phases else None

        try:
            return await async_wait_for(reached, timeout, interval=0.2,
                                        what=f"experiment phase in {sorted(phases)}")
        except AssertionError:
            view = await self.experiment(name)
            if view is None:
                raise
            raise AssertionError(f"phase {view['phase']}: {view['reason']}; waiting for "
                                 f"{view['waitingFor']}; judgment {view['judgment']}") from None

    async def post(self, path: str, token: str | None = TOKEN) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as http, http.post(
                f"{self.admin}{path}", headers=headers) as r:
            return r.status, await r.json()


@dataclass
class World:
    pods: Pods
    config: ConfigDir
    sluice: Sluice
    envoys: list[EnvoyProcess]
    port: int  # chat's listener on the Envoys

    @property
    def url(self) -> str:
        return chat_url(self.port)


@contextlib.asynccontextmanager
async def world(tmp_path: Path, envoy_factory: EnvoyFactory, pods: Sequence[PodSpec],
                envoys: int = 1, workers: int = 1) -> AsyncIterator[World]:
    """Pods, a config dir holding chat, Sluice, and Envoys with chat's listener up."""
    listener = free_port()
    async with start_pods(pods) as running:
        config = ConfigDir(tmp_path / "config")
        config.write(service_doc(running, listener), name="chat.yaml")
        async with Sluice(config, tmp_path, workers) as sluice:
            proxies = [await start_envoy(envoy_factory, f"gw-{i}", sluice.app.xds_port,
                                         delta=i % 2 == 1) for i in range(envoys)]
            for envoy in proxies:
                await async_wait_for(lambda e=envoy: _listening(listener), 15,
                                     what="chat listener on Envoy")
            yield World(running, config, sluice, proxies, listener)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((LOCALHOST, port)) == 0


def chat_url(port: int) -> str:
    return f"http://{LOCALHOST}:{port}/v1/chat/completions"


def pod(version: str, **kw: Any) -> PodSpec:
    return PodSpec(service="chat", version=version, default_max_tokens=4, **kw)

"""Helpers for end-to-end xDS tests: Sluice (in-process or a subprocess) + real Envoys.

Builds ModelService YAML on free ports, writes it atomically, runs the control
plane, starts Envoys bootstrapped at it (SotW or Delta ADS), reads back what
Envoy actually runs, and drives traffic. Every wait is bounded; every process
and server is stopped by the test's fixtures or context managers, also when
a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from controlplane.app import App, ServeOptions
from controlplane.demo_server import DemoServers, UpstreamSpec
from controlplane.model import cluster_name, route_config_name
from tests.integration.conftest import EnvoyFactory
from tests.integration.harness import (
    LOCALHOST,
    DemoUpstreams,
    EnvoyProcess,
    Reply,
    async_wait_for,
    free_port,
)
from xds.bootstrap import render_bootstrap

ROOT = Path(__file__).resolve().parents[2]

# Every end-to-end test runs once over SotW ADS and once over Delta ADS.
MODES = pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])

ROUTE_DUMP_TYPE = "type.googleapis.com/envoy.admin.v3.RoutesConfigDump"


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Ep:
    """One endpoint of a version in the YAML."""

    port: int
    health: str | None = None  # unknown | healthy | unhealthy | draining


@dataclass(frozen=True)
class Ver:
    name: str
    weight: int
    endpoints: tuple[Ep, ...]


def ver(name: str, weight: int, *ports: int | Ep) -> Ver:
    return Ver(name, weight, tuple(p if isinstance(p, Ep) else Ep(p) for p in ports))


def service_doc(
    name: str,
    listener_port: int,
    versions: Sequence[Ver],
    *,
    policy: str = "round_robin",
    hash_header: str | None = None,
) -> dict[str, Any]:
    """A ModelService document (DESIGN §3) with its listener on 127.0.0.1."""
    spec: dict[str, Any] = {
        "listener": {"address": LOCALHOST, "port": listener_port},
        "versions": [
            {
                "name": v.name,
                "weight": v.weight,
                "endpoints": [
                    {"address": LOCALHOST, "port": e.port}
                    | ({"health": e.health} if e.health else {})
                    for e in v.endpoints
                ],
            }
            for v in versions
        ],
        "loadBalancing": {"policy": policy},
    }
    if hash_header:
        spec["loadBalancing"]["hashKey"] = {"header": hash_header}
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": spec,
    }


class ConfigDir:
    """A watched config directory; ``write`` replaces a file atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def write(self, *docs: Mapping[str, Any], name: str = "services.yaml") -> float:
        """Write ``docs`` to ``name`` (temp file + ``os.replace``); returns the monotonic
        time right after the rename, the moment the control plane can first see it."""
        target = self.path / name
        tmp = self.path / f".{name}.tmp"  # not *.yaml: the source ignores it
        tmp.write_text(yaml.safe_dump_all([dict(d) for d in docs], sort_keys=False))
        os.replace(tmp, target)
        return time.monotonic()


# --------------------------------------------------------------------------- control plane


async def get_json(url: str, timeout: float = 5.0) -> Any:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
        http.get(url) as r,
    ):
        r.raise_for_status()
        return await r.json()


async def get_text(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(url) as r,
        ):
            return r.status, await r.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0, f"{type(exc).__name__}: {exc}"


class AdminClient:
    """The control plane's admin HTTP API (``controlplane/api.py``)."""

    admin_port: int

    @property
    def admin_url(self) -> str:
        return f"http://{LOCALHOST}:{self.admin_port}"

    async def proxies(self) -> list[dict[str, Any]]:
        doc = await get_json(self.admin_url + "/api/v1/proxies")
        return list(doc["proxies"])

    async def proxy(self, node_id: str) -> dict[str, Any] | None:
        """The newest stream of ``node_id`` (None when it is not connected)."""
        found = [p for p in await self.proxies() if p["id"] == node_id]
        return max(found, key=lambda p: p["stream"]) if found else None

    async def services(self) -> dict[str, Any]:
        doc: dict[str, Any] = await get_json(self.admin_url + "/api/v1/services")
        return doc

    async def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels``."""
        status, text = await get_text(self.admin_url + "/metrics")
        assert status == 200, text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in (labels or {}).items()
                ):
                    total += sample.value
        return total

    async def wait_synced(
        self, node_id: str, timeout: float = 10.0, types: int = 4
    ) -> dict[str, Any]:
        """Wait until ``node_id`` has acked the current snapshot for ``types`` types."""

        async def synced() -> dict[str, Any] | None:
            p = await self.proxy(node_id)
            if p and p["synced"] and len(p["types"]) >= types:
                return p
            return None

        return await async_wait_for(synced, timeout, what=f"{node_id} SYNCED")

    async def wait_snapshot_change(self, old: str, timeout: float = 5.0) -> str:
        async def changed() -> str | None:
            snap = (await self.services())["snapshot"]
            return snap if snap != old else None

        return await async_wait_for(changed, timeout, what="a new snapshot")


async def wait_workers(app: App, timeout: float = 30.0) -> None:
    """With ``workers`` > 1: until every worker process listens and serves the current
    snapshot (before that, every stream lands on the primary)."""
    pool = app.pool
    if pool is None:
        return
    await async_wait_for(
        lambda: len(pool.workers) == pool.count - 1 and all(
            w.listening and w.snapshot_version == app.cache.snapshot.version
            for w in pool.workers.values()),
        timeout, what="xDS workers serving")


class InProcessControlPlane(AdminClient):
    """``App`` running in this event loop (``async with``); ports picked by the OS."""

    def __init__(self, config: ConfigDir, xds_port: int = 0, workers: int = 1) -> None:
        self.options = ServeOptions(
            config_paths=(str(config.path),),
            xds_address=f"{LOCALHOST}:{xds_port}",
            admin_address=f"{LOCALHOST}:0",
            poll_interval_s=0.2,
            workers=workers,
        )
        self.app = App(self.options)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def xds_port(self) -> int:
        return self.app.xds_port

    async def __aenter__(self) -> InProcessControlPlane:
        started = asyncio.Event()
        self._task = asyncio.create_task(self.app.run(self._stop, started))
        waiter = asyncio.create_task(started.wait())
        try:
            done, _ = await asyncio.wait(
                {self._task, waiter}, timeout=10, return_when="FIRST_COMPLETED"
            )
        finally:
            waiter.cancel()
        if self._task in done:
            self._task.result()  # raises what the app died of
            raise RuntimeError("control plane exited during start")
        if not started.is_set():
            await self.__aexit__()
            raise TimeoutError("control plane did not start within 10 s")
        self.admin_port = self.app.admin_port
        await async_wait_for(lambda: self.app.store.ready, 5, what="store ready")
        await wait_workers(self.app)
        return self

    async def async_wait_for_streams(self, n: int, timeout: float = 5.0) -> None:
        """Wait until the server counts exactly ``n`` open ADS streams."""
        def active() -> int:
            pool = self.app.pool
            return self.app.xds.active_streams + (pool.active_streams() if pool else 0)

        await async_wait_for(lambda: active() == n, timeout,
                             what=f"{n} active streams (have {active()})")

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            task, self._task = self._task, None
            try:
                await asyncio.wait_for(task, 10)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def sluice_command() -> list[str]:
    script = Path(sys.prefix) / "bin" / "sluice"
    return [str(script)] if script.exists() else [sys.executable, "-m", "controlplane.cli"]


@dataclass(eq=False)
class SubprocessControlPlane(AdminClient):
    """``sluice serve`` as a child process (so it can be SIGKILLed); ``close()`` stops it."""

    config: ConfigDir
    log_path: Path
    xds_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()  # e.g. --state PATH
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    async def start(self, timeout: float = 15.0) -> SubprocessControlPlane:
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError("already running")
        args = [
            *sluice_command(), "serve",
            "--config", str(self.config.path),
            "--xds-address", f"{LOCALHOST}:{self.xds_port}",
            "--admin-address", f"{LOCALHOST}:{self.admin_port}",
            *self.extra_args,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

        async def ready() -> bool:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"sluice serve exited with {self._proc.returncode}\n{self.log()}"
                )
            status, _ = await get_text(self.admin_url + "/readyz", timeout=1.0)
            return status == 200

        try:
            await async_wait_for(ready, timeout, what="sluice /readyz")
        except BaseException:
            self.close()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL: no goodbye to the proxies, no cleanup."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no sluice log)"
        return "--- sluice log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- Envoy


async def start_envoy(
    envoy_factory: EnvoyFactory, node_id: str, xds_port: int, *, delta: bool
) -> EnvoyProcess:
    """An Envoy (``--concurrency 1``) on ADS to ``xds_port``, once it reports ready."""
    bootstrap = render_bootstrap(node_id, LOCALHOST, xds_port, LOCALHOST, free_port(), delta=delta)
    envoy = envoy_factory(bootstrap, start=False)
    await envoy.await_ready()
    return envoy


def route_weights(envoy: EnvoyProcess, service: str) -> dict[str, int] | None:
    """The weighted clusters Envoy runs for ``service``'s route config (None: none yet)."""
    dump = envoy.config_dump(resource="dynamic_route_configs")
    want = route_config_name(service)
    for config in dump.get("configs", []):
        route_config = config.get("route_config", {})
        if route_config.get("name") != want:
            continue
        for vhost in route_config.get("virtual_hosts", []):
            for route in vhost.get("routes", []):
                weighted = route.get("route", {}).get("weighted_clusters")
                if weighted:
                    return {c["name"]: int(c.get("weight", 0)) for c in weighted["clusters"]}
    return None


def xds_trouble(envoy: EnvoyProcess) -> dict[str, int]:
    """Non-zero ``*.update_rejected`` / ``*.init_fetch_timeout`` stats (all xDS types)."""
    return {
        name: value
        for name, value in envoy.stats().items()
        if name.endswith((".update_rejected", ".init_fetch_timeout"))
        and isinstance(value, int)
        and value
    }


def wanted_weights(service: str, weights: Mapping[str, int]) -> dict[str, int]:
    return {cluster_name(service, v): w for v, w in weights.items()}


def cluster_hosts(envoy: EnvoyProcess, service: str, version: str) -> set[int]:
    """Ports of the hosts Envoy has in the version's cluster (any health)."""
    cluster = envoy.clusters().get(cluster_name(service, version))
    return {h.port for h in cluster.hosts} if cluster else set()


def chat_url(port: int) -> str:
    return f"http://{LOCALHOST}:{port}/v1/chat/completions"


async def wait_serving(url: str, timeout: float = 10.0, version: str | None = None) -> None:
    """Wait until a request through Envoy answers 200 (from ``version`` if given)."""

    async def ok() -> bool:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
                http.post(url, json={"messages": []}) as r,
            ):
                await r.read()
                return r.status == 200 and (
                    version is None or r.headers.get("x-sluice-version") == version
                )
        except (aiohttp.ClientError, TimeoutError):
            return False

    await async_wait_for(ok, timeout, interval=0.1, what=f"200 from {url}")


async def start_one_per_port(
    upstreams: DemoUpstreams, version: str, count: int, service: str = "chat"
) -> list[DemoServers]:
    """``count`` single-listener upstreams of ``version`` (each can be closed alone)."""
    return [
        await upstreams.start(UpstreamSpec(LOCALHOST, 0, service, version), service=service)
        for _ in range(count)
    ]


# --------------------------------------------------------------------------- traffic


@dataclass
class TrafficLoop:
    """Requests in the background until ``stop()``, ``max_requests`` or ``max_seconds``."""

    url: str
    headers_fn: Callable[[int], Mapping[str, str]] = lambda i: {}
    concurrency: int = 4
    max_requests: int = 3_000
    max_seconds: float = 10.0
    rate: float = 400.0  # requests per second at most, over all workers
    request_timeout: float = 5.0
    replies: list[tuple[float, Reply]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> TrafficLoop:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        counter = iter(range(self.max_requests))
        deadline = time.monotonic() + self.max_seconds
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)

        pause = self.concurrency / self.rate

        async def worker(http: aiohttp.ClientSession) -> None:
            for i in counter:
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                next_at = time.monotonic() + pause
                try:
                    async with http.post(
                        self.url, json={"messages": []}, headers=dict(self.headers_fn(i))
                    ) as r:
                        await r.read()
                        reply = Reply(
                            r.status,
                            r.headers.get("x-sluice-version"),
                            r.headers.get("x-sluice-pod"),
                        )
                except (aiohttp.ClientError, TimeoutError) as exc:
                    reply = Reply(0, None, None, f"{type(exc).__name__}: {exc}")
                self.replies.append((time.monotonic(), reply))
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        async with aiohttp.ClientSession(timeout=timeout) as http:
            await asyncio.gather(*(worker(http) for _ in range(self.concurrency)))

    async def stop(self) -> list[tuple[float, Reply]]:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, self.request_timeout + 5)
        return self.replies

    def since(self, t: float) -> list[Reply]:
        return [r for at, r in self.replies if at >= t]

    @property
    def last_at(self) -> float:
        return self.replies[-1][0] if self.replies else 0.0

    def failures(self) -> list[Reply]:
        return [r for _, r in self.replies if r.status != 200]


@contextlib.asynccontextmanager
async def traffic(loop: TrafficLoop) -> AsyncIterator[TrafficLoop]:
    """Run ``loop`` for the block; it is stopped (and awaited) on the way out."""
    loop.start()
    try:
        yield loop
    finally:
        await loop.stop()

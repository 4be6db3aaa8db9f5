"""What the soak watches while faults fly: Envoy's running config, the experiment,
the fleet's sync state, and every client request.

Samplers only record (wall-clock stamped); ``tests.soak.invariants`` judges
the records afterwards, when every decision Sluice made is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from controlplane.model import route_config_name
from tests.soak.fleet import HotEnvoy, http_json

ROUTE_CONFIG = route_config_name("chat")
_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, ValueError)


@dataclass(frozen=True)
class EnvoySample:
    t: float  # wall clock
    envoy: str
    weights: dict[str, int] | None  # cluster -> weight in the chat route (None: no route yet)
    unwarmed: tuple[str, ...]  # clusters a route names that are not active (warm) in Envoy


def read_config_dump(doc: dict[str, Any]) -> tuple[dict[str, int] | None, tuple[str, ...]]:
    """(chat's route weights, clusters any route names that Envoy does not have warm)."""
    active: set[str] = set()
    named: set[str] = set()
    weights: dict[str, int] | None = None
    for config in doc.get("configs", []):
        kind = str(config.get("@type", ""))
        if kind.endswith("ClustersConfigDump"):
            for key in ("static_clusters", "dynamic_active_clusters"):
                active |= {c["cluster"]["name"] for c in config.get(key, [])}
        elif kind.endswith("RoutesConfigDump"):
            for dynamic in config.get("dynamic_route_configs", []):
                route_config = dynamic.get("route_config", {})
                for vhost in route_config.get("virtual_hosts", []):
                    for route in vhost.get("routes", []):
                        action = route.get("route", {})
                        if "cluster" in action:
                            named.add(action["cluster"])
                        split = action.get("weighted_clusters", {}).get("clusters", [])
                        named |= {c["name"] for c in split}
                        if route_config.get("name") == ROUTE_CONFIG and split and weights is None:
                            weights = {c["name"]: int(c.get("weight", 0)) for c in split}
    return weights, tuple(sorted(named - active))


async def sample_envoys(envoys: list[HotEnvoy], out: list[EnvoySample], stop: asyncio.Event,
                        interval: float = 0.25) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while not stop.is_set():
            for envoy in envoys:
                t = time.time()
                with contextlib.suppress(*_ERRORS):
                    async with http.get(f"{envoy.admin_url}/config_dump") as r:
                        if r.status == 200:
                            weights, unwarmed = read_config_dump(await r.json())
                            out.append(EnvoySample(t, envoy.node_id, weights, unwarmed))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)


@dataclass(frozen=True)
class ExperimentView:
    t: float  # wall clock
    name: str
    run: str
    phase: str
    step: int


@dataclass
class ExperimentLog:
    views: list[ExperimentView] = field(default_factory=list)
    decisions: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    last: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> latest view


async def watch_experiment(admin_url: str, current: Callable[[], str], log: ExperimentLog,
                           stop: asyncio.Event, interval: float = 0.3) -> None:
    """Polls the current experiment (its name may change between runs)."""
    while not stop.is_set():
        name = current()
        t = time.time()
        with contextlib.suppress(*_ERRORS):
            view = await http_json("GET", f"{admin_url}/api/v1/experiments/{name}", timeout=2.0)
            log.views.append(ExperimentView(t, name, str(view["run"]), str(view["phase"]),
                                            int(view["step"])))
            log.last[name] = view
            seen = log.decisions.setdefault((name, str(view["run"])), [])
            if len(view.get("decisions", [])) >= len(seen):
                seen[:] = view["decisions"]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def fleet_synced(admin_url: str, nodes: tuple[str, ...],
                       changed_from: str | None = None,
                       newer: tuple[str, float] | None = None) -> bool:
    """Every stream of every node is SYNCED on every type it asked for; with
    ``changed_from``, on a snapshot other than that one; with ``newer`` (node,
    connectedAt), that node has a stream connected after that one (a restarted
    proxy; stream ids are unique, but each xDS process counts its own)."""
    try:
        doc = await http_json("GET", f"{admin_url}/api/v1/proxies", timeout=1.0)
        if changed_from is not None:
            services = await http_json("GET", f"{admin_url}/api/v1/services", timeout=1.0)
            if services.get("snapshot") == changed_from:
                return False
    except _ERRORS:
        return False
    proxies = doc.get("proxies", [])
    if newer is not None and not any(p["id"] == newer[0] and p["connectedAt"] > newer[1]
                                     for p in proxies):
        return False
    present = {p["id"] for p in proxies}
    return set(nodes) <= present and all(p["synced"] and len(p["types"]) >= 4 for p in proxies)


async def time_to_synced(admin_url: str, nodes: tuple[str, ...], since: float, cap: float,
                         changed_from: str | None = None,
                         newer: tuple[str, float] | None = None) -> float | None:
    """Seconds from ``since`` (wall clock) until the fleet is SYNCED; None past ``cap``."""
    while time.time() - since < cap:
        if await fleet_synced(admin_url, nodes, changed_from, newer):
            return max(0.0, time.time() - since)
        await asyncio.sleep(0.1)
    return None


async def newest_stream(admin_url: str, node: str) -> float:
    """When the node's newest stream connected (wall clock; 0 when it has none)."""
    doc = await http_json("GET", f"{admin_url}/api/v1/proxies", timeout=2.0)
    return max((float(p["connectedAt"]) for p in doc.get("proxies", []) if p["id"] == node),
               default=0.0)


async def snapshot_version(admin_url: str) -> str:
    return str((await http_json("GET", f"{admin_url}/api/v1/services", timeout=2.0))["snapshot"])


# -- client load ----------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    sent: float  # wall clock
    done: float
    status: int  # 0: no HTTP answer (see error)
    version: str | None
    pod: str | None
    error: str | None = None


async def run_load(url: str, out: list[Request], stop: asyncio.Event, rate: float,
                   concurrency: int = 8, timeout: float = 10.0) -> None:
    """Bounded: ``rate`` requests per second at most, until ``stop``. A new connection
    per request, so the kernel spreads them over both Envoys (they share the listener
    port) and a hot restart is seen by new connections at once."""
    pause = concurrency / rate
    body = {"messages": [{"role": "user", "content": "hi"}]}

    async def worker(http: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            sent = time.time()
            try:
                async with http.post(url, json=body) as r:
                    await r.read()
                    reply = Request(sent, time.time(), r.status, r.headers.get("x-sluice-version"),
                                    r.headers.get("x-sluice-pod"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                reply = Request(sent, time.time(), 0, None, None, f"{type(exc).__name__}: {exc}")
            out.append(reply)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, sent + pause - time.time()))

    connector = aiohttp.TCPConnector(force_close=True, limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))

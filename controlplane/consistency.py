"""``GET /api/v1/services/NAME/consistency``: does every replica run the version it should?

Two views of one service, with mismatches flagged:

- per proxy: the versions its ACKed route configuration sends traffic to
  (decoded from the bytes the proxy ACKed), against the desired route;
- per pod: the version it reports (``x-sluice-version`` on its health answer,
  or a ``version`` label on its ``/metrics``) against the version whose
  cluster it is in.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from typing import Any

import aiohttp
from envoy_data_plane.envoy.config.route import v3 as route_v3

from controlplane.model import ModelService, route_config_name
from xds import typeurls
from xds._wire import wire_pb2
from xds.server import ProxyInfo
from xds.snapshot import Resource, Snapshot

VERSION_HEADER = "x-sluice-version"
_LABEL = re.compile(r'[{,]version="([^"]*)"')
_TIMEOUT = aiohttp.ClientTimeout(total=2.0)


def routed_versions(resource: Resource, service: str) -> dict[str, Any]:
    """What a route configuration does with traffic, by version (decoded; API use only)."""
    value = wire_pb2.AnyView.FromString(resource.any_bytes).value
    config = route_v3.RouteConfiguration.parse(value)
    prefix = f"{service}/"
    weights: dict[str, float] = {}
    cohorts: list[str] = []
    mirrors: list[str] = []
    unavailable = False
    for vhost in config.virtual_hosts:
        for route in vhost.routes:
            if route.direct_response is not None and route.direct_response.status:
                unavailable = True
            action = route.route
            if action is None:
                continue
            mirrors += [m.cluster.removeprefix(prefix) for m in action.request_mirror_policies]
            if action.cluster:
                cohorts.append(action.cluster.removeprefix(prefix))
            if action.weighted_clusters is not None:
                for c in action.weighted_clusters.clusters:
                    weights[c.name.removeprefix(prefix)] = float(c.weight or 0)
    total = sum(weights.values()) or 1.0
    return {
        "serving": sorted({v for v, w in weights.items() if w > 0} | set(cohorts)),
        "split": {v: round(100 * w / total, 4) for v, w in weights.items()},
        "cohorts": sorted(set(cohorts)), "mirrors": sorted(set(mirrors)),
        "unavailable": unavailable,
    }


def proxy_views(service: ModelService, snapshot: Snapshot,
                proxies: Iterable[ProxyInfo]) -> list[dict[str, Any]]:
    name = route_config_name(service.name)
    desired = snapshot.types[typeurls.ROUTE].resources.get(name)
    out = []
    for info in sorted(proxies, key=lambda p: (p.node_id, p.stream_id)):
        if not info.machine.wants(typeurls.ROUTE, name):
            continue
        held = info.machine.held(typeurls.ROUTE, name)
        entry: dict[str, Any] = {"id": info.node_id, "stream": info.stream_id,
                                 "routeVersion": held.version if held else None}
        if held is None:
            entry.update(serving=[], mismatch="has not ACKed any route for this service")
        else:
            entry.update(routed_versions(held, service.name))
            entry["mismatch"] = None if desired is not None and held.version == (
                desired.version) else "runs an older route than the desired one"
        out.append(entry)
    return out


async def _reported(session: aiohttp.ClientSession, pod: str, path: str) -> str | None:
    try:
        async with session.get(f"http://{pod}{path}", timeout=_TIMEOUT) as r:
            if VERSION_HEADER in r.headers:
                return r.headers[VERSION_HEADER]
        async with session.get(f"http://{pod}/metrics", timeout=_TIMEOUT) as r:
            found = _LABEL.search(await r.text())
            return found.group(1) if found else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def pod_views(service: ModelService) -> list[dict[str, Any]]:
    path = service.health_check.path if service.health_check else "/health"
    pods = [(v.name, f"{e.address}:{e.port}", e.health.value)
            for v in service.versions for e in v.endpoints]
    async with aiohttp.ClientSession() as session:
        reported = await asyncio.gather(*(_reported(session, pod, path) for _, pod, _ in pods))
    out = []
    for (version, pod, health), says in zip(pods, reported, strict=True):
        mismatch = None
        if says is None:
            mismatch = "did not report a version"
        elif says != version:
            mismatch = f"reports {says!r} but is in version {version!r}"
        out.append({"pod": pod, "configured": version, "reported": says, "health": health,
                    "mismatch": mismatch})
    return out


async def consistency(service: ModelService, snapshot: Snapshot,
                      proxies: Iterable[ProxyInfo],
                      remote_rows: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """``remote_rows``: ``proxy_views`` of streams other processes serve."""
    proxies_out = sorted([*proxy_views(service, snapshot, proxies), *remote_rows],
                         key=lambda p: (p["id"], p["stream"]))
    pods_out = await pod_views(service)
    mismatches = ([f"proxy {p['id']}: {p['mismatch']}" for p in proxies_out if p["mismatch"]]
                  + [f"pod {p['pod']}: {p['mismatch']}" for p in pods_out if p["mismatch"]])
    return {"service": service.name, "consistent": not mismatches, "mismatches": mismatches,
            "proxies": proxies_out, "pods": pods_out}

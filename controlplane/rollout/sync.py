"""What the rollout needs to know about proxies: has every one ACKed a service's traffic?

``ProxyView`` is the small protocol the runner depends on; ``XdsProxyView``
answers it from the xDS server's per-stream machines (read-only), so a step's
clock starts only when every connected proxy holds exactly the current
snapshot's route, clusters and endpoints of the service.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from controlplane.model import cluster_name, route_config_name
from xds import typeurls
from xds.cache import SnapshotCache
from xds.server import ProxyInfo
from xds.snapshot import Snapshot


@dataclass(frozen=True)
class SyncReport:
    built: bool  # the snapshot with the change is installed
    proxies: tuple[str, ...]  # node ids that take this service's resources
    pending: tuple[str, ...]  # ... and have not ACKed the current versions yet
    nacked: tuple[tuple[str, str], ...]  # (node id, Envoy's message)

    @property
    def synced(self) -> bool:
        return self.built and not self.pending and not self.nacked

    def describe(self) -> str:
        if not self.built:
            return "waiting for the snapshot to be built"
        parts = []
        if self.pending:
            shown = ", ".join(self.pending[:5]) + (" ..." if len(self.pending) > 5 else "")
            parts.append(f"{len(self.pending)} of {len(self.proxies)} proxies have not ACKed "
                         f"yet ({shown})")
        for node, message in self.nacked[:3]:
            parts.append(f"{node} rejected the config: {message[:200]}")
        return "; ".join(parts) or f"all {len(self.proxies)} proxies ACKed"


class ProxyView(Protocol):
    def sync(self, service: str, versions: Iterable[str], revision: int) -> SyncReport:
        """Whether every proxy holds the service's resources as of store ``revision``."""
        ...

    def admin_urls(self) -> list[str]:
        """Envoy admin URLs the connected proxies announce (for stats and drains)."""
        ...


@dataclass(frozen=True)
class SyncPart:
    """``SyncReport``'s lists over some of the streams (one process's)."""

    proxies: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    nacked: tuple[tuple[str, str], ...] = ()


def wanted_resources(snapshot: Snapshot, service: str,
                     versions: Iterable[str]) -> list[tuple[str, str, str]]:
    """(type, name, version) of the service's route, clusters and endpoints in ``snapshot``."""
    wanted: list[tuple[str, str, str]] = []
    names = [(typeurls.ROUTE, route_config_name(service))]
    for v in versions:
        names += [(typeurls.CLUSTER, cluster_name(service, v)),
                  (typeurls.ENDPOINT, cluster_name(service, v))]
    for type_url, name in names:
        found = snapshot.types[type_url].resources.get(name)
        if found is not None:
            wanted.append((type_url, name, found.version))
    return wanted


def sync_part(infos: Iterable[ProxyInfo], wanted: list[tuple[str, str, str]]) -> SyncPart:
    proxies: list[str] = []
    pending: list[str] = []
    nacked: list[tuple[str, str]] = []
    for info in infos:
        machine = info.machine
        mine = [(t, n, v) for t, n, v in wanted if machine.wants(t, n)]
        if not mine:
            continue
        proxies.append(info.node_id)
        if all(machine.holds(t, n) == v for t, n, v in mine):
            continue
        rejected = [s.last_nack.message for s in machine.status()
                    if s.last_nack is not None and s.state.value == "NACKED"]
        if rejected:
            nacked.append((info.node_id, rejected[0]))
        else:
            pending.append(info.node_id)
    return SyncPart(tuple(proxies), tuple(pending), tuple(nacked))


class RemoteStreams(Protocol):
    """Streams served by other processes (``controlplane.worker_pool``)."""

    def sync_part(self, service: str, versions: tuple[str, ...],
                  snapshot_version: str) -> SyncPart | None:
        """Their part as of ``snapshot_version``; None while not known yet."""
        ...

    def admin_urls(self) -> Iterable[str]: ...


class XdsProxyView:
    def __init__(self, cache: SnapshotCache, proxies: Callable[[], Iterable[ProxyInfo]],
                 installed_revision: Callable[[], int],
                 remote: RemoteStreams | None = None) -> None:
        self._cache = cache
        self._proxies = proxies
        self._installed = installed_revision
        self.remote = remote

    def sync(self, service: str, versions: Iterable[str], revision: int) -> SyncReport:
        if self._installed() < revision:
            return SyncReport(False, (), (), ())
        snapshot = self._cache.snapshot
        versions = tuple(versions)
        part = sync_part(self._proxies(), wanted_resources(snapshot, service, versions))
        if self.remote is not None:
            other = self.remote.sync_part(service, versions, snapshot.version)
            if other is None:  # the worker processes have not reported on this snapshot yet
                return SyncReport(False, (), (), ())
            part = SyncPart(part.proxies + other.proxies, part.pending + other.pending,
                            part.nacked + other.nacked)
        return SyncReport(True, part.proxies, part.pending, part.nacked)

    def admin_urls(self) -> list[str]:
        urls = {info.admin_url for info in self._proxies() if info.admin_url}
        if self.remote is not None:
            urls.update(self.remote.admin_urls())
        return sorted(urls)

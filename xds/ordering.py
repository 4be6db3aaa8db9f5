"""Make-before-break: what a stream may send now, given what its proxy holds.

Pure functions shared by the SotW and Delta stream machines. The rules
(reference/xds-protocol.md, rules 7 and 8; xDS protocol page, "Eventual
consistency considerations"):

* a route configuration may name a cluster only once the proxy has ACKed that
  cluster *and* ACKed a ClusterLoadAssignment for it sent after the cluster
  (a cluster finishes warming only on an EDS response that follows it);
  until then the proxy keeps the route it has (the new one is *held*);
* a cluster leaves the CDS state only when no route the proxy holds (ACKed or
  in flight) names it any more: until then it is *retained*, with its
  endpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from xds import typeurls
from xds.snapshot import Resource, Snapshot, version_of


@dataclass(frozen=True)
class ProxyHolds:
    """What the proxy is known to run, as the stream machine tracks it."""

    # Cluster name → version the proxy ACKed.
    clusters: Mapping[str, str]
    # Cluster name → the cluster version that was current when an EDS response
    # naming it was sent; set when that response is ACKed.
    eds_ready: Mapping[str, str]
    # Clusters named by routes the proxy holds or has in flight; None when
    # unknown (after a Delta reconnect with versions we never produced).
    route_refs: frozenset[str] | None
    # Resources the proxy ACKed that we still have the bytes of, per type.
    acked: Mapping[str, Mapping[str, Resource]]
    # ready_clusters(self), when the caller already knows it.
    ready: frozenset[str] | None = None


@dataclass(frozen=True)
class Sendable:
    content: dict[str, Resource]
    held: frozenset[str]  # names that exist but must not be sent yet (or removed)
    version: str  # version_of(content), taken from the snapshot when it is all of it


def ready_clusters(holds: ProxyHolds) -> frozenset[str]:
    # Set intersection of (name, version) pairs runs in C; this is on the hot path.
    return frozenset(name for name, _ in holds.clusters.items() & holds.eds_ready.items())


def retained_clusters(snapshot: Snapshot, holds: ProxyHolds) -> frozenset[str]:
    """Clusters gone from the snapshot that a held route still names."""
    gone = holds.clusters.keys() - snapshot.resources(typeurls.CLUSTER).keys()
    if holds.route_refs is None:
        return frozenset(gone)
    return frozenset(gone & holds.route_refs)


def sendable(
    type_url: str, snapshot: Snapshot, names: frozenset[str] | None, holds: ProxyHolds
) -> Sendable:
    """The content for ``type_url`` restricted to ``names`` (None: wildcard)."""
    current = snapshot.resources(type_url)
    whole = names is None or (len(names) >= len(current) and names >= current.keys())
    if whole:
        content = dict(current)  # already sorted by name
    else:
        assert names is not None
        content = {n: current[n] for n in sorted(names) if n in current}
    held: set[str] = set()
    acked = holds.acked.get(type_url, {})
    if type_url in (typeurls.CLUSTER, typeurls.ENDPOINT):
        for name in retained_clusters(snapshot, holds):
            if names is not None and name not in names:
                continue
            whole = False
            if name in acked:
                content[name] = acked[name]
            else:
                held.add(name)
    elif type_url == typeurls.ROUTE and content:
        ready = holds.ready if holds.ready is not None else ready_clusters(holds)
        if not snapshot.types[type_url].refs <= ready:
            for name, route in list(content.items()):
                if route.refs <= ready:
                    continue
                whole = False
                del content[name]
                held.add(name)
                if name in acked:
                    content[name] = acked[name]
    if whole:
        # Hashing a whole type per push would dominate the per-stream cost;
        # the snapshot already knows its version.
        return Sendable(content, frozenset(held), snapshot.types[type_url].version)
    content = dict(sorted(content.items()))
    return Sendable(content, frozenset(held), version_of(content.values()))


def target(type_url: str, snapshot: Snapshot, names: frozenset[str] | None) -> dict[str, Resource]:
    """What the proxy converges to: the snapshot's resources for its subscription."""
    current = snapshot.resources(type_url)
    if names is None:
        return dict(current)
    return {n: current[n] for n in names if n in current}


def target_version(type_url: str, snapshot: Snapshot, names: frozenset[str] | None) -> str:
    current = snapshot.resources(type_url)
    if names is None or (len(names) >= len(current) and names >= current.keys()):
        return snapshot.types[type_url].version
    return version_of(r for n, r in current.items() if n in names)

"""Immutable, versioned, consistency-checked snapshots of Envoy resources.

A ``Snapshot`` is what every xDS stream serves from. It is built from the
desired state in one pass, checked, and only then handed to the cache, so a
stream can never see a route that names a missing cluster.

Versions are content hashes: the version of a resource is a hash of its
serialized bytes, the version of a type is a hash of its (name, version)
pairs. Two replicas of the control plane therefore never hand out the same
version string for different content (xDS rule 1 in reference/xds-protocol.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from xds import typeurls

# ADS push order (make-before-break): clusters and their endpoints first, then
# listeners, then the routes that point at them. See xDS protocol, "Eventual
# consistency considerations".
PUSH_ORDER: tuple[str, ...] = (
    typeurls.CLUSTER,
    typeurls.ENDPOINT,
    typeurls.LISTENER,
    typeurls.ROUTE,
)

# Types whose SotW responses carry the full state (a missing name is a deletion).
FULL_STATE_TYPES = frozenset({typeurls.LISTENER, typeurls.CLUSTER})


def content_hash(*parts: bytes) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class Resource:
    """One resource version, serialized once and shared by every stream.

    ``any_bytes`` is a serialized ``google.protobuf.Any`` (for SotW responses);
    ``delta_bytes`` a serialized discovery ``Resource`` wrapping it (for Delta).
    ``refs`` names what it points at: a route config its clusters, a listener
    its route config, a cluster its ClusterLoadAssignment.
    """

    type_url: str
    name: str
    version: str
    any_bytes: bytes
    delta_bytes: bytes
    refs: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return f"Resource({self.name!r}@{self.version})"


def version_of(resources: Iterable[Resource]) -> str:
    """Version of a set of resources: a hash of the sorted (name, version) pairs."""
    return version_of_pairs((r.name, r.version) for r in resources)


def version_of_pairs(pairs: Iterable[tuple[str, str]]) -> str:
    return content_hash(*(f"{n}\x00{v}".encode() for n, v in sorted(pairs)))


EMPTY_VERSION = version_of(())


@dataclass(frozen=True)
class TypeSnapshot:
    type_url: str
    resources: Mapping[str, Resource]
    version: str
    refs: frozenset[str] = frozenset()  # everything its resources point at

    @classmethod
    def of(cls, type_url: str, resources: Iterable[Resource]) -> TypeSnapshot:
        by_name: dict[str, Resource] = {}
        for r in resources:
            if r.type_url != type_url:
                raise ValueError(f"{r.name}: type {r.type_url} in a {type_url} snapshot")
            if r.name in by_name:
                # Rule 11: a response must never carry the same name twice.
                raise ValueError(f"duplicate {type_url} resource {r.name!r}")
            by_name[r.name] = r
        ordered = dict(sorted(by_name.items()))
        refs = frozenset().union(*(r.refs for r in ordered.values()))
        return cls(type_url, MappingProxyType(ordered), version_of(ordered.values()), refs)


@dataclass(frozen=True)
class Snapshot:
    """A consistent set of resources of every served type."""

    types: Mapping[str, TypeSnapshot]
    version: str

    @classmethod
    def of(cls, resources_by_type: Mapping[str, Iterable[Resource]]) -> Snapshot:
        types = {t: TypeSnapshot.of(t, resources_by_type.get(t, ())) for t in PUSH_ORDER}
        version = content_hash(*(f"{t}\x00{types[t].version}".encode() for t in PUSH_ORDER))
        snapshot = cls(MappingProxyType(types), version)
        problems = consistency_problems(snapshot)
        if problems:
            raise InconsistentSnapshot(problems)
        return snapshot

    def resources(self, type_url: str) -> Mapping[str, Resource]:
        return self.types[type_url].resources


class InconsistentSnapshot(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("inconsistent snapshot: " + "; ".join(problems))
        self.problems = problems


def consistency_problems(snapshot: Snapshot) -> list[str]:
    """Every reference must resolve inside the snapshot (go-control-plane's
    ``Snapshot.Consistent``): listeners → route configs, routes → clusters,
    clusters ↔ load assignments."""
    problems: list[str] = []
    listeners = snapshot.resources(typeurls.LISTENER)
    routes = snapshot.resources(typeurls.ROUTE)
    clusters = snapshot.resources(typeurls.CLUSTER)
    endpoints = snapshot.resources(typeurls.ENDPOINT)
    for listener in listeners.values():
        problems += [
            f"listener {listener.name!r} names missing route config {ref!r}"
            for ref in sorted(listener.refs - routes.keys())
        ]
    for route in routes.values():
        problems += [
            f"route config {route.name!r} names missing cluster {ref!r}"
            for ref in sorted(route.refs - clusters.keys())
        ]
    for cluster in clusters.values():
        problems += [
            f"cluster {cluster.name!r} has no ClusterLoadAssignment {ref!r}"
            for ref in sorted(cluster.refs - endpoints.keys())
        ]
    eds_names = {ref for c in clusters.values() for ref in c.refs}
    problems += [
        f"ClusterLoadAssignment {name!r} belongs to no cluster"
        for name in sorted(endpoints.keys() - eds_names)
    ]
    return problems


EMPTY_SNAPSHOT = Snapshot.of({})

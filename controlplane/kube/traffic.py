"""Every replica serves the same traffic: the leader publishes, followers mirror.

Only the leader runs experiments, so only its store holds their overrides
(weights, per-version endpoints of a rolling update, cohorts, mirrors). It
writes them, whole, to one ConfigMap (``sluice-traffic``) whenever they
change; followers watch it and set the same overrides on their own store, so
their snapshots carry the same content and so the same versions: a proxy that
reconnects to another replica is not pushed anything new. A new leader
restores the runs from the journal, which puts the same overrides in force.

The routing controller's endpoint weights and batch caps travel the same way
(keys ``routing.SERVICE``): only the leader computes them (from its proxies'
load reports), so every replica pushes the same endpoint weights too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from controlplane.kube import MANAGED_BY
from controlplane.kube.client import CONFIG_MAPS, Kube, KubeError, Obj
from controlplane.kube.informer import Informer
from controlplane.model import (
    Cohort,
    Endpoint,
    EndpointHealth,
    Mirror,
    RoutingState,
    TrafficShape,
    Unavailable,
)
from controlplane.store import Store, TrafficOverride

log = logging.getLogger("sluice.kube")

NAME = "sluice-traffic"
ROLE = {"sluice.dev/traffic": "overrides"}


def to_json(o: TrafficOverride) -> dict[str, Any]:
    t = o.traffic
    return {
        "owner": o.owner, "weights": [[v, w] for v, w in o.weights],
        "endpoints": [[v, [[e.address, e.port, e.weight, [list(lb) for lb in e.labels],
                            e.health.value, e.priority] for e in eps]] for v, eps in o.endpoints],
        "cohorts": [[c.header, c.value, c.version] for c in t.cohorts],
        "mirrors": [[m.version, m.percent] for m in t.mirrors],
        "unavailable": t.unavailable.retry_after_s if t.unavailable else None,
    }


def from_json(d: dict[str, Any]) -> TrafficOverride:
    endpoints = tuple(
        (str(v), tuple(Endpoint(str(a), int(p), int(w), tuple((str(k), str(x)) for k, x in lbs),
                                EndpointHealth(h), int(pr)) for a, p, w, lbs, h, pr in eps))
        for v, eps in d.get("endpoints", []))
    unavailable = d.get("unavailable")
    shape = TrafficShape(
        cohorts=tuple(Cohort(str(h), str(v), str(ver)) for h, v, ver in d.get("cohorts", [])),
        mirrors=tuple(Mirror(str(v), float(p)) for v, p in d.get("mirrors", [])),
        unavailable=Unavailable(int(unavailable)) if unavailable is not None else None,
    )
    return TrafficOverride(str(d["owner"]), tuple((str(v), float(w)) for v, w in d["weights"]),
                           endpoints, shape)


ROUTING_PREFIX = "routing."  # service names have no dots, so keys never collide


def encode(overrides: dict[str, TrafficOverride],
           routings: dict[str, RoutingState] | None = None) -> dict[str, str]:
    data = {s: json.dumps(to_json(o), sort_keys=True) for s, o in sorted(overrides.items())}
    for service, r in sorted((routings or {}).items()):
        data[ROUTING_PREFIX + service] = json.dumps(
            {"weights": [list(w) for w in r.weights], "batch": r.batch_max_requests,
             "batchCaps": [list(c) for c in r.batch_caps]},
            sort_keys=True)
    return data


def routing_from_json(d: dict[str, Any]) -> RoutingState:
    batch = d.get("batch")
    return RoutingState(tuple((str(k), int(w)) for k, w in d.get("weights", [])),
                        int(batch) if batch is not None else None,
                        tuple((str(v), int(c)) for v, c in d.get("batchCaps", [])))


class TrafficShare:
    """Publishes the leader's overrides; mirrors them into a follower's store."""

    def __init__(self, kube: Kube, store: Store, namespace: str) -> None:
        self.kube = kube
        self.store = store
        self.namespace = namespace
        self.leading = False
        self.published: dict[str, str] | None = None
        self.mirrored: set[str] = set()
        self._version = ""
        self._changed = asyncio.Event()
        self.informer = Informer(kube, CONFIG_MAPS, namespace,
                                 ",".join(f"{k}={v}" for k, v in ROLE.items()),
                                 on_change=self._changed.set)

    # -- follower

    def mirror(self) -> None:
        """Sets the published overrides on this replica's store (followers only)."""
        if self.leading:
            return
        cm = self.informer.snapshot().get(f"{self.namespace}/{NAME}")
        data = (cm or {}).get("data") or {}
        wanted: dict[str, TrafficOverride] = {}
        routings: dict[str, RoutingState] = {}
        for key, text in data.items():
            try:
                if key.startswith(ROUTING_PREFIX):
                    routings[key.removeprefix(ROUTING_PREFIX)] = routing_from_json(
                        json.loads(text))
                else:
                    wanted[key] = from_json(json.loads(text))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("published traffic %s is unreadable, ignored: %s", key, exc)
        for service in self.mirrored - set(wanted):
            self.store.set_override(service, None)
        for service, override in wanted.items():
            self.store.set_override(service, override)
        self.mirrored = set(wanted)
        for service in set(self.store.routings()) - set(routings):
            self.store.set_routing(service, None)
        for service, routing in routings.items():
            self.store.set_routing(service, routing)

    # -- leader

    def publish(self) -> None:
        """Writes the store's overrides when they changed (blocking; leader only)."""
        data = encode(self.store.overrides(), self.store.routings())
        if data == self.published:
            return
        body: Obj = {"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": NAME, "namespace": self.namespace,
                                  "labels": {**MANAGED_BY, **ROLE}}, "data": data}
        current = self.kube.get(CONFIG_MAPS, self.namespace, NAME)
        if current is None:
            self.kube.create(CONFIG_MAPS, self.namespace, body)
        else:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            self.kube.replace(CONFIG_MAPS, self.namespace, NAME, body)
        self.published = data

    async def run(self, stop: asyncio.Event) -> None:
        self.informer.start()
        seen = -1
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.1)
                self._changed.clear()
                if not self.leading:
                    self.mirror()
                elif self.store.revision != seen:
                    seen = self.store.revision
                    try:
                        await asyncio.to_thread(self.publish)
                    except KubeError as exc:
                        seen = -1
                        log.warning("cannot publish traffic to followers: %s", exc.describe())
        finally:
            self.informer.stop()
            await self.informer.join()

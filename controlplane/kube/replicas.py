"""How many proxies every replica serves, so the leader sizes per-proxy shares for all.

The leader computes the batch cap per proxy (the fleet's spare capacity divided
by the proxies that enforce it), and the followers' proxies enforce the same
per-proxy cap (it travels in ``sluice-traffic``). Dividing by the leader's own
proxies alone would let the fleet admit (replicas) times the spare capacity.
So each replica writes its proxy count to its own ConfigMap
(``sluice-replica-IDENTITY``, label ``sluice.dev/replica=proxies``) every few
seconds, and every replica reads the others' through one informer. A count
older than ``FRESH_S`` belongs to a replica that is gone and is not counted;
the leader deletes such ConfigMaps after ``FORGET_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable

from controlplane.kube import MANAGED_BY
from controlplane.kube.client import CONFIG_MAPS, Kube, KubeError, Obj
from controlplane.kube.informer import Informer

log = logging.getLogger("sluice.kube")

ROLE = {"sluice.dev/replica": "proxies"}
PREFIX = "sluice-replica-"
FRESH_S = 30.0
FORGET_S = 600.0


def config_map_name(identity: str) -> str:
    """A DNS-1123 name for a replica's identity (a pod name already is one)."""
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", identity.lower()).strip("-.") or "replica"
    return (PREFIX + cleaned)[:253]


def fresh_counts(objects: dict[str, Obj], own_name: str, now: float) -> dict[str, int]:
    """Other replicas' proxy counts that are recent enough to stand."""
    out: dict[str, int] = {}
    for obj in objects.values():
        name = str(obj.get("metadata", {}).get("name", ""))
        data = obj.get("data") or {}
        if name == own_name:
            continue
        try:
            count, at = int(data["proxies"]), float(data["at"])
        except (KeyError, TypeError, ValueError):
            continue  # not one of ours, or unreadable: counts for nothing
        if count >= 0 and now - at <= FRESH_S:
            out[name] = count
    return out


class ReplicaCounts:
    def __init__(self, kube: Kube, namespace: str, identity: str, own: Callable[[], int],
                 wall: Callable[[], float] = time.time, interval_s: float = 5.0) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = config_map_name(identity)
        self.own = own
        self.wall = wall
        self.interval_s = interval_s
        self.leading = False
        self.informer = Informer(kube, CONFIG_MAPS, namespace,
                                 ",".join(f"{k}={v}" for k, v in ROLE.items()))

    def total(self) -> int:
        """Proxies of every live replica: this one's now, the others' as last written."""
        others = fresh_counts(self.informer.snapshot(), self.name, self.wall())
        return self.own() + sum(others.values())

    def write(self) -> None:
        """This replica's count, now (blocking)."""
        body: Obj = {"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": self.name, "namespace": self.namespace,
                                  "labels": {**MANAGED_BY, **ROLE}},
                     "data": {"proxies": str(self.own()), "at": f"{self.wall():.3f}"}}
        current = self.kube.get(CONFIG_MAPS, self.namespace, self.name)
        if current is None:
            self.kube.create(CONFIG_MAPS, self.namespace, body)
        else:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            self.kube.replace(CONFIG_MAPS, self.namespace, self.name, body)

    def forget_gone(self) -> None:
        """Deletes ConfigMaps of replicas silent for FORGET_S (leader only; blocking)."""
        now = self.wall()
        for obj in self.informer.snapshot().values():
            name = str(obj.get("metadata", {}).get("name", ""))
            try:
                at = float((obj.get("data") or {})["at"])
            except (KeyError, TypeError, ValueError):
                continue
            if name != self.name and now - at > FORGET_S:
                self.kube.delete(CONFIG_MAPS, self.namespace, name)

    async def run(self, stop: asyncio.Event) -> None:
        self.informer.start()
        try:
            while not stop.is_set():
                try:
                    await asyncio.to_thread(self.write)
                    if self.leading:
                        await asyncio.to_thread(self.forget_gone)
                except KubeError as exc:
                    log.warning("cannot write this replica's proxy count: %s", exc.describe())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)
        finally:
            self.informer.stop()
            await self.informer.join()
            with contextlib.suppress(KubeError):  # gone replicas stop counting either way
                await asyncio.to_thread(self.kube.delete, CONFIG_MAPS, self.namespace,
                                        self.name)

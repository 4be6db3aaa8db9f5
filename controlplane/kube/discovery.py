"""Kubernetes endpoint discovery: the versions that say ``endpoints: {kubernetes: ...}``.

One informer per distinct source (a Service's EndpointSlices, or the pods of a
label selector, in a namespace), started and stopped as documents come and go,
plus one for Nodes (GPU type and zone; optional: without the permission the
endpoints just lack those labels). After a burst of events (debounced) every
discovered version is recomputed and handed to the store, which merges it
under the rollout's overrides. A source that has not listed yet, or that RBAC
forbids, keeps ``/readyz`` failing with the reason; the other services serve
on. A version that finds no endpoint serves none, and says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from controlplane.kube.bursts import debounced
from controlplane.kube.client import ENDPOINT_SLICES, NODES, PODS, Kube, label_selector
from controlplane.kube.endpoints import Found, from_pods, from_slices
from controlplane.kube.informer import Informer
from controlplane.model import KubeEndpoints, ModelService
from controlplane.store import Store

log = logging.getLogger("sluice.kube")


@dataclass(frozen=True)
class Source:
    namespace: str
    service: str | None
    selector: str  # label selector text when service is None

    def describe(self) -> str:
        if self.service is not None:
            return f"EndpointSlices of Service {self.namespace}/{self.service}"
        return f"pods {self.selector} in {self.namespace}"


@dataclass(frozen=True)
class Use:
    service: str
    version: str
    discovery: KubeEndpoints
    source: Source


class Discovery:
    def __init__(self, kube: Kube, store: Store, namespace_of: Callable[[str], str], *,
                 informer: Callable[..., Informer] = Informer) -> None:
        self.kube = kube
        self.store = store
        self.namespace_of = namespace_of  # a service's default namespace
        self._make = informer
        self.informers: dict[Source, Informer] = {}
        self.nodes: Informer | None = None
        self.uses: list[Use] = []
        self.notes: dict[tuple[str, str], tuple[str, ...]] = {}  # (service, version) -> notes
        self._warned: set[tuple[str, str]] = set()
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()

    # -- which sources are needed (after every load)

    def reconcile(self) -> None:
        uses = []
        for service in self.store.declared.services:
            for version in service.versions:
                d = version.discovery
                if d is None:
                    continue
                ns = d.namespace or self.namespace_of(service.name)
                source = Source(ns, d.service, "" if d.service else label_selector(d.selector))
                uses.append(Use(service.name, version.name, d, source))
        gone = {(u.service, u.version) for u in self.uses} - {(u.service, u.version)
                                                               for u in uses}
        for name, version_name in gone:
            self.store.set_discovered(name, version_name, None)
            self.notes.pop((name, version_name), None)
        self.uses = uses
        wanted = {u.source for u in uses}
        for source in list(self.informers):
            if source not in wanted:
                self.informers.pop(source).stop()
                self.store.set_condition(f"kubernetes: {source.describe()}", None)
        for source in wanted - set(self.informers):
            if source.service is not None:
                selector = f"kubernetes.io/service-name={source.service}"
                made = self._make(self.kube, ENDPOINT_SLICES, source.namespace, selector,
                                  on_change=self._changed.set)
            else:
                made = self._make(self.kube, PODS, source.namespace, source.selector,
                                  on_change=self._changed.set)
            self.informers[source] = made
            self.store.set_condition(f"kubernetes: {source.describe()}",
                                     f"waiting for the first list of {source.describe()}")
            made.start()
        if wanted and self.nodes is None:
            self.nodes = self._make(self.kube, NODES, None, None, on_change=self._changed.set)
            self.nodes.start()
        self._changed.set()

    # -- running

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await debounced(self._changed, stop, self._flush)
        finally:
            every = [*self.informers.values(), *([self.nodes] if self.nodes else [])]
            for informer in every:
                informer.stop()
            for informer in every:
                await informer.join()

    def _flush(self) -> None:
        self.apply()

    def apply(self) -> bool:
        """Recomputes every discovered version; True when what serves changed."""
        changed = False
        nodes = self.nodes.snapshot() if self.nodes is not None else {}
        if self.nodes is not None and self.nodes.error and ("", "nodes") not in self._warned:
            self._warned.add(("", "nodes"))
            log.warning("nodes cannot be read (%s): endpoints get no GPU type or zone from "
                        "their node", self.nodes.error)
        for source, informer in self.informers.items():
            key = f"kubernetes: {source.describe()}"
            if informer.error:
                self.store.set_condition(key, f"cannot watch {source.describe()}: "
                                         f"{informer.error}")
            elif not informer.synced:
                self.store.set_condition(key, f"waiting for the first list of "
                                         f"{source.describe()}")
            else:
                self.store.set_condition(key, None)
        for use in self.uses:
            watching = self.informers.get(use.source)
            if watching is None or not watching.synced:
                continue
            service = self._service(use.service)
            capacity = service.load_balancing.capacity if service is not None else None
            objects = watching.snapshot().values()
            if use.source.service is not None:
                found = from_slices(objects, use.discovery.port, nodes, capacity)
            else:
                found = from_pods(objects, use.discovery.port, nodes, capacity)
            self._report(use, found)
            changed |= self.store.set_discovered(use.service, use.version, found.endpoints)
        return changed

    def _service(self, name: str) -> ModelService | None:
        try:
            return self.store.declared.service(name)
        except KeyError:
            return None

    def _report(self, use: Use, found: Found) -> None:
        notes = list(found.notes)
        what = use.discovery.describe(use.source.namespace)
        if not found.endpoints:
            notes.insert(0, f"no endpoints: {what} match nothing ready")
        for gpu in found.unknown_gpus:
            notes.append(f"GPU {gpu} is not in loadBalancing.capacity: default weight")
        key = (use.service, use.version)
        if notes != list(self.notes.get(key, ())):
            for note in notes:
                log.warning("%s/%s: %s", use.service, use.version, note)
            if not notes and key in self.notes:
                log.info("%s/%s: %d endpoints from %s", use.service, use.version,
                         len(found.endpoints), what)
        self.notes[key] = tuple(notes)

    def view(self, service: str) -> dict[str, object]:
        """Per discovered version: where from, how many endpoints, notes (API and status)."""
        out: dict[str, object] = {}
        found = self.store.discovered(service)
        for use in self.uses:
            if use.service == service:
                out[use.version] = {
                    "source": use.discovery.describe(use.source.namespace),
                    "endpoints": len(found.get(use.version, ())),
                    "notes": list(self.notes.get((use.service, use.version), ())),
                }
        return out

"""Kubernetes mode in the composition root: sources, discovery, the lead and what it does.

Every replica watches the custom resources (a config source like the files),
discovers endpoints, and serves xDS from the same desired state. The replica
that holds the Lease also runs the experiments (the manager reconciles only
while it leads; losing the lead stops the runs where they are), publishes
their traffic for the followers, writes the external routers' objects and the
resources' status. A replica that starts to lead reads the journal from its
ConfigMaps first, so a run continues at the same step with the same weights.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from controlplane.config import LoadResult
from controlplane.kube.client import Kube, own_namespace
from controlplane.kube.discovery import Discovery
from controlplane.kube.journal import KubeStateStore
from controlplane.kube.leader import LeaderElector, LeaseSettings
from controlplane.kube.options import SOURCE, KubeOptions, default_identity
from controlplane.kube.replicas import ReplicaCounts
from controlplane.kube.resources import ResourceSource, parse_file_name
from controlplane.kube.status import StatusWriter
from controlplane.kube.traffic import TrafficShare
from controlplane.model import MODEL_SERVICE_KIND
from controlplane.rollout.journal import Journal
from controlplane.routers import Router, routers_for
from controlplane.routers.external import ExternalRouter
from controlplane.routers.gateway_api import GatewayApiRouter
from controlplane.routers.istio import IstioRouter
from controlplane.state import StateError

if TYPE_CHECKING:
    from controlplane.app import App

log = logging.getLogger("sluice.kube")

class KubeMode:
    def __init__(self, app: App, options: KubeOptions) -> None:
        self.app = app
        self.options = options
        self.kube = Kube.at(options.host) if options.host else Kube.connect(options.kubeconfig)
        self.namespace = options.namespace or own_namespace()
        store = app.store
        self.resources = ResourceSource(self.kube, options.watch_namespace, name=SOURCE)
        self.resources.on_problem = lambda m: store.set_condition("kubernetes: resources", m)
        store.set_condition("kubernetes: resources", "waiting for the first list of custom "
                            "resources")
        self.discovery = Discovery(self.kube, store, self.namespace_of)
        self.elector = LeaderElector(self.kube, LeaseSettings(
            self.namespace, options.identity or default_identity(),
            lease_duration_s=options.lease_duration_s,
            renew_deadline_s=options.renew_deadline_s, retry_period_s=options.retry_period_s),
            advertise=self.admin_url)
        # Records are written on the event loop (durable first): short timeouts, so a
        # partitioned leader stalls its proxies' xDS for at most a moment per write.
        self.journal_store = KubeStateStore(self.kube.with_timeout((1.0, 2.0)), self.namespace)
        self.traffic = TrafficShare(self.kube, store, self.namespace)
        self.external: dict[str, ExternalRouter] = {
            "gatewayAPI": GatewayApiRouter(self.kube, store, self.namespace_of),
            "istio": IstioRouter(self.kube, store, self.namespace_of),
        }
        informers = dict(zip(("ModelService", "Experiment"), self.resources.informers,
                             strict=True))
        self.status = StatusWriter(self.kube, store, lambda: app.rollouts, informers,
                                   self.discovery.view, options.status_interval_s)
        routers: Mapping[str, Router] = self.external
        app.rollouts.deps.journal = Journal(self.journal_store)
        app.routing.active = False  # until this replica leads: the leader's weights apply
        # The batch cap per proxy divides by every replica's proxies, not the leader's.
        self.replicas = ReplicaCounts(self.kube, self.namespace, self.elector.settings.identity,
                                      lambda: len(app.proxy_nodes()),
                                      interval_s=options.replica_count_interval_s)
        app.routing.proxies = self.replicas.total
        app.rollouts.deps.routers = routers_for(store, app.proxy_view, routers)

    @property
    def leading(self) -> bool:
        return self.elector.leading

    def admin_url(self) -> str | None:
        """How the other replicas reach this one's admin API (see KubeOptions)."""
        if self.options.advertise_admin:
            return self.options.advertise_admin.rstrip("/")
        if not self.app.admin_port:
            return None
        scheme = "https" if self.app.options.admin_tls else "http"
        host = os.environ.get("POD_IP") or self.app.options.admin_address.rsplit(":", 1)[0]
        if host in ("", "0.0.0.0", "::", "[::]"):
            return None  # nothing the others could dial
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"{scheme}://{host}:{self.app.admin_port}"

    def leader(self) -> tuple[bool, str | None]:
        """(this replica leads, the leader's admin URL as last read from the Lease)."""
        return self.elector.leading, self.elector.holder_admin

    @property
    def identity(self) -> str:
        return self.elector.settings.identity

    def namespace_of(self, service: str) -> str:
        """A service's own namespace (its resource's), else Sluice's."""
        status = self.app.store.status_of(MODEL_SERVICE_KIND, service)
        parsed = parse_file_name(status.file) if status is not None else None
        return parsed[0] if parsed is not None else self.namespace

    def on_load(self) -> None:
        self.discovery.reconcile()

    def discovery_view(self, service: str) -> dict[str, Any]:
        return self.discovery.view(service)

    # -- the lead

    async def _lead(self) -> None:
        try:
            await asyncio.to_thread(self.journal_store.load)
        except Exception as exc:  # the runs start afresh rather than not at all
            log.error("cannot read the journal from ConfigMaps in %s: %s", self.namespace, exc)
        self.traffic.leading = True
        self.replicas.leading = True
        self.traffic.published = None
        self.app.routing.active = True
        for router in self.external.values():
            router.leading = True
        self.status.leading = True
        self.app.rollouts.restore_outcomes()
        self.app.rollouts.reconcile()
        log.info("%s runs the experiments now (%d)", self.identity,
                 len(self.app.rollouts.runners))

    async def _follow(self) -> None:
        self.status.leading = False
        for router in self.external.values():
            router.leading = False
            router.forget()
        self.status.forget()
        await self.app.rollouts.stand_down()
        try:  # the looks of the last moments, when the API server still takes them
            await asyncio.to_thread(self.journal_store.flush)
        except StateError as exc:
            log.info("journal not flushed on losing the lead: %s", exc)
        self.app.routing.active = False
        self.replicas.leading = False
        self.traffic.leading = False
        self.traffic.mirror()

    async def _flush_journal(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            if self.leading and self.journal_store.pending:
                try:
                    await asyncio.to_thread(self.journal_store.flush)
                except StateError as exc:
                    log.warning("cannot write the journal: %s", exc)

    async def run(self, stop: asyncio.Event) -> None:
        def on_result(result: LoadResult) -> None:
            self.app.on_source_load(result, SOURCE, self.resources.changed_at)

        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.resources.run(on_result, stop))
                tasks.create_task(self.discovery.run(stop))
                tasks.create_task(self.traffic.run(stop))
                tasks.create_task(self.replicas.run(stop))
                tasks.create_task(self.elector.run(stop, self._lead, self._follow))
                tasks.create_task(self.status.run(stop))
                tasks.create_task(self._flush_journal(stop))
                for router in self.external.values():
                    tasks.create_task(router.run(stop))
        finally:
            self.kube.close()

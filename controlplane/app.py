"""Composition root: wires sources → store → snapshots → xDS server and the admin API.

One task group; everything stops when ``stop`` is set (SIGTERM in ``sluice serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from controlplane.api_auth import Auth, read_tokens
from controlplane.api_experiments import ExperimentsApi
from controlplane.api_forward import Forwarder
from controlplane.config import LoadResult
from controlplane.debounce import Debounce
from controlplane.experiment import Webhook
from controlplane.gcpolicy import FullCollections, collect_on_schedule
from controlplane.kube.options import SOURCE as KUBE_SOURCE
from controlplane.kube.options import KubeOptions
from controlplane.metrics import Metrics
from controlplane.metrics_experiments import ExperimentCollector
from controlplane.notify import Notifier
from controlplane.notify import event as notify_event
from controlplane.proxy_rows import new_nacks
from controlplane.rollout.journal import Journal
from controlplane.rollout.manager import RolloutManager
from controlplane.rollout.sources import provider_for
from controlplane.rollout.sync import XdsProxyView
from controlplane.routing.controller import RoutingCollector, RoutingController
from controlplane.sources.file import FileSource
from controlplane.state import StateError, StateStore
from controlplane.store import Store
from controlplane.worker_messages import WorkerConfig
from controlplane.worker_pool import WorkerPool
from xds.build import build_snapshot
from xds.cache import ResourceEncoder, SnapshotCache
from xds.limits import StreamLimits
from xds.lrs import ClusterLoad
from xds.protocol import Nack
from xds.server import XdsServer
from xds.tls import TlsFiles

if TYPE_CHECKING:
    from controlplane.kube.mode import KubeMode

log = logging.getLogger("sluice")
# Retention of the state file's events: a year-long experiment's looks fit (MAX_LOOKS is
# 100,000 per experiment), and a file that grows forever does not.
EVENT_MAX_AGE_S = 90 * 86400.0
EVENT_MAX_PER_KEY = 200_000
TRIM_EVERY_S = 3600.0


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def split_address(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{what}: expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class ServeOptions:
    config_paths: tuple[str, ...]
    xds_address: str = "127.0.0.1:18000"
    admin_address: str = "127.0.0.1:19000"
    state_path: str | None = None
    poll_interval_s: float = 0.1  # a stat of 100 files takes ~0.5 ms
    debounce_quiet_s: float = 0.1
    debounce_ceiling_s: float = 1.0
    api_token_file: str | None = None
    api_read_token_file: str | None = None  # reads need a token too
    admin_tls: tuple[str, str] | None = None  # (cert, key) for HTTPS on the admin port
    notify: tuple[Webhook, ...] = ()  # server-wide notification targets
    tls: TlsFiles | None = None  # mTLS on the xDS port
    limits: StreamLimits = field(default_factory=StreamLimits)
    kubernetes: KubeOptions | None = None  # sluice serve --kubernetes
    workers: int = 1  # processes serving xDS on one port (sluice serve --workers)
    # Full garbage collections on a schedule (``sluice serve`` sets it, with the
    # thresholds of ``controlplane.gcpolicy``); None leaves the process's collector alone.
    full_collections: FullCollections | None = None


class App:
    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.metrics = Metrics()
        self.source = FileSource(options.config_paths, interval=options.poll_interval_s) \
            if options.config_paths or options.kubernetes is None else None
        self.store = Store(tuple([self.source.name] if self.source else []) +
                           ((KUBE_SOURCE,) if options.kubernetes else ()))
        self.cache = SnapshotCache()
        self.encoder = ResourceEncoder()
        # Endpoint weights and batch caps from the proxies' load reports (LRS, served
        # on the xDS port); the proxy count sizes each proxy's share of the batch cap.
        self.routing = RoutingController(self.store, lambda: len(self.proxy_nodes()),
                                         nodes=self.proxy_nodes)
        if options.workers < 1:
            raise ValueError(f"workers: expected at least 1, got {options.workers}")
        self.xds = XdsServer(self.cache, observer=self.metrics,
                             extra_handlers=(self.routing.lrs.handler(),),
                             tls=options.tls, limits=options.limits,
                             stream_ids=(0, options.workers), reuse_port=options.workers > 1)
        self.pool = WorkerPool(options.workers, self.cache, _PoolSink(self), self._worker_config) \
            if options.workers > 1 else None
        self.metrics.registry.register(RoutingCollector(self.routing))
        self.metrics.bind(
            lambda: self.xds.active_streams + (self.pool.active_streams() if self.pool else 0),
            lambda: self.encoder.serializations)
        self.state: StateStore | None = None
        self.xds_port = 0
        self._xds_bound = ""  # HOST:PORT once bound (the port the workers join)
        self.admin_port = 0
        self._change_seen_at: float | None = None
        self._debounce = Debounce(options.debounce_quiet_s, options.debounce_ceiling_s)
        self.installed_revision = 0  # store revision of the installed snapshot
        self._notified_errors: list[str] = []
        self._nacks_seen: set[tuple[str, str]] = set()
        self.proxy_view = XdsProxyView(self.cache, lambda: self.xds.proxies.values(),
                                       lambda: self.installed_revision, remote=self.pool)
        self.notifier = Notifier(options.notify)
        self.rollouts = RolloutManager(self.store, self.proxy_view, Journal(),
                                       lambda e: provider_for(e, self.proxy_view),
                                       notify=self.notifier.emit)
        self.metrics.on_nack = self._on_nack
        self.metrics.registry.register(ExperimentCollector(self.store, self.rollouts))
        from controlplane.api import AdminApi

        self.auth = Auth(write=read_tokens(options.api_token_file),
                         read=read_tokens(options.api_read_token_file, "--api-read-token-file"))
        self.api = AdminApi(self.store, self.xds, self.metrics,
                            ExperimentsApi(self.rollouts, self.auth), auth=self.auth,
                            tls=options.admin_tls, workers=self.pool)
        self.kube: KubeMode | None = None
        if options.kubernetes is not None:
            from controlplane.kube.mode import KubeMode

            self.kube = KubeMode(self, options.kubernetes)
        if self.kube is not None:
            self.api.discovery_view = self.kube.discovery_view
            self.api.forwarder = Forwarder(self.kube.leader, self.kube.identity)

    async def run(self, stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
        if self.options.state_path:
            self.state = StateStore.open(self.options.state_path)
            if self.kube is None:  # Kubernetes mode keeps the journal in ConfigMaps
                self.rollouts.deps.journal = Journal(self.state)
        if self.kube is None:  # in Kubernetes mode, the replica that leads does this
            self.rollouts.restore_outcomes()
        xds_host, xds_port = split_address(self.options.xds_address, "--xds-address")
        admin_host, admin_port = split_address(self.options.admin_address, "--admin-address")
        if self.options.tls is None and not _loopback(xds_host):
            log.warning("xDS on %s without TLS: any client that reaches it can read every "
                        "proxy's configuration; use --tls-cert/--tls-key/--tls-client-ca",
                        xds_host)
        self.xds_port = await self.xds.start(f"{xds_host}:{xds_port}")
        self._xds_bound = (f"[{xds_host}]" if ":" in xds_host else xds_host) + f":{self.xds_port}"
        try:
            self.admin_port = await self.api.start(admin_host, admin_port)
            log.info(
                "xDS on %s:%d, admin on http://%s:%d",
                xds_host,
                self.xds_port,
                admin_host,
                self.admin_port,
            )
            if started is not None:
                started.set()
            async with asyncio.TaskGroup() as tasks:
                if self.source is not None:
                    tasks.create_task(self.source.run(self._on_load, stop))
                tasks.create_task(self._build_loop(stop))
                if self.kube is not None:
                    tasks.create_task(self.kube.run(stop))
                else:
                    tasks.create_task(self.rollouts.run(stop))
                tasks.create_task(self.routing.run(stop))
                if self.pool is not None:
                    tasks.create_task(self.pool.run(stop))
                if self.state is not None:
                    tasks.create_task(self._trim_loop(self.state, stop))
                if self.options.full_collections is not None:
                    tasks.create_task(collect_on_schedule(
                        self.options.full_collections, lambda: self.xds.last_activity, stop))
        finally:
            await self.routing.lrs.close()
            await self.xds.stop(grace=0.5)
            await self.api.stop()
            await self.notifier.close()
            if self.state is not None:
                self.state.close()

    async def _trim_loop(self, state: StateStore, stop: asyncio.Event) -> None:
        """Keeps the state file bounded: events (looks, decisions, audit) older than
        EVENT_MAX_AGE_S or beyond EVENT_MAX_PER_KEY per key go, hourly."""
        while not stop.is_set():
            try:
                gone = state.trim_events(EVENT_MAX_AGE_S, EVENT_MAX_PER_KEY)
            except StateError as exc:
                log.error("cannot trim old events: %s", exc)
            else:
                if gone:
                    log.info("trimmed %d old events from the state file", gone)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TRIM_EVERY_S)

    def _on_load(self, result: LoadResult) -> None:
        assert self.source is not None
        self.on_source_load(result, self.source.name, self.source.changed_at)

    def on_source_load(self, result: LoadResult, name: str, changed_at: float | None) -> None:
        changed = self.store.apply_load(name, result)
        [status] = [s for s in self.store.sources() if s.name == name]
        if status.errors:
            self.metrics.config_reloads.labels(name, "rejected").inc()
            self.metrics.config_valid.labels(name).set(0)
            for error in status.errors:
                log.error("config error (only this document is frozen; the rest applies): %s",
                          error)
            errors = [str(e) for e in status.errors]
            if errors != self._notified_errors:
                self._notified_errors = errors
                self.notifier.emit(notify_event("config", source=name, errors=errors[:50],
                                                message="; ".join(errors[:3])))
        else:
            self._notified_errors = []
            self.metrics.config_reloads.labels(name, "ok").inc()
            self.metrics.config_valid.labels(name).set(1)
        for warning in status.warnings:
            log.warning("config: %s", warning)
        self.metrics.observe_documents(self.store.statuses())
        if self.kube is not None:
            self.kube.on_load()
        if self.kube is None or self.kube.leading:  # only the leader runs experiments
            self.rollouts.reconcile()
        if changed:
            self._change_seen_at = changed_at
        if changed and self.state is not None:
            self.state.append_event(
                "config",
                name,
                {
                    "revision": self.store.revision,
                    "files": list(result.files),
                    "services": [s.name for s in self.store.state.services],
                    "errors": [str(e) for e in status.errors][:20],
                },
            )

    def _on_nack(self, type_url: str, variant: str) -> None:
        """A proxy rejected configuration: tell people once per proxy and version."""
        for node, type_url_, nack in new_nacks(self.xds.proxies.values(), type_url,
                                               self._nacks_seen):
            self.notify_nack(node, type_url_, nack)

    def notify_nack(self, node: str, type_url: str, nack: Nack) -> None:
        self.notifier.emit(notify_event(
            "nack", proxy=node, type=type_url.rsplit(".", 1)[-1],
            version=nack.version, message=nack.message[:500]))

    def proxy_nodes(self) -> set[str]:
        """Node ids of every connected proxy, on every xDS process."""
        nodes = {p.node_id for p in self.xds.proxies.values()}
        if self.pool is not None:
            nodes.update(s.node_id for s in self.pool.streams())
        return nodes

    def _worker_config(self, index: int, count: int) -> WorkerConfig:
        return WorkerConfig(index, count, self._xds_bound, self.options.tls,
                            self.options.limits, self.routing.lrs.interval_s,
                            full_collections=self.options.full_collections)

    async def _build_loop(self, stop: asyncio.Event) -> None:
        debounce = self._debounce
        while not stop.is_set():
            deadline = debounce.deadline()
            timeout = 0.5 if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.store.changed.wait(), timeout=min(timeout, 0.5))
            if self.store.changed.is_set():
                self.store.changed.clear()
                # Quiet time counts from when the change was seen, not from when
                # its load finished (the source already waited for files to settle).
                seen, self._change_seen_at = self._change_seen_at, None
                debounce = debounce.changed(seen if seen is not None else time.monotonic())
            if debounce.due(time.monotonic()):
                self._install(debounce.first_change)
                debounce = debounce.flushed()

    def _install(self, changed_at: float | None) -> None:
        revision = self.store.revision
        try:
            snapshot = build_snapshot(self.store.state, self.encoder)
        except Exception:
            # The store only holds validated state, so this is a bug; keep serving
            # the last good snapshot rather than dying.
            log.exception("snapshot build failed; the previous snapshot keeps serving")
            return
        self.installed_revision = revision
        if self.cache.set(snapshot, changed_at=changed_at):
            self.metrics.snapshot_builds.inc()
            log.info("snapshot %s installed (revision %d)", snapshot.version, self.store.revision)


class _PoolSink:
    """Where the xDS workers' reports go: this process's metrics, routing, notices."""

    def __init__(self, app: App) -> None:
        self.app = app

    def count(self, event: str, type_url: str, variant: str, n: int) -> None:
        self.app.metrics.count(event, type_url, variant, n)

    def stream_error(self, reason: str, n: int) -> None:
        self.app.metrics.stream_errors.labels(reason).inc(n)

    def converged(self, seconds: float) -> None:
        self.app.metrics.converged(seconds)

    def nack(self, node_id: str, type_url: str, nack: Nack) -> None:
        self.app.notify_nack(node_id, type_url, nack)

    def load(self, node_id: str, clusters: list[ClusterLoad]) -> None:
        self.app.routing.on_report(node_id, clusters)


async def run_server(
    config_paths: Sequence[str | Path],
    xds_address: str,
    admin_address: str,
    state_path: str | None = None,
    stop: asyncio.Event | None = None,
    started: asyncio.Event | None = None,
    api_token_file: str | None = None,
) -> None:
    options = ServeOptions(
        tuple(str(p) for p in config_paths), xds_address, admin_address, state_path,
        api_token_file=api_token_file,
    )
    await App(options).run(stop or asyncio.Event(), started)

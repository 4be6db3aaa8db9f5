"""Composition root: wires sources → store → snapshots → xDS server and the admin API.

One task group; everything stops when ``stop`` is set (SIGTERM in ``sluice serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from controlplane.api_experiments import ExperimentsApi, read_token
from controlplane.config import LoadResult
from controlplane.debounce import Debounce
from controlplane.experiment import Webhook
from controlplane.metrics import Metrics
from controlplane.metrics_experiments import ExperimentCollector
from controlplane.notify import Notifier
from controlplane.notify import event as notify_event
from controlplane.rollout.journal import Journal
from controlplane.rollout.manager import RolloutManager
from controlplane.rollout.sources import provider_for
from controlplane.rollout.sync import XdsProxyView
from controlplane.sources.file import FileSource
from controlplane.state import StateStore
from controlplane.store import Store
from xds.build import build_snapshot
from xds.cache import ResourceEncoder, SnapshotCache
from xds.server import XdsServer

log = logging.getLogger("sluice")


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
    notify: tuple[Webhook, ...] = ()  # server-wide notification targets


class App:
    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.metrics = Metrics()
        self.source = FileSource(options.config_paths, interval=options.poll_interval_s)
        self.store = Store((self.source.name,))
        self.cache = SnapshotCache()
        self.encoder = ResourceEncoder()
        self.xds = XdsServer(self.cache, observer=self.metrics)
        self.metrics.bind(lambda: self.xds.active_streams, lambda: self.encoder.serializations)
        self.state: StateStore | None = None
        self.xds_port = 0
        self.admin_port = 0
        self._change_seen_at: float | None = None
        self._debounce = Debounce(options.debounce_quiet_s, options.debounce_ceiling_s)
        self.installed_revision = 0  # store revision of the installed snapshot
        self._notified_errors: list[str] = []
        self._nacks_seen: set[tuple[str, str]] = set()
        self.proxy_view = XdsProxyView(self.cache, lambda: self.xds.proxies.values(),
                                       lambda: self.installed_revision)
        self.notifier = Notifier(options.notify)
        self.rollouts = RolloutManager(self.store, self.proxy_view, Journal(),
                                       lambda e: provider_for(e, self.proxy_view),
                                       notify=self.notifier.emit)
        self.metrics.on_nack = self._on_nack
        self.metrics.registry.register(ExperimentCollector(self.store, self.rollouts))
        from controlplane.api import AdminApi

        self.api = AdminApi(self.store, self.xds, self.metrics,
                            ExperimentsApi(self.rollouts, read_token(options.api_token_file)))

    async def run(self, stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
        if self.options.state_path:
            self.state = StateStore.open(self.options.state_path)
            self.rollouts.deps.journal = Journal(self.state)
        self.rollouts.restore_outcomes()
        xds_host, xds_port = split_address(self.options.xds_address, "--xds-address")
        admin_host, admin_port = split_address(self.options.admin_address, "--admin-address")
        self.xds_port = await self.xds.start(f"{xds_host}:{xds_port}")
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
                tasks.create_task(self.source.run(self._on_load, stop))
                tasks.create_task(self._build_loop(stop))
                tasks.create_task(self.rollouts.run(stop))
        finally:
            await self.xds.stop(grace=0.5)
            await self.api.stop()
            await self.notifier.close()
            if self.state is not None:
                self.state.close()

    def _on_load(self, result: LoadResult) -> None:
        name = self.source.name
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
        self.rollouts.reconcile()
        if changed:
            self._change_seen_at = self.source.changed_at
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
        for info in self.xds.proxies.values():
            for status in info.status():
                nack = status.last_nack
                if nack is None or status.type_url != type_url:
                    continue
                key = (info.node_id, nack.version)
                if key in self._nacks_seen:
                    continue
                self._nacks_seen.add(key)
                self.notifier.emit(notify_event(
                    "nack", proxy=info.node_id, type=type_url.rsplit(".", 1)[-1],
                    version=nack.version, message=nack.message[:500]))

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

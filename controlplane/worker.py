"""An xDS worker process of ``sluice serve --workers N`` (``controlplane.worker_pool``
starts it; ``python -m controlplane.worker FD``).

It binds the primary's xDS port beside it (SO_REUSEPORT) and serves its streams
with the same stream machines as the primary, from snapshots the primary
ships: the resources' serialized bytes travel, so versions and bytes are the
primary's own. Every ``report_interval_s`` it reports what changed: streams
that joined or left, counters, convergence times, NACKs, the proxies' load
reports (LRS), and the sync state of services the primary asked about. It
answers the admin API's questions about its streams when asked. It stops when
the primary closes the socket, whichever way the primary ended.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import socket
import sys

from controlplane import gcpolicy
from controlplane.consistency import proxy_views
from controlplane.gcpolicy import collect_on_schedule
from controlplane.proxy_rows import NackNotice, new_nacks, proxy_rows
from controlplane.rollout.sync import sync_part, wanted_resources
from controlplane.worker_messages import (
    Answer,
    Query,
    Report,
    ShipSnapshot,
    StreamEntry,
    SyncAnswer,
    SyncQueries,
    WorkerConfig,
    receive,
    send,
)
from xds.cache import SnapshotCache
from xds.lrs import ClusterLoad, LoadReportingService
from xds.server import XdsServer
from xds.snapshot import Resource, Snapshot

log = logging.getLogger("sluice.worker")


class ReportingObserver:
    """``XdsObserver`` that keeps what the next report carries."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.converged_s: list[float] = []
        self.nacked_types: set[str] = set()
        self.events = 0  # anything that can change a stream's sync state

    def pushed(self, type_url: str, variant: str) -> None:
        self.counts["pushed", type_url, variant] += 1
        self.events += 1

    def acked(self, type_url: str, variant: str) -> None:
        self.counts["acked", type_url, variant] += 1
        self.events += 1

    def nacked(self, type_url: str, variant: str) -> None:
        self.counts["nacked", type_url, variant] += 1
        self.nacked_types.add(type_url)
        self.events += 1

    def converged(self, seconds: float) -> None:
        self.converged_s.append(seconds)

    def stream_error(self, reason: str) -> None:
        self.errors[reason] += 1


class Worker:
    def __init__(self, config: WorkerConfig, writer: asyncio.StreamWriter) -> None:
        self.config = config
        self.writer = writer
        self.cache = SnapshotCache()
        self.observer = ReportingObserver()
        self.loads: list[tuple[str, tuple[ClusterLoad, ...]]] = []
        self.lrs = LoadReportingService(self._on_load, config.lrs_interval_s)
        self.xds = XdsServer(self.cache, observer=self.observer,
                             extra_handlers=(self.lrs.handler(),), tls=config.tls,
                             limits=config.limits, stream_ids=(config.index, config.count),
                             reuse_port=True)
        self._known: dict[tuple[str, str, str], Resource] = {}
        self._queries: frozenset[tuple[str, tuple[str, ...]]] = frozenset()
        self._reported: set[int] = set()
        self._nacks_seen: set[tuple[str, str]] = set()
        self._sync_basis: tuple[int, str, int, frozenset[tuple[str, tuple[str, ...]]]] | None \
            = None
        self._first = True

    def _on_load(self, node: str, clusters: list[ClusterLoad]) -> None:
        self.loads.append((node, tuple(clusters)))

    def apply(self, ship: ShipSnapshot) -> None:
        for r in ship.new:
            self._known[(r.type_url, r.name, r.version)] = r
        snapshot = Snapshot.of({t: [self._known[(t, n, v)] for n, v in pairs]
                                for t, pairs in ship.names.items()})
        if snapshot.version != ship.version:  # the same bytes must give the same version
            raise ValueError(f"snapshot {ship.version} rebuilt as {snapshot.version}")
        self._known = {(r.type_url, r.name, r.version): r
                       for t in snapshot.types.values() for r in t.resources.values()}
        self.cache.set(snapshot, changed_at=ship.changed_at)

    def answer(self, query: Query) -> Answer:
        infos = list(self.xds.proxies.values())
        if query.kind == "proxies":
            return Answer(query.id, proxy_rows(infos, self.config.index, query.proxy_filter))
        if query.kind == "consistency" and query.service is not None:
            return Answer(query.id, proxy_views(query.service, self.cache.snapshot, infos))
        raise ValueError(f"unknown worker query {query.kind!r}")

    def report(self) -> Report | None:
        proxies = self.xds.proxies
        joined = tuple(
            StreamEntry(i.stream_id, i.node_id, i.node_cluster, i.user_agent, i.variant,
                        i.connected_at, i.admin_url)
            for sid, i in proxies.items() if sid not in self._reported)
        left = tuple(sid for sid in self._reported if sid not in proxies)
        self._reported.difference_update(left)
        self._reported.update(e.stream_id for e in joined)
        obs = self.observer
        nacks: list[NackNotice] = []
        for type_url in sorted(obs.nacked_types):
            nacks += new_nacks(proxies.values(), type_url, self._nacks_seen)
        obs.nacked_types.clear()
        syncs = self._syncs()
        if not (self._first or joined or left or obs.counts or obs.errors or obs.converged_s
                or nacks or self.loads or syncs):
            return None
        report = Report(
            self.config.index, os.getpid(), self.xds.active_streams,
            self.cache.snapshot.version, joined, left,
            tuple((e, t, v, n) for (e, t, v), n in obs.counts.items()),
            tuple(obs.errors.items()), tuple(obs.converged_s), tuple(nacks),
            tuple(self.loads), syncs, first=self._first)
        self._first = False
        obs.counts.clear()
        obs.errors.clear()
        obs.converged_s = []
        self.loads = []
        return report

    def _syncs(self) -> tuple[SyncAnswer, ...]:
        """The asked services' sync state, when anything it reads has changed."""
        basis = (self.observer.events, self.cache.snapshot.version, len(self._reported),
                 self._queries)
        if not self._queries or basis == self._sync_basis:
            return ()
        self._sync_basis = basis
        snapshot = self.cache.snapshot
        out = []
        for service, versions in sorted(self._queries):
            part = sync_part(self.xds.proxies.values(),
                             wanted_resources(snapshot, service, versions))
            out.append(SyncAnswer(service, versions, snapshot.version, part.proxies,
                                  part.pending, part.nacked))
        return tuple(out)

    async def run(self, reader: asyncio.StreamReader) -> None:
        await self.xds.start(self.config.address)
        reporter = asyncio.create_task(self._report_loop())
        stop_collector = asyncio.Event()
        collector = (asyncio.create_task(collect_on_schedule(
            self.config.full_collections, lambda: self.xds.last_activity, stop_collector))
            if self.config.full_collections is not None else None)
        try:
            while True:
                message = await receive(reader)
                if message is None:
                    return
                if isinstance(message, ShipSnapshot):
                    self.apply(message)
                elif isinstance(message, SyncQueries):
                    self._queries = message.queries
                elif isinstance(message, Query):
                    await send(self.writer, self.answer(message))
                else:
                    raise ValueError(f"unexpected message {type(message).__name__}")
        finally:
            stop_collector.set()
            if collector is not None:
                await collector
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            await self.lrs.close()
            await self.xds.stop(grace=0.5)

    async def _report_loop(self) -> None:
        while True:
            report = self.report()
            if report is not None:
                await send(self.writer, report)
            await asyncio.sleep(self.config.report_interval_s)


async def main(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    config = await receive(reader)
    if not isinstance(config, WorkerConfig):
        raise SystemExit("sluice worker: the first message must be its configuration")
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    # Ctrl-C reaches the whole process group: the primary decides when workers stop.
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    if config.full_collections is not None:
        gcpolicy.configure()
    log.info("xDS worker %d (pid %d) on %s", config.index, os.getpid(), config.address)
    with contextlib.suppress(asyncio.CancelledError):
        await Worker(config, writer).run(reader)


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("SLUICE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(int(sys.argv[1])))

"""The primary's side of ``sluice serve --workers N``: start, feed and hear the workers.

The primary serves xDS streams itself (worker 0) and starts N-1 worker
processes (``controlplane.worker``) that bind the same port. Each installed
snapshot is shipped to every worker as serialized resources, only those the
worker does not hold yet. Workers report their streams, counters, NACKs and
load reports; ``sync_part`` and ``query`` give the rollouts and the admin API
one view of every stream. A worker that dies is started again (its proxies
reconnect, to whichever process the kernel picks).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from controlplane.model import ModelService
from controlplane.proxy_rows import ProxyFilter
from controlplane.rollout.sync import SyncPart
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
from xds.lrs import ClusterLoad
from xds.protocol import Nack
from xds.snapshot import Snapshot

log = logging.getLogger("sluice.workers")

QUERY_TIMEOUT_S = 5.0
SYNC_QUERY_TTL_S = 30.0  # a service nobody asked about for this long is no longer reported
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class PoolSink(Protocol):
    """Where the workers' reports go (the app's metrics, routing and notifications)."""

    def count(self, event: str, type_url: str, variant: str, n: int) -> None: ...
    def stream_error(self, reason: str, n: int) -> None: ...
    def converged(self, seconds: float) -> None: ...
    def nack(self, node_id: str, type_url: str, nack: Nack) -> None: ...
    def load(self, node_id: str, clusters: list[ClusterLoad]) -> None: ...


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    writer: asyncio.StreamWriter
    listening: bool = False
    active_streams: int = 0
    snapshot_version: str = ""
    streams: dict[int, StreamEntry] = field(default_factory=dict)
    syncs: dict[tuple[str, tuple[str, ...]], SyncAnswer] = field(default_factory=dict)
    shipped: set[tuple[str, str, str]] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    outbox: list[object] = field(default_factory=list)


class WorkerPool:
    def __init__(self, count: int, cache: SnapshotCache, sink: PoolSink,
                 config: Callable[[int, int], WorkerConfig],
                 clock: Callable[[], float] = time.monotonic) -> None:
        if count < 2:
            raise ValueError("a worker pool needs at least 2 processes (the primary is one)")
        self.count = count
        self.cache = cache
        self.sink = sink
        self._config = config  # (index, count) -> its WorkerConfig
        self.clock = clock
        self.workers: dict[int, _Worker] = {}
        self._queries: dict[tuple[str, tuple[str, ...]], float] = {}  # -> last asked
        self._answers: dict[int, asyncio.Future[Answer]] = {}
        self._ids = itertools.count(1)
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        cache.subscribe(lambda _: self._wake_all())

    # -- what the rest of the app reads ---------------------------------------

    def streams(self) -> Iterable[StreamEntry]:
        for w in self.workers.values():
            yield from w.streams.values()

    def active_streams(self) -> int:
        return sum(w.active_streams for w in self.workers.values())

    def admin_urls(self) -> Iterable[str]:
        return {s.admin_url for s in self.streams() if s.admin_url}

    def sync_part(self, service: str, versions: tuple[str, ...],
                  snapshot_version: str) -> SyncPart | None:
        key = (service, versions)
        if key not in self._queries:
            self._queries[key] = self.clock()
            self._send_queries()
            return None
        self._queries[key] = self.clock()
        parts = []
        for w in self.workers.values():
            answer = w.syncs.get(key)
            if answer is None or answer.snapshot_version != snapshot_version:
                return None
            parts.append(answer)
        return SyncPart(tuple(p for a in parts for p in a.proxies),
                        tuple(p for a in parts for p in a.pending),
                        tuple(n for a in parts for n in a.nacked))

    async def query(self, kind: str, service: ModelService | None = None,
                    proxy_filter: ProxyFilter | None = None) -> list[dict[str, Any]]:
        """Every worker's rows; a worker that does not answer in time is left out
        (logged)."""
        loop = asyncio.get_running_loop()
        pending: list[tuple[int, int, asyncio.Future[Answer]]] = []
        for w in list(self.workers.values()):
            if not w.listening:
                continue
            qid = next(self._ids)
            future: asyncio.Future[Answer] = loop.create_future()
            self._answers[qid] = future
            w.outbox.append(Query(qid, kind, service, proxy_filter))
            w.wake.set()
            pending.append((w.index, qid, future))
        rows: list[dict[str, Any]] = []
        for index, qid, future in pending:
            try:
                rows += (await asyncio.wait_for(future, QUERY_TIMEOUT_S)).rows
            except TimeoutError:
                log.warning("worker %d did not answer a %s query within %g s", index, kind,
                            QUERY_TIMEOUT_S)
            finally:
                self._answers.pop(qid, None)
        return rows

    # -- lifecycle --------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Starts the workers and keeps them running until ``stop``."""
        async with asyncio.TaskGroup() as group:
            for index in range(1, self.count):
                group.create_task(self._supervise(index, stop))

    async def _supervise(self, index: int, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            started = self.clock()
            try:
                await self._serve_worker(index, stop)
            except Exception:
                log.exception("xDS worker %d failed", index)
            if stop.is_set():
                return
            failures = 0 if self.clock() - started > 60 else failures + 1
            delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
            log.error("xDS worker %d ended; starting it again in %g s", index, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _serve_worker(self, index: int, stop: asyncio.Event) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "controlplane.worker", str(child.fileno()),
                pass_fds=(child.fileno(),),
                env={**os.environ, "SLUICE_LOG_LEVEL":
                     logging.getLevelName(logging.getLogger().getEffectiveLevel())})
        finally:
            child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        worker = _Worker(index, process, writer)
        self.workers[index] = worker
        sender = asyncio.create_task(self._send_loop(worker))
        stopper = asyncio.create_task(stop.wait())
        try:
            await send(writer, self._config(index, self.count))
            receiving = asyncio.create_task(self._receive_loop(worker, reader))
            await asyncio.wait({receiving, stopper, sender}, return_when=asyncio.FIRST_COMPLETED)
            receiving.cancel()
        finally:
            del self.workers[index]
            sender.cancel()
            stopper.cancel()
            writer.close()  # the worker sees the end of its socket and stops
            try:
                await asyncio.wait_for(process.wait(), 5.0)
            except TimeoutError:
                process.kill()
                await process.wait()

    async def _receive_loop(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        while True:
            message = await receive(reader)
            if message is None:
                return
            if isinstance(message, Report):
                self._on_report(worker, message)
            elif isinstance(message, Answer):
                future = self._answers.pop(message.id, None)
                if future is not None and not future.done():
                    future.set_result(message)
            else:
                raise ValueError(f"unexpected message {type(message).__name__}")

    async def _send_loop(self, worker: _Worker) -> None:
        while True:
            await worker.wake.wait()
            worker.wake.clear()
            if not worker.listening:
                continue
            snapshot = self.cache.snapshot
            if self.cache.ready and worker.snapshot_version != snapshot.version:
                await send(worker.writer, self._ship(worker, snapshot))
                worker.snapshot_version = snapshot.version
            outbox, worker.outbox = worker.outbox, []
            for message in outbox:
                await send(worker.writer, message)

    def _ship(self, worker: _Worker, snapshot: Snapshot) -> ShipSnapshot:
        names = {t: tuple((n, r.version) for n, r in ts.resources.items())
                 for t, ts in snapshot.types.items()}
        keys = {(t, n, v) for t, pairs in names.items() for n, v in pairs}
        new = tuple(r for ts in snapshot.types.values() for r in ts.resources.values()
                    if (r.type_url, r.name, r.version) not in worker.shipped)
        worker.shipped = keys
        return ShipSnapshot(snapshot.version, self.cache.changed_at, names, new)

    def _on_report(self, worker: _Worker, report: Report) -> None:
        if report.first:
            worker.listening = True
            worker.snapshot_version = ""
            worker.outbox.append(self._sync_queries())
            worker.wake.set()
            log.info("xDS worker %d (pid %d) serving", worker.index, report.pid)
        worker.active_streams = report.active_streams
        for sid in report.left:
            worker.streams.pop(sid, None)
        for entry in report.joined:
            worker.streams[entry.stream_id] = entry
        for event, type_url, variant, n in report.counts:
            self.sink.count(event, type_url, variant, n)
        for reason, n in report.stream_errors:
            self.sink.stream_error(reason, n)
        for seconds in report.converged:
            self.sink.converged(seconds)
        for node, type_url, nack in report.nacks:
            self.sink.nack(node, type_url, nack)
        for node, clusters in report.loads:
            self.sink.load(node, list(clusters))
        for answer in report.syncs:
            worker.syncs[(answer.service, answer.versions)] = answer

    def _sync_queries(self) -> SyncQueries:
        now = self.clock()
        for key in [k for k, at in self._queries.items() if now - at > SYNC_QUERY_TTL_S]:
            del self._queries[key]
        return SyncQueries(frozenset(self._queries))

    def _send_queries(self) -> None:
        message = self._sync_queries()
        for w in self.workers.values():
            w.outbox.append(message)
            w.wake.set()

    def _wake_all(self) -> None:
        for w in self.workers.values():
            w.wake.set()

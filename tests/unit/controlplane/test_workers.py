"""The primary and its xDS workers: snapshots shipped byte for byte, reports and
sync answers merged into one view (no processes here; the integration tests run
real ones: tests/integration/test_xds_storm.py, test_xds_workers.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from controlplane.rollout.sync import XdsProxyView
from controlplane.worker import Worker
from controlplane.worker_messages import Report, ShipSnapshot, StreamEntry, SyncAnswer, WorkerConfig
from controlplane.worker_pool import WorkerPool, _Worker
from tests.unit.xds.test_protocol_sotw import FakeEnvoy
from tests.unit.xds.worlds import world
from xds.cache import SnapshotCache
from xds.limits import StreamLimits
from xds.lrs import ClusterLoad, EndpointLoad
from xds.protocol import Nack, SotwStream
from xds.server import ProxyInfo

CLUSTERS = {"chat/v1": "c1", "chat/v2": "c2"}


def split(v1: int) -> dict[str, dict[str, int]]:
    return {"chat/routes": {"chat/v1": v1, "chat/v2": 100 - v1}}


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def count(self, event: str, type_url: str, variant: str, n: int) -> None:
        self.events.append(("count", event, type_url, variant, n))

    def stream_error(self, reason: str, n: int) -> None:
        self.events.append(("error", reason, n))

    def converged(self, seconds: float) -> None:
        self.events.append(("converged", seconds))

    def nack(self, node_id: str, type_url: str, nack: Nack) -> None:
        self.events.append(("nack", node_id, type_url, nack.version))

    def load(self, node_id: str, clusters: list[ClusterLoad]) -> None:
        self.events.append(("load", node_id, clusters))


def config(index: int, count: int) -> WorkerConfig:
    return WorkerConfig(index, count, "127.0.0.1:1", None, StreamLimits(), 1.0)


def pool_and_worker(cache: SnapshotCache) -> tuple[WorkerPool, _Worker, Sink]:
    sink = Sink()
    pool = WorkerPool(2, cache, sink, config, clock=lambda: 100.0)
    worker = _Worker(1, process=None, writer=None)  # type: ignore[arg-type]
    pool.workers[1] = worker
    return pool, worker, sink


def make_worker() -> Worker:
    return Worker(config(1, 2), writer=None)  # type: ignore[arg-type]


def test_a_shipped_snapshot_is_rebuilt_with_the_same_version_and_bytes() -> None:
    cache = SnapshotCache()
    first = world(CLUSTERS, split(90))
    cache.set(first, changed_at=5.0)
    pool, handle, _ = pool_and_worker(cache)
    worker = make_worker()
    ship = pool._ship(handle, first)
    assert len(ship.new) == sum(len(t.resources) for t in first.types.values())
    worker.apply(ship)
    got = worker.cache.snapshot
    assert got.version == first.version and worker.cache.changed_at == 5.0
    for type_url, typed in first.types.items():
        assert {n: (r.version, r.any_bytes, r.delta_bytes) for n, r in typed.resources.items()} \
            == {n: (r.version, r.any_bytes, r.delta_bytes)
                for n, r in got.types[type_url].resources.items()}


def test_only_resources_the_worker_lacks_travel_and_unchanged_ones_stay_the_same_objects() -> None:
    cache = SnapshotCache()
    first, second = world(CLUSTERS, split(90)), world(CLUSTERS, split(40))
    pool, handle, _ = pool_and_worker(cache)
    worker = make_worker()
    worker.apply(pool._ship(handle, first))
    kept = worker.cache.snapshot.types
    ship = pool._ship(handle, second)
    assert [r.name for r in ship.new] == ["chat/routes"]  # only the route changed
    worker.apply(ship)
    assert worker.cache.snapshot.version == second.version
    for type_url, typed in worker.cache.snapshot.types.items():
        for name, r in typed.resources.items():
            if name != "chat/routes":
                assert r is kept[type_url].resources[name]  # shared views stay valid


def test_a_snapshot_that_rebuilds_to_another_version_is_refused() -> None:
    cache = SnapshotCache()
    first = world(CLUSTERS, split(90))
    pool, handle, _ = pool_and_worker(cache)
    ship = pool._ship(handle, first)
    worker = make_worker()
    with pytest.raises(ValueError, match="rebuilt as"):
        worker.apply(ShipSnapshot("0000", None, ship.names, ship.new))
    assert not worker.cache.ready  # the worker keeps serving what it had (nothing)


def test_reports_carry_what_changed_once() -> None:
    worker = make_worker()
    first = worker.report()
    assert first is not None and first.first  # the first report says it listens
    assert worker.report() is None  # nothing happened since
    machine = SotwStream(world(CLUSTERS, split(90)))
    info = ProxyInfo(3, "gw-3", "c", "envoy/1", "sotw", 1.0, machine, admin_url="http://a")
    worker.xds.proxies[3] = info
    worker.observer.pushed("t/Cluster", "sotw")
    worker.observer.converged(0.25)
    worker.lrs.sink("gw-3", [ClusterLoad("chat/v1", 1.0, (EndpointLoad("a:1", 1, 1, 0, 0),))])
    report = worker.report()
    assert report is not None and not report.first
    assert report.joined == (StreamEntry(3, "gw-3", "c", "envoy/1", "sotw", 1.0, "http://a"),)
    assert report.counts == (("pushed", "t/Cluster", "sotw", 1),)
    assert report.converged == (0.25,) and [n for n, _ in report.loads] == ["gw-3"]
    del worker.xds.proxies[3]
    report = worker.report()
    assert report is not None and report.left == (3,) and report.joined == ()
    assert report.counts == () and report.loads == ()


def test_the_pool_merges_reports_into_the_fleet_view() -> None:
    cache = SnapshotCache()
    pool, handle, sink = pool_and_worker(cache)
    entry = StreamEntry(3, "gw-3", "c", "envoy", "sotw", 1.0, "http://gw-3:9901")
    nack = Nack("v9", "bad", 2.0)
    pool._on_report(handle, Report(1, 42, 1, "", (entry,), (), (("acked", "t/R", "sotw", 5),),
                                   (("RequestRate", 1),), (0.5,), (("gw-3", "t/R", nack),),
                                   (("gw-3", ()),), first=True))
    assert handle.listening and list(pool.streams()) == [entry]
    assert pool.active_streams() == 1 and list(pool.admin_urls()) == ["http://gw-3:9901"]
    assert sink.events == [("count", "acked", "t/R", "sotw", 5), ("error", "RequestRate", 1),
                           ("converged", 0.5), ("nack", "gw-3", "t/R", "v9"),
                           ("load", "gw-3", [])]
    pool._on_report(handle, Report(1, 42, 0, "", (), (3,)))
    assert list(pool.streams()) == [] and pool.active_streams() == 0


def test_sync_waits_for_every_worker_to_answer_on_the_current_snapshot() -> None:
    cache = SnapshotCache()
    first = world(CLUSTERS, split(90))
    cache.set(first)
    pool, handle, _ = pool_and_worker(cache)
    proxies: list[ProxyInfo] = []
    view = XdsProxyView(cache, lambda: proxies, lambda: 1, remote=pool)
    machine = SotwStream(first)
    proxies.append(ProxyInfo(0, "gw-0", "c", "envoy", "sotw", time.time(), machine))
    FakeEnvoy(machine).start()
    # The first question registers the service with the workers: not known yet.
    assert not view.sync("chat", ("v1", "v2"), 1).built
    assert handle.outbox  # the query went out
    handle.syncs[("chat", ("v1", "v2"))] = SyncAnswer("chat", ("v1", "v2"), "old", ("gw-1",),
                                                      (), ())
    assert not view.sync("chat", ("v1", "v2"), 1).built  # answered about another snapshot
    handle.syncs[("chat", ("v1", "v2"))] = SyncAnswer("chat", ("v1", "v2"), first.version,
                                                      ("gw-1",), ("gw-1",), ())
    report = view.sync("chat", ("v1", "v2"), 1)
    assert report.built and report.proxies == ("gw-0", "gw-1") and report.pending == ("gw-1",)
    assert not report.synced
    handle.syncs[("chat", ("v1", "v2"))] = SyncAnswer("chat", ("v1", "v2"), first.version,
                                                      ("gw-1",), (), ())
    assert view.sync("chat", ("v1", "v2"), 1).synced


def test_a_worker_answers_sync_questions_only_when_something_changed() -> None:
    worker = make_worker()
    first = world(CLUSTERS, split(90))
    worker.cache.set(first)
    machine = SotwStream(first)
    worker.xds.proxies[3] = ProxyInfo(3, "gw-3", "c", "envoy", "sotw", 1.0, machine)
    worker.report()
    worker._queries = frozenset({("chat", ("v1", "v2"))})
    [answer] = worker._syncs()
    assert answer.snapshot_version == first.version
    assert answer.proxies == () and answer.pending == ()  # it has asked for nothing yet
    assert worker._syncs() == ()
    envoy = FakeEnvoy(machine)
    envoy.start()
    worker.observer.acked("t", "sotw")  # the server reports every ACK to the observer
    [answer] = worker._syncs()
    assert answer.proxies == ("gw-3",) and answer.pending == ()


def test_query_leaves_out_a_worker_that_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("controlplane.worker_pool.QUERY_TIMEOUT_S", 0.05)
    cache = SnapshotCache()
    pool, handle, _ = pool_and_worker(cache)
    handle.listening = True
    assert asyncio.run(pool.query("proxies")) == []
    assert pool._answers == {}  # no future left behind

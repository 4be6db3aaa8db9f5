"""The routing controller: load reports in, endpoint weights and batch caps out.

Thin around the pure parts: ``xds.lrs`` decodes the proxies' load reports
into a ``signals.LoadWindow``; every service's interval the controller takes
its window, computes weights (``weights.update``, policy ``response_time``)
and the batch cap (``batch``, when ``offline`` is set), and hands both to the
store as the service's ``RoutingState``. The store merges them after any
experiment's override: the experiment owns version weights and membership,
routing owns per-endpoint weights, keyed by ``address:port``.

Metrics (read at scrape time, nothing stale survives a removed service):
``sluice_routing_endpoint_weight{service,endpoint}`` (what EDS carries),
``sluice_routing_response_time_seconds{service,endpoint}`` (smoothed),
``sluice_routing_signal{service,endpoint,state}`` (1 for the current state:
ok, stale, new, garbage — a stale or garbage endpoint keeps its last weight),
``sluice_routing_batch_cap{service,scope="proxy"|"fleet"}`` (summed over versions),
``sluice_routing_reporting_proxies{service}`` (those that share the cap),
``sluice_routing_load_reports_total``,
``sluice_routing_garbage_reports_total`` and, with pod metrics from Prometheus,
``sluice_routing_pod_metrics{service,endpoint,state}`` (ok, garbage, absent).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator

import aiohttp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controlplane.model import (
    WEIGHT_SCALE,
    LbPolicy,
    ModelService,
    ResponseTimeTuning,
    RoutingState,
    prior_weight,
    scaled_weights,
)
from controlplane.routing import batch
from controlplane.routing.podmetrics import PodLoad, fetch_pod_load
from controlplane.routing.signals import LoadWindow, WindowTake
from controlplane.routing.weights import (
    EndpointWeight,
    Sample,
    SignalState,
    Tuning,
    signal_state,
    update,
)
from controlplane.store import Store
from xds.lrs import ClusterLoad, LoadReportingService

log = logging.getLogger("sluice.routing")

GARBAGE = Sample(completed=math.nan, busy=math.nan)
LRS_INTERVAL_S = 0.5  # more in-flight readings per window: a sharper Little's law
REPORTERS_FORGET_S = 30.0  # a proxy silent this long no longer takes a share of the cap
NO_REPORTS_WARN_S = 30.0  # proxies connected this long and no report: say so


def routed(service: ModelService) -> bool:
    """Whether the controller has work for the service."""
    return service.load_balancing.policy is LbPolicy.RESPONSE_TIME or service.offline is not None


def interval_s(service: ModelService) -> float:
    candidates = []
    if service.load_balancing.policy is LbPolicy.RESPONSE_TIME:
        tuning = service.load_balancing.response_time or ResponseTimeTuning()
        candidates.append(tuning.interval_ms / 1000)
    if service.offline is not None:
        candidates.append(service.offline.interval_ms / 1000)
    return min(candidates) if candidates else 2.0


def priors(service: ModelService) -> dict[str, int]:
    """Endpoint key -> prior weight, over every version (the first occurrence wins)."""
    out: dict[str, int] = {}
    for version in service.versions:
        for e in version.endpoints:
            out.setdefault(e.key, prior_weight(service, e))
    return out


class RoutingController:
    def __init__(self, store: Store, proxies: Callable[[], int],
                 clock: Callable[[], float] = time.monotonic,
                 lrs_interval_s: float = LRS_INTERVAL_S,
                 nodes: Callable[[], set[str]] | None = None) -> None:
        self.store = store
        self.clock = clock
        # Proxies on every replica (each enforces a share of the batch cap), and the
        # node ids connected to this one (those that send no load report take none).
        self.proxies = proxies
        self.nodes = nodes
        self.window = LoadWindow(clock())
        self.lrs = LoadReportingService(self.on_report, lrs_interval_s)
        self.weights: dict[str, dict[str, EndpointWeight]] = {}
        self.states: dict[str, dict[str, SignalState]] = {}
        self.caps: dict[str, tuple[int, int]] = {}  # service -> (per proxy, fleet)
        self.tunings: dict[str, Tuning] = {}
        self._due: dict[str, float] = {}
        # Per service and version: the cap last set and when it changed.
        self._held: dict[str, dict[str, int]] = {}
        self._cap_changed: dict[str, dict[str, float]] = {}
        self.reporters: dict[str, dict[str, float]] = {}  # service -> node -> last report
        self._first_seen: dict[str, float] = {}
        self._warned: set[str] = set()
        # Pods' own gauges from Prometheus, per service: (when, what); and per endpoint
        # what the last answer said about it (ok, garbage, absent).
        self.pod_load: dict[str, tuple[float, PodLoad]] = {}
        self.pod_states: dict[str, dict[str, str]] = {}
        self._fetching: set[str] = set()
        self.active = True

    def on_report(self, node: str, clusters: list[ClusterLoad]) -> None:
        self.window.add(node, clusters)

    async def run(self, stop: asyncio.Event, period: float = 0.25) -> None:
        tasks: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            try:
                self.tick(self.clock())
                for service in self.store.state.services:
                    url = prometheus_of(service)
                    if url is not None and service.name not in self._fetching:
                        task = asyncio.ensure_future(self._fetch(service.name, url))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
            except Exception:  # a bug here must not take the control plane down
                log.exception("routing update failed; weights stay as they are")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period)
        for task in tasks:
            task.cancel()

    async def _fetch(self, name: str, url: str) -> None:
        """One refresh of the pods' gauges, at most one per service at a time."""
        last = self.pod_load.get(name)
        if last is not None and self.clock() - last[0] < 1.0:
            return
        self._fetching.add(name)
        try:
            load = await fetch_pod_load(url)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("pod metrics for %s from %s: %s", name, url, exc)
            self.pod_load.pop(name, None)
        else:
            self.pod_load[name] = (self.clock(), load)
        finally:
            self._fetching.discard(name)

    def tick(self, now: float) -> None:
        """Updates every service whose interval has come (only while ``active``: in
        Kubernetes mode a follower takes the leader's weights instead)."""
        if not self.active:
            return
        services = {s.name: s for s in self.store.state.services}
        for name in list(self._due):
            if name not in services or not routed(services[name]):
                self._forget(name)
        # Reports for services nobody computes weights for are dropped as they come,
        # so a service switched to response_time starts from fresh load, not from
        # everything since the control plane started.
        for name in self.window.services() - {n for n, s in services.items() if routed(s)}:
            self.window.take(name, now)
        for name, service in services.items():
            if not routed(service) or now < self._due.get(name, -math.inf):
                continue
            self._due[name] = now + interval_s(service)
            self.store.set_routing(name, self.routing_for(service, self.window.take(name, now),
                                                          now))

    def _forget(self, name: str) -> None:
        self._due.pop(name, None)
        self.weights.pop(name, None)
        self.states.pop(name, None)
        self.caps.pop(name, None)
        self.tunings.pop(name, None)
        self._cap_changed.pop(name, None)
        self._held.pop(name, None)
        self.reporters.pop(name, None)
        self._first_seen.pop(name, None)
        self._warned.discard(name)
        self.store.set_routing(name, None)

    def routing_for(self, service: ModelService, take: WindowTake, now: float) -> RoutingState:
        name = service.name
        prior = priors(service)
        weights: tuple[tuple[str, int], ...] = ()
        if service.load_balancing.policy is LbPolicy.RESPONSE_TIME:
            tuning = Tuning.of(service.load_balancing.response_time or ResponseTimeTuning())
            self.tunings[name] = tuning
            samples: dict[str, Sample | None] = dict(take.online)
            samples.update({k: GARBAGE for k in take.garbage})
            self._refine(service, samples, now, tuning)
            state = update(self.weights.get(name, {}), prior, samples, now, tuning)
            self.weights[name] = state
            self.states[name] = {k: signal_state(s, samples.get(k), now, tuning)
                                 for k, s in state.items()}
            weights = tuple(sorted((k, s.weight) for k, s in state.items()))
        proxies = self._reporting(service, take, now)
        if service.offline is None:
            for table in (self.caps, self._held, self._cap_changed):
                table.pop(name, None)
            return RoutingState(weights)
        caps = self._batch_caps(service, prior, take, proxies, now)
        return RoutingState(weights, sum(caps.values()), tuple(sorted(caps.items())))

    def _batch_caps(self, service: ModelService, prior: dict[str, int], take: WindowTake,
                    proxies: int, now: float) -> dict[str, int]:
        """Per version, the batch requests each proxy may have in flight (none for a
        version that takes no traffic: the batch route splits by version weight)."""
        offline, name = service.offline, service.name
        assert offline is not None
        unit = WEIGHT_SCALE if scaled_weights(service) else 1
        slots = {v.name: {e.key: offline.concurrency_per_pod * prior[e.key] / unit
                          for e in v.endpoints} for v in service.versions if v.weight > 0}
        online = {k: take.in_flight(k) for k in prior}
        totals = batch.version_caps(slots, online, offline.max_concurrency)
        totals.update({v.name: 0 for v in service.versions if v.weight <= 0})
        held, changed = self._held.setdefault(name, {}), self._cap_changed.setdefault(name, {})
        caps: dict[str, int] = {}
        for version, total in totals.items():
            cap = batch.per_proxy_cap(total, proxies, held.get(version),
                                      now - changed.get(version, -math.inf),
                                      batch.CHANGE_EVERY * offline.interval_ms / 1000)
            if held.get(version) != cap:
                changed[version] = now
            held[version] = caps[version] = cap
        for version in set(held) - set(totals):
            del held[version]
            changed.pop(version, None)
        self.caps[name] = (sum(caps.values()), sum(totals.values()))
        return caps

    def _reporting(self, service: ModelService, take: WindowTake, now: float) -> int:
        """Proxies that take a share of the cap: every one connected to any replica but
        those connected here that sent no load report for the service lately (a debug
        client, an Envoy without load reporting; an idle Envoy still reports); while
        none reports, every one, and a warning says why the controller sees no load.
        (Proxies on other replicas report there.)"""
        seen = self.reporters.setdefault(service.name, {})
        seen.update(dict.fromkeys(take.proxies, now))
        for node in [n for n, at in seen.items() if now - at > REPORTERS_FORGET_S]:
            del seen[node]
        if seen:
            if self.nodes is None:
                return len(seen)
            silent = self.nodes() - seen.keys()  # connected here, no report for the service
            return max(1, len(seen), self.proxies() - len(silent))
        first = self._first_seen.setdefault(service.name, now)
        connected = self.proxies()
        if connected and now - first > NO_REPORTS_WARN_S and service.name not in self._warned:
            self._warned.add(service.name)
            log.warning("service %s: %d proxies connected, none sends load reports (LRS): "
                        "weights and the batch cap see no online load; give the proxies' "
                        "bootstrap cluster_manager.load_stats_config (README: Load reports)",
                        service.name, connected)
        return max(1, connected)


    def _refine(self, service: ModelService, samples: dict[str, Sample | None], now: float,
                tuning: Tuning) -> None:
        """Adds the pods' own gauges (when fresh) to their samples."""
        got = self.pod_load.get(service.name)
        if prometheus_of(service) is None:
            self.pod_states.pop(service.name, None)
            return
        states: dict[str, str] = {}
        fresh = got is not None and now - got[0] <= tuning.stale_after_s
        for key in priors(service):
            if not fresh or got is None:
                states[key] = "absent"
                continue
            load = got[1]
            if key in load.garbage:
                states[key] = "garbage"
            elif key in load.waiting or key in load.kv_usage:
                states[key] = "ok"
                sample = samples.get(key)
                if sample is not None and sample.valid:
                    samples[key] = dataclasses.replace(
                        sample, waiting=load.waiting.get(key), kv_usage=load.kv_usage.get(key))
            else:
                states[key] = "absent"
        self.pod_states[service.name] = states


def prometheus_of(service: ModelService) -> str | None:
    tuning = service.load_balancing.response_time
    if service.load_balancing.policy is not LbPolicy.RESPONSE_TIME or tuning is None:
        return None
    return tuning.prometheus


class RoutingCollector(Collector):
    def __init__(self, controller: RoutingController) -> None:
        self.controller = controller

    def collect(self) -> Iterator[Metric]:
        c = self.controller
        weight = GaugeMetricFamily("sluice_routing_endpoint_weight",
                                   "Endpoint weight pushed by the routing controller",
                                   labels=["service", "endpoint"])
        rt = GaugeMetricFamily("sluice_routing_response_time_seconds",
                               "Smoothed mean time in system per endpoint (Little's law)",
                               labels=["service", "endpoint"])
        signal = GaugeMetricFamily("sluice_routing_signal",
                                   "1 for the endpoint's signal state (ok, stale, new, garbage)",
                                   labels=["service", "endpoint", "state"])
        for service, table in sorted(c.weights.items()):
            tuning = c.tunings.get(service, Tuning())
            for key, s in sorted(table.items()):
                weight.add_metric([service, key], s.weight)
                seconds = s.response_time(tuning)
                if seconds is not None:
                    rt.add_metric([service, key], seconds)
            for key, state in sorted(c.states.get(service, {}).items()):
                for candidate in SignalState:
                    signal.add_metric([service, key, candidate.value],
                                      1.0 if candidate is state else 0.0)
        cap = GaugeMetricFamily("sluice_routing_batch_cap",
                                "Batch requests allowed in flight (per proxy, whole fleet)",
                                labels=["service", "scope"])
        for service, (per_proxy, fleet) in sorted(c.caps.items()):
            cap.add_metric([service, "proxy"], per_proxy)
            cap.add_metric([service, "fleet"], fleet)
        reporting = GaugeMetricFamily("sluice_routing_reporting_proxies",
                                      "Proxies that sent load reports for the service lately "
                                      "(each takes a share of the batch cap)",
                                      labels=["service"])
        for service, seen in sorted(c.reporters.items()):
            reporting.add_metric([service], len(seen))
        reports = CounterMetricFamily("sluice_routing_load_reports",
                                      "Load reports received from proxies (LRS)")
        reports.add_metric([], c.lrs.reports)
        garbage = CounterMetricFamily("sluice_routing_garbage_reports",
                                      "Load reports that could not be decoded")
        garbage.add_metric([], c.lrs.garbage)
        pods = GaugeMetricFamily("sluice_routing_pod_metrics",
                                 "1 for what Prometheus said of a pod (ok, garbage, absent)",
                                 labels=["service", "endpoint", "state"])
        for service, said in sorted(c.pod_states.items()):
            for key, what in sorted(said.items()):
                for choice in ("ok", "garbage", "absent"):
                    pods.add_metric([service, key, choice], 1.0 if what == choice else 0.0)
        yield from (weight, rt, signal, cap, reporting, reports, garbage, pods)

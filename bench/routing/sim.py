"""Discrete-event simulation of the routing policies: proxies, pods, the control plane.

Pure Python, no Envoy: ``FastPod`` pods (podsim's timing model at O(1) per step) or,
with ``engine=True``, ``EnginePod`` pods (podsim's scheduler itself), ``routers.Proxy``
load balancers (one per proxy, each counting only its own requests in flight),
and for ``response_time`` Sluice's own code — ``RoutingController.routing_for``
over load reports built exactly as Envoy sends them (per proxy, per endpoint,
every ``lrs_interval``), weights pushed to every proxy ``push_delay`` later.
Requests reach proxies at random (an L4 balancer in front). Time is simulated.

``BatchLoad`` adds the offline class as the benchmark's load generator sends it:
closed-loop clients on the batch route (its own cluster: its own least-request
counts), refused above the cap that Sluice's controller sizes from the online
load reports, each cap change starting a new circuit breaker from zero (a new
cluster to Envoy), and requests marked priority 1 for the pods' schedulers.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.routing.enginepod import EnginePod
from bench.routing.envoyhash import envoy_hashing
from bench.routing.fastpod import FastPod, Job
from bench.routing.routers import Hashing, Proxy, stand_in
from bench.routing.workload import Req
from controlplane.model import (
    WEIGHT_SCALE,
    Capacity,
    Endpoint,
    LbPolicy,
    ListenerSpec,
    LoadBalancing,
    ModelService,
    Offline,
    ResponseTimeTuning,
    Version,
)
from controlplane.podsim.profiles import EngineConfig, profile
from controlplane.routing.controller import RoutingController
from controlplane.store import Store
from xds.lrs import ClusterLoad, EndpointLoad

__all__ = ["POLICIES", "BatchLoad", "Policy", "Record", "SimResult", "simulate_fleet"]

# ``loadBalancing.capacity`` of the capacity-weighted policies; the benchmark sets it from
# each GPU's measured throughput at saturation (``fleet.saturation_rps``), as an operator
# would from measured tokens/s.
CAPACITY = {"h100": 2.0, "a100": 1.0}


@dataclass(frozen=True)
class Policy:
    name: str
    kind: str  # rr | random | lr | ring | maglev | hybrid | orca
    capacity: bool = False  # endpoint weights from the GPU table
    bounded: float | None = None
    adaptive: bool = False  # Sluice's response_time weights
    sluice: str = ""  # loadBalancing.policy in the ModelService


POLICIES: tuple[Policy, ...] = (
    Policy("round robin", "rr", sluice="round_robin"),
    Policy("random", "random", sluice="random"),
    Policy("least request", "lr", sluice="least_request"),
    Policy("least request + capacity", "lr", capacity=True, sluice="least_request"),
    Policy("response_time", "lr", capacity=True, adaptive=True, sluice="response_time"),
    Policy("load_report (ORCA)", "orca", sluice="load_report"),
    Policy("ring hash", "ring", capacity=True, sluice="ring_hash"),
    Policy("ring hash + bound 1.25", "ring", capacity=True, bounded=1.25, sluice="ring_hash"),
    Policy("maglev", "maglev", capacity=True, sluice="maglev"),
    Policy("maglev + bound 1.25", "maglev", capacity=True, bounded=1.25, sluice="maglev"),
    Policy("hybrid", "hybrid", capacity=True, bounded=1.25, sluice="hybrid"),
)


@dataclass(frozen=True)
class BatchLoad:
    """``clients`` senders of ``reqs`` (in turn) from ``start`` to ``end``, one request at
    a time, waiting ``retry_s`` when refused (the load generator's Retry-After, at most
    1 s); the cap from ``offline.concurrencyPerPod`` = ``per_pod``, recomputed every
    ``interval``."""

    reqs: tuple[Req, ...]
    clients: int
    start: float
    end: float
    per_pod: int
    interval: float = 1.0
    retry_s: float = 1.0


@dataclass
class Record:
    arrival: float
    ttft: float | None
    e2e: float | None
    output: int
    host: int


@dataclass
class SimResult:
    records: list[Record]
    served: list[int]  # completed requests per pod
    seconds: float  # span of the arrivals
    weights: list[float] = field(default_factory=list)  # last weights (response_time)
    batch_done: int = 0  # batch requests completed from the batch's start to its end
    batch_refused: int = 0
    caps: list[int] = field(default_factory=list)  # the batch caps while batch ran, in order


def _service(gpus: Sequence[str], interval_s: float, batch: BatchLoad | None) -> ModelService:
    endpoints = tuple(Endpoint(f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}", 8000,
                               labels=(("gpu", g),)) for i, g in enumerate(gpus))
    return ModelService(
        "sim", ListenerSpec("127.0.0.1", 1), (Version("v1", 100, endpoints),),
        load_balancing=LoadBalancing(
            LbPolicy.RESPONSE_TIME, capacity=Capacity(tuple(sorted(CAPACITY.items()))),
            response_time=ResponseTimeTuning(interval_ms=round(interval_s * 1000))),
        offline=None if batch is None else Offline(
            concurrency_per_pod=batch.per_pod, interval_ms=round(batch.interval * 1000)))


class _Sim:
    def __init__(self, gpus: Sequence[str], policy: Policy, *, proxies: int, seed: int,
                 config: EngineConfig, lrs_interval: float, interval: float,
                 push_delay: float, orca_period: float, blackout: float, engine: bool,
                 addresses: Sequence[str] | None, batch: BatchLoad | None) -> None:
        self.rng = random.Random(seed)
        self.policy = policy
        kind = EnginePod if engine else FastPod
        self.pods: list[FastPod | EnginePod] = [kind(i, profile(g), config)
                                               for i, g in enumerate(gpus)]
        weights = [CAPACITY[g] if policy.capacity else 1.0 for g in gpus]
        n = len(gpus)
        hashing: Hashing | None = None
        if policy.kind in ("ring", "maglev", "hybrid"):
            table = "ring" if policy.kind == "ring" else "maglev"
            if addresses is not None:  # the pods Envoy ran: its very tables
                pushed = [round(w * WEIGHT_SCALE) if policy.capacity else 1 for w in weights]
                hashing = envoy_hashing(table, addresses, pushed)
            else:  # each seed hashes the hosts anew, as new addresses would
                hashing = stand_in(table, weights, str(seed))
        self.proxies = [Proxy(policy.kind, weights, random.Random(seed * 1000 + p),
                              bounded=policy.bounded, hashing=hashing)
                        for p in range(proxies)]
        self.events: list[tuple[float, int, str, int]] = []
        self.seq = 0
        self.pod_at: list[float | None] = [None] * n
        self.lrs_interval, self.interval, self.push_delay = lrs_interval, interval, push_delay
        self.orca_period, self.blackout = orca_period, blackout
        self.batch = batch
        if batch is not None:  # one controller pass sets weights and cap (the shorter interval)
            self.interval = interval = min(interval, batch.interval) if policy.adaptive \
                else batch.interval
        # The batch cluster: the same pods and policy, its own requests-in-flight counts.
        self.batch_proxy = Proxy(policy.kind, weights, random.Random(seed * 1000 - 1),
                                 bounded=policy.bounded, hashing=hashing)
        self.cap: int | None = None  # batch requests the circuit breaker admits
        self.counted = 0  # batch requests in flight that the current breaker counts
        self.generation = 0  # bumped with every cap change (a new cluster)
        self.batch_done = self.batch_refused = self.batch_sent = 0
        self.cap_log: list[tuple[float, int]] = []
        self.pending_cap: int | None = None
        self.service = _service(gpus, interval, batch)
        self.keys = [e.key for e in self.service.versions[0].endpoints]
        self.controller = RoutingController(Store(("sim",)), lambda: proxies, clock=lambda: 0.0)
        self.issued = [[0] * n for _ in range(proxies)]
        self.completed = [[0] * n for _ in range(proxies)]
        self.pending_weights: list[float] | None = None
        self.weights = weights

    def push(self, t: float, kind: str, arg: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, arg))

    def schedule(self, i: int) -> None:
        t = self.pods[i].next_event()
        if t is not None and t != self.pod_at[i]:
            self.pod_at[i] = t
            self.push(t, "pod", i)

    def run(self, reqs: Sequence[Req], drain_s: float) -> SimResult:
        records: list[Record | None] = [None] * len(reqs)
        served = [0] * len(self.pods)
        end = (reqs[-1].t if reqs else 0.0) + drain_s
        self.first_batch_id = len(reqs)
        if self.policy.adaptive or self.batch is not None:
            self.push(self.lrs_interval, "lrs")
            self.push(0.0 if self.batch else self.interval, "weights")
        for k in range(self.batch.clients if self.batch else 0):
            self.push(self.batch.start if self.batch else 0.0, "bsend", k)
        if self.policy.kind == "orca":
            self.push(self.orca_period, "orca")
        i = 0
        self.outstanding = 0
        while True:
            if i == len(reqs) and self.outstanding == 0:
                break
            nxt = self.events[0][0] if self.events else math.inf
            if i < len(reqs) and reqs[i].t <= nxt:
                self.arrive(i, reqs[i])
                i += 1
                continue
            if not self.events or nxt > end:
                break
            t, _, kind, arg = heapq.heappop(self.events)
            if kind == "pod":
                if self.pod_at[arg] != t:
                    continue
                self.pod_at[arg] = None
                pod = self.pods[arg]
                done = pod.advance(t)
                if self.policy.kind == "orca":  # the ORCA header comes with the first token
                    for job in pod.first_tokens:
                        self.proxies[job.proxy].report(arg, (pod.rps(t), pod.utilization()), t)
                pod.first_tokens.clear()
                for job in done:
                    self.finish(job, t, records, served)
                self.schedule(arg)
            elif kind == "bsend":
                self.batch_send(t, arg)
            else:
                self.periodic(t, kind)
        for k, r in enumerate(records):
            if r is None:  # never finished within the drain time
                records[k] = Record(reqs[k].t, None, None, reqs[k].output, -1)
        start = self.batch.start if self.batch else math.inf
        caps = [c for t, c in self.cap_log if t <= start][-1:]
        caps += [c for t, c in self.cap_log if start < t < (self.batch.end if self.batch else 0)]
        return SimResult([r for r in records if r is not None], served,
                         reqs[-1].t if reqs else 0.0, self.weights, self.batch_done,
                         self.batch_refused, caps)

    def arrive(self, index: int, req: Req) -> None:
        p = self.rng.randrange(len(self.proxies))
        proxy = self.proxies[p]
        h = proxy.pick(req.key, req.t)
        proxy.started(h, req.key)
        self.issued[p][h] += 1
        self.outstanding += 1
        job = Job(index, req.prompt, req.output, req.t, host=h, proxy=p, key=req.key,
                  prefix=req.prefix, prefix_tokens=req.prefix_tokens)
        self.pods[h].submit(job, req.t)
        self.schedule(h)

    def batch_send(self, t: float, client: int) -> None:
        batch = self.batch
        assert batch is not None
        if t >= batch.end:
            return
        if self.cap is not None and self.counted >= self.cap:
            self.batch_refused += 1
            self.push(t + batch.retry_s, "bsend", client)
            return
        req = batch.reqs[self.batch_sent % len(batch.reqs)]
        h = self.batch_proxy.pick(None, t)
        self.batch_proxy.started(h)
        self.counted += 1
        self.batch_sent += 1
        job = Job(self.first_batch_id + self.batch_sent, req.prompt, req.output, t, host=h,
                  priority=1, meta={"client": client, "generation": self.generation})
        self.pods[h].submit(job, t)
        self.schedule(h)

    def finish(self, job: Job, t: float, records: list[Record | None], served: list[int]) -> None:
        if job.priority:  # a batch request: its client sends the next one
            self.batch_proxy.finished(job.host)
            if job.meta["generation"] == self.generation:  # the breaker that counted it
                self.counted -= 1
            assert self.batch is not None
            if t < self.batch.end:
                self.batch_done += 1
            self.push(t, "bsend", int(job.meta["client"]))
            return
        self.proxies[job.proxy].finished(job.host, job.key)
        self.completed[job.proxy][job.host] += 1
        self.outstanding -= 1
        served[job.host] += 1
        assert job.first_token is not None
        records[job.id] = Record(job.arrival, job.first_token - job.arrival, t - job.arrival,
                                 job.output, job.host)

    def periodic(self, t: float, kind: str) -> None:
        if kind == "lrs":  # every proxy reports what it saw, as Envoy does over LRS
            for p, proxy in enumerate(self.proxies):
                loads = tuple(EndpointLoad(self.keys[h], self.issued[p][h],
                                           self.completed[p][h], 0, proxy.active[h])
                              for h in range(len(self.pods)))
                self.controller.on_report(f"gw-{p}", [ClusterLoad("sim/v1", self.lrs_interval,
                                                                  loads)])
                self.issued[p] = [0] * len(self.pods)
                self.completed[p] = [0] * len(self.pods)
            self.push(t + self.lrs_interval, "lrs")
        elif kind == "weights":
            take = self.controller.window.take("sim", t)
            routing = self.controller.routing_for(self.service, take, t)
            if self.policy.adaptive:
                table = dict(routing.weights)
                self.pending_weights = [float(table[k]) for k in self.keys]
            self.pending_cap = routing.batch_max_requests
            self.push(t + self.push_delay, "apply")
            self.push(t + self.interval, "weights")
        elif kind == "apply":
            if self.pending_weights is not None:
                self.weights = self.pending_weights
                for proxy in self.proxies:
                    proxy.set_weights(self.weights)
            if self.pending_cap is not None and self.pending_cap != self.cap:
                # A new cap is a new cluster: its circuit breaker counts from zero.
                self.cap, self.counted = self.pending_cap, 0
                self.generation += 1
                self.cap_log.append((t, self.cap))
        elif kind == "orca":
            for proxy in self.proxies:
                proxy.update_orca(t, self.blackout)
            self.push(t + self.orca_period, "orca")


def simulate_fleet(gpus: Sequence[str], policy: Policy, reqs: Sequence[Req], *,
                   proxies: int = 1, seed: int = 1, config: EngineConfig | None = None,
                   lrs_interval: float = 0.5, interval: float = 2.0, push_delay: float = 0.3,
                   orca_period: float = 1.0, blackout: float = 1.0,
                   drain_s: float = 120.0, engine: bool = False,
                   addresses: Sequence[str] | None = None,
                   batch: BatchLoad | None = None) -> SimResult:
    sim = _Sim(gpus, policy, proxies=proxies, seed=seed,
               config=config or EngineConfig(enable_prefix_caching=False),
               lrs_interval=lrs_interval, interval=interval, push_delay=push_delay,
               orca_period=orca_period, blackout=blackout, engine=engine,
               addresses=addresses, batch=batch)
    return sim.run(reqs, drain_s)

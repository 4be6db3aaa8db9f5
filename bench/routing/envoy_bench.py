"""The policies through a real Envoy: simulated pods and Sluice here, load in another process.

One run per policy: Sluice gets the policy's ModelService (a file edit, as a user
would make it), Envoy converges over ADS, then the load levels run back to back
(open-loop Poisson at 50, 70 and 90 % of the fleet's capacity), a saturation run
(closed loop, 16 clients per pod) and the multi-turn run for the prefix cache.
Adaptive policies (response_time, load_report) get a short warm-up first. Every
request's times come back from the load generator; hit rates come from the
pods' own prefix-cache counters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.routing.fleet import BENCH_ENGINE, GPUS, SERVICE, policy_spec
from bench.routing.sim import Policy
from bench.routing.stats import RunStats, summarize
from bench.routing.workload import Req
from controlplane.app import App, ServeOptions
from controlplane.podsim import PodSpec, start_pods
from controlplane.podsim.server import Pods
from tests.integration.harness import EnvoyProcess, async_wait_for, free_port
from xds.bootstrap import render_bootstrap

__all__ = ["EnvoyBench", "Trace", "ramp"]

HOST = "127.0.0.1"


def rows(reqs: list[Req]) -> list[list[Any]]:
    return [[r.t, r.prompt, r.output, r.key, r.prefix, r.prefix_tokens] for r in reqs]


def ramp(segments: list[list[Req]], seconds: list[float]) -> list[Req]:
    """Segments back to back: each one's times shifted by the lengths before it."""
    out: list[Req] = []
    offset = 0.0
    for reqs, length in zip(segments, seconds, strict=True):
        out += [dataclasses.replace(r, t=r.t + offset) for r in reqs]
        offset += length
    return out


@dataclass
class Trace:
    """What one run sent and got back (for the figures and the simulation's check)."""

    reqs: list[Req]
    results: list[list[Any]]  # [t_sent, status, ttft, e2e, pod, output tokens] per request
    seconds: float
    hit_rate: float = float("nan")
    extra: dict[str, list[list[Any]]] = field(default_factory=dict)

    def window(self, start: float, end: float) -> Trace:
        """The requests sent in [start, end), as a run of its own (times from ``start``)."""
        keep = [i for i, r in enumerate(self.reqs) if start <= r.t < end]
        return Trace([dataclasses.replace(self.reqs[i], t=self.reqs[i].t - start)
                      for i in keep], [self.results[i] for i in keep], end - start,
                     self.hit_rate)

    @classmethod
    def joined(cls, parts: list[Trace]) -> Trace:
        """Runs one after another as one run (their requests and answers pooled)."""
        reqs: list[Req] = []
        results: list[list[Any]] = []
        offset = 0.0
        for part in parts:
            reqs += [dataclasses.replace(r, t=r.t + offset) for r in part.reqs]
            results += part.results
            offset += part.seconds
        return cls(reqs, results, offset)

    def to_json(self) -> dict[str, Any]:
        return {"reqs": rows(self.reqs), "results": self.results, "seconds": self.seconds}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Trace:
        return cls([Req(*r) for r in doc["reqs"]], doc["results"], doc["seconds"])

    def stats(self, pods: list[str], capacity: list[float]) -> RunStats:
        ok = [r[1] == 200 for r in self.results]
        e2e = [r[3] if good else None for r, good in zip(self.results, ok, strict=True)]
        ttft = [r[2] if good else None for r, good in zip(self.results, ok, strict=True)]
        outputs = [int(r[5]) for r in self.results]
        served = Counter(r[4] for r in self.results if r[1] == 200)
        return summarize(e2e, ttft, outputs, self.seconds, [served[p] for p in pods],
                         capacity, self.hit_rate)


class EnvoyBench:
    """Pods, Sluice and Envoy, started once; ``run_policy`` switches and measures."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="sluice-bench-"))
        self.config = self.workdir / "config"
        self.config.mkdir(parents=True, exist_ok=True)
        self.pods: Pods | None = None
        self.app: App | None = None
        self.envoy: EnvoyProcess | None = None
        self.listener = free_port()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._gen: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.listener}/v1/completions"

    @property
    def pod_names(self) -> list[str]:
        assert self.pods is not None
        return [p.pod for p in self.pods]

    async def __aenter__(self) -> EnvoyBench:
        specs = [PodSpec(service=SERVICE, version="v1", gpu=g, engine=BENCH_ENGINE,
                         stream_interval=100_000, seed=i) for i, g in enumerate(GPUS)]
        self.pods = await start_pods(specs)
        first = policy_spec(Policy("least request", "lr", sluice="least_request"),
                            self.endpoints(), self.listener_doc())
        self.write(first)
        options = ServeOptions((str(self.config),), f"{HOST}:0", f"{HOST}:0",
                               poll_interval_s=0.1)
        self.app = App(options)
        started = asyncio.Event()
        self._task = asyncio.create_task(self.app.run(self._stop, started))
        await asyncio.wait_for(started.wait(), 15)
        boot = render_bootstrap("bench-gw", HOST, self.app.xds_port, HOST, free_port())
        self.envoy = EnvoyProcess(boot, workdir=self.workdir / "envoy", log_level="error")
        (self.workdir / "envoy").mkdir(exist_ok=True)
        self.envoy.spawn()
        await self.envoy.await_ready(30)
        self._gen = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.routing.loadgen", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, limit=1 << 28)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._gen is not None and self._gen.stdin is not None:
            self._gen.stdin.close()
            await self._gen.wait()
        if self.envoy is not None:
            self.envoy.stop()
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 15)
        if self.pods is not None:
            await self.pods.close()

    def endpoints(self) -> list[dict[str, Any]]:
        assert self.pods is not None
        return [{"address": HOST, "port": p.spec.port, "labels": {"gpu": p.gpu.name}}
                for p in self.pods]

    def listener_doc(self) -> dict[str, Any]:
        return {"address": HOST, "port": self.listener}

    def write(self, doc: dict[str, Any]) -> None:
        tmp = self.config / ".bench.tmp"
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.config / "bench.yaml")

    async def apply(self, policy: Policy, extra: dict[str, Any] | None = None) -> None:
        """Switch the service to ``policy`` and wait until Envoy runs it, on fresh pods."""
        assert self.app is not None and self.pods is not None
        # Every policy starts from the same state, as the simulation's pods do: empty KV
        # and prefix caches, and no request rate left over from the last policy (it is
        # in the pods' ORCA reports for 10 s).
        for pod in self.pods:
            await pod.restart()
        # The controller sums load reports per service until it next takes them, and it
        # takes none while a policy needs no weights: without this, response_time's first
        # weights would come from every earlier policy's traffic since the start.
        self.app.routing.window.take(SERVICE, self.app.routing.clock())
        app = self.app

        def service() -> object:
            return next((s for s in app.store.state.services if s.name == SERVICE), None)

        old = service()
        self.write(policy_spec(policy, self.endpoints(), self.listener_doc(), extra))
        loaded: list[int] = []  # the store revision that holds the new policy
        seen: set[str] = set()  # snapshots installed since (weight pushes keep coming)

        def converged() -> bool:
            # A new policy may render the very same resources (response_time starts
            # from the capacity weights least request + capacity pushes): wait for a
            # snapshot built from it, not for a new snapshot version.
            if not loaded:
                if service() == old:
                    return False
                loaded.append(app.store.revision)
            if app.installed_revision < loaded[0]:
                return False
            seen.add(app.cache.snapshot.version)
            proxies = list(app.xds.proxies.values())
            return bool(proxies) and all(p.converged_on in seen for p in proxies)

        await async_wait_for(converged, 15, interval=0.05, what="Envoy on the new policy")
        await asyncio.sleep(1.0)  # clusters warmed, connection pools replaced

    async def job(self, job: dict[str, Any]) -> dict[str, list[list[Any]]]:
        assert self._gen is not None and self._gen.stdin and self._gen.stdout
        self._gen.stdin.write((json.dumps({"url": self.url, **job}) + "\n").encode())
        await self._gen.stdin.drain()
        line = await self._gen.stdout.readline()
        result: dict[str, list[list[Any]]] = json.loads(line)
        return result

    def hits(self) -> tuple[int, int]:
        assert self.pods is not None
        return (sum(p.engine.stats.prefix_hits for p in self.pods),
                sum(p.engine.stats.prefix_queries for p in self.pods))

    async def open_loop(self, reqs: list[Req], seconds: float,
                        batch: dict[str, Any] | None = None) -> Trace:
        hits0, queries0 = self.hits()
        job: dict[str, Any] = {"online": rows(reqs), "timeout": 120}
        if batch is not None:
            job["batch"] = batch
        result = await self.job(job)
        hits, queries = self.hits()
        rate = (hits - hits0) / (queries - queries0) if queries > queries0 else float("nan")
        ordered = sorted(result["online"], key=lambda r: r[6])  # request order
        return Trace(reqs, ordered, seconds, rate, {"batch": result["batch"]})

    async def closed_loop(self, reqs: list[Req], clients: int, seconds: float) -> Trace:
        result = await self.job({"closed": {"concurrency": clients, "seconds": seconds,
                                            "requests": rows(reqs)}, "timeout": 120})
        return Trace([], result["closed"], seconds)

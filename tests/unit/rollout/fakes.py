"""Fakes for driving real runs fast: a metrics source that follows the pushed split,
proxies that ACK at once, and a manager over a real store and journal."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.providers import ProviderError, Reading, Target, VersionReading
from controlplane.config import load_text
from controlplane.config.experiment import experiment_from_mapping
from controlplane.experiment import Experiment
from controlplane.rollout.journal import Journal
from controlplane.rollout.manager import RolloutManager
from controlplane.rollout.sync import SyncReport
from controlplane.store import Store

SERVICE = """\
apiVersion: sluice.dev/v1alpha1
kind: ModelService
metadata: {name: chat}
spec:
  listener: {address: 127.0.0.1, port: 10000}
  versions:
    - name: v1
      weight: 100
      endpoints: [{address: 10.0.0.1, port: 80}, {address: 10.0.0.2, port: 80}]
    - name: v2
      weight: 0
      endpoints: [{address: 10.0.0.1, port: 80}, {address: 10.0.0.2, port: 80}]
"""


def experiment(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "service": "chat", "baseline": "v1", "candidate": "v2", "interval": "10ms",
        "steps": [10, 50],
        "metrics": [{"name": "errors", "kind": "error_rate", "harmMargin": 0.2,
                     "nonInferiorityMargin": 0.2, "minEffect": 0.01, "minSamples": 500}],
    }
    body.update(spec)
    body = {k: v for k, v in body.items() if v is not None}
    return {"apiVersion": "sluice.dev/v1alpha1", "kind": "Experiment",
            "metadata": {"name": "canary"}, "spec": body}


def build(**spec: Any) -> Experiment:
    return experiment_from_mapping(experiment(**spec))


@dataclass
class FakeSource:
    """Cumulative counters that grow at every read, split by the store's current weights
    (mirrors included), with a per-version error rate."""

    store: Store
    per_read: int = 2000
    error_rate: dict[str, float] = field(default_factory=lambda: {"v1": 0.01, "v2": 0.01})
    down: bool = False
    totals: dict[str, list[float]] = field(default_factory=dict)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(7))
    reads: int = 0
    name: str = "fake"

    async def read(self, target: Target, t: float) -> Reading:
        self.reads += 1
        if self.down:
            raise ProviderError("connection refused")
        svc = self.store.state.service(target.service)
        weights = {v.name: v.weight for v in svc.versions}
        for m in svc.traffic.mirrors:
            weights[m.version] = weights.get(m.version, 0) + m.percent
        cohort = bool(svc.traffic.cohorts)
        for version in target.versions:
            share = 0.5 if cohort else weights.get(version, 0.0) / 100.0
            n = int(self.rng.binomial(self.per_read, min(1.0, share)))
            e = int(self.rng.binomial(n, self.error_rate.get(version, 0.0)))
            total = self.totals.setdefault(version, [0.0, 0.0])
            total[0] += n
            total[1] += e
        origin = {v: VersionReading(requests=tot[0], errors=tot[1])
                  for v, tot in self.totals.items()}
        return Reading(t, {"fake": origin})

    async def close(self) -> None:
        return None


class SyncedProxies:
    def sync(self, service: str, versions: Iterable[str], revision: int) -> SyncReport:
        return SyncReport(True, (), (), ())

    def admin_urls(self) -> list[str]:
        return []


def manager(source_factory: Any = None, journal: Journal | None = None,
            store: Store | None = None) -> tuple[RolloutManager, Store, FakeSource]:
    store = store or Store(("file",))
    store.apply_load("file", load_text(SERVICE, "chat.yaml"))
    source = FakeSource(store)
    mgr = RolloutManager(store, SyncedProxies(), journal or Journal(),
                         source_factory or (lambda e: source))
    return mgr, store, source


def load(store: Store, mgr: RolloutManager, experiment_doc: dict[str, Any] | None) -> None:
    import yaml

    text = SERVICE
    if experiment_doc is not None:
        text += "---\n" + yaml.safe_dump(experiment_doc, sort_keys=False)
    store.apply_load("file", load_text(text, "chat.yaml"))
    mgr.reconcile()


async def until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def weights(store: Store) -> dict[str, float]:
    return {v.name: v.weight for v in store.state.service("chat").versions}

"""Rollbacks and promotions that respect the receiver's capacity."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from controlplane.config import load_text
from controlplane.model import Endpoint, EndpointHealth, ListenerSpec, ModelService, Version
from controlplane.rollout.capacity import fits
from controlplane.store import Store
from tests.unit.rollout.fakes import experiment, manager, until


def service(base: tuple[int, ...], cand: tuple[int, ...]) -> ModelService:
    def eps(weights: tuple[int, ...], host: int) -> tuple[Endpoint, ...]:
        return tuple(Endpoint(f"10.0.{host}.{i}", 80, w) for i, w in enumerate(weights, 1))

    return ModelService("chat", ListenerSpec("127.0.0.1", 1),
                        (Version("v1", 50, eps(base, 1)), Version("v2", 50, eps(cand, 2))))


def test_a_small_canary_goes_back_at_once() -> None:
    # v1 serves 90 % on 3 pods, v2 10 % on 1: v1's load per pod goes 30 % -> 33 %
    assert fits(service((1, 1, 1), (1,)), {"v1": 90, "v2": 10}, "v1", 100, 0.25)


def test_a_shrunk_baseline_cannot_take_everything_at_once() -> None:
    # v1 50 % on 1 pod (scaled down), v2 50 % on 2 pods: v1 would double its load
    svc = service((1,), (1, 1))
    assert not fits(svc, {"v1": 50, "v2": 50}, "v1", 100, 0.25)
    assert fits(svc, {"v1": 50, "v2": 50}, "v1", 60, 0.25)
    # ... and a promotion onto one candidate pod is the same question the other way
    assert not fits(service((1, 1, 1), (1,)), {"v1": 50, "v2": 50}, "v2", 100, 0.25)


def test_draining_and_unhealthy_endpoints_are_not_capacity() -> None:
    svc = service((1, 1), (1,))
    drained = ModelService(svc.name, svc.listener, (
        Version("v1", 50, tuple(Endpoint(e.address, e.port, e.weight, health=h) for e, h in zip(
            svc.versions[0].endpoints, (EndpointHealth.DRAINING, EndpointHealth.HEALTHY),
            strict=True))), svc.versions[1]))
    assert fits(svc, {"v1": 50, "v2": 50}, "v1", 100, 0.25)
    assert not fits(drained, {"v1": 50, "v2": 50}, "v1", 100, 0.25)


HALF = """\
apiVersion: sluice.dev/v1alpha1
kind: ModelService
metadata: {name: chat}
spec:
  listener: {address: 127.0.0.1, port: 10000}
  versions:
    - {name: v1, weight: 100, endpoints: [{address: 10.0.0.1, port: 80}]}
    - name: v2
      weight: 0
      endpoints: [{address: 10.0.0.2, port: 80}, {address: 10.0.0.3, port: 80}]
"""


async def test_a_rollback_onto_half_the_capacity_ramps_and_never_exceeds_the_step() -> None:
    store = Store(("file",))
    store.apply_load("file", load_text(HALF, "chat.yaml"))
    mgr, store, source = manager(store=store)
    store.apply_load("file", load_text(HALF, "chat.yaml"))
    seen: list[float] = []
    real = store.set_override

    def record(service: str, override: Any) -> bool:
        if override is not None:
            seen.append(dict(override.weights).get("v2", 0.0))
        return bool(real(service, override))

    store.set_override = record  # type: ignore[method-assign]
    source.error_rate["v2"] = 0.2
    stop = asyncio.Event()
    import yaml

    doc = experiment(steps=[50], rollback={"maxStep": 20, "interval": "20ms"})
    store.apply_load("file", load_text(HALF + "---\n" + yaml.safe_dump(doc), "chat.yaml"))
    mgr.reconcile()
    task = asyncio.get_running_loop().create_task(mgr.run(stop))
    await until(lambda: mgr.view("canary")["phase"] == "RolledBack")  # type: ignore[index]
    stop.set()
    await task
    assert seen[0] == 50 and seen[-1] == 0
    moves = [a - b for a, b in itertools.pairwise(seen) if a != b]
    assert moves and max(moves) <= 20, seen  # never more than maxStep at once
    assert len(moves) >= 3  # it did ramp: 50 -> 30 -> 10 -> 0
    assert "ramp" in mgr.view("canary")["report"]  # type: ignore[index]


async def test_a_guard_rollback_may_go_at_once() -> None:
    store = Store(("file",))
    mgr, store, source = manager(store=store)
    store.apply_load("file", load_text(HALF, "chat.yaml"))
    source.error_rate["v2"] = 0.9
    import yaml

    doc = experiment(steps=[50], guards=[{"metric": "errors", "above": 0.5}],
                     rollback={"maxStep": 10, "interval": "1h", "immediateOnGuard": True})
    store.apply_load("file", load_text(HALF + "---\n" + yaml.safe_dump(doc), "chat.yaml"))
    mgr.reconcile()
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(mgr.run(stop))
    await until(lambda: mgr.view("canary")["phase"] == "RolledBack")  # type: ignore[index]
    stop.set()
    await task
    assert {v.name: v.weight for v in store.state.service("chat").versions} == {"v1": 100,
                                                                               "v2": 0}


"""Experiments in the config → runs: start, restore, update, stop, and outcomes that last.

After every load the manager reconciles: a new experiment starts a run (or
restores the one the journal holds, same step and weights); an edit of steps
or metrics updates the run; a change of service, baseline, candidate or
strategy starts a new run; a removed experiment is aborted (rolled back).

Who owns the weights (DESIGN §7): a running experiment owns its service's
traffic. When a run ends, its traffic stays in force — across restarts and
after the document is gone — until someone edits the service's declared
weights; that edit is what hands the service back to its file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from analysis.providers import MetricsProvider
from controlplane.config import ObjectState
from controlplane.experiment import EXPERIMENT_KIND, Experiment, Webhook
from controlplane.model import Endpoint, EndpointHealth
from controlplane.rollout.journal import DECISION, LOOK, OUTCOME, RUN, Journal
from controlplane.rollout.runner import Deps, Runner
from controlplane.rollout.sync import ProxyView
from controlplane.store import Store, TrafficOverride

log = logging.getLogger("sluice.rollout")


def _declared_weights(store: Store, service: str) -> dict[str, float] | None:
    try:
        return {v.name: v.weight for v in store.declared.service(service).versions}
    except KeyError:
        return None


def override_json(o: TrafficOverride) -> dict[str, Any]:
    return {
        "owner": o.owner, "weights": dict(o.weights),
        "endpoints": {v: [{"address": e.address, "port": e.port, "weight": e.weight,
                           "labels": dict(e.labels), "health": e.health.value} for e in eps]
                      for v, eps in o.endpoints},
    }


def override_from(d: dict[str, Any]) -> TrafficOverride:
    endpoints = tuple(
        (v, tuple(Endpoint(e["address"], int(e["port"]), int(e.get("weight", 1)),
                           tuple(sorted(dict(e.get("labels", {})).items())),
                           EndpointHealth(e.get("health", "unknown"))) for e in eps))
        for v, eps in dict(d.get("endpoints") or {}).items())
    weights = {str(k): float(v) for k, v in dict(d["weights"]).items()}
    return TrafficOverride(str(d["owner"]), tuple(weights.items()), endpoints)


class RolloutManager:
    def __init__(self, store: Store, proxies: ProxyView, journal: Journal,
                 provider_for: Callable[[Experiment], MetricsProvider],
                 wall: Callable[[], float] | None = None,
                 notify: Callable[[dict[str, Any], tuple[Webhook, ...]], None] | None = None,
                 ) -> None:
        deps = Deps(store, proxies, provider_for, journal)
        if wall is not None:
            deps.wall = wall
        if notify is not None:
            deps.notify = notify
        self.deps = deps
        self.runners: dict[str, Runner] = {}
        self.removed: dict[str, Runner] = {}  # aborted because their document went away
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()

    @property
    def store(self) -> Store:
        return self.deps.store

    @property
    def journal(self) -> Journal:
        return self.deps.journal

    # -- lifecycle

    def restore_outcomes(self) -> None:
        """Before the first snapshot: what finished runs left in force is in force again."""
        for service, record in self.journal.all(OUTCOME).items():
            try:
                self.store.set_override(service, override_from(record["override"]))
            except (KeyError, TypeError, ValueError) as exc:
                log.error("outcome for %s is unreadable, ignored: %s", service, exc)

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stop.set()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def stand_down(self) -> None:
        """Leadership lost (Kubernetes mode): every run stops where it is, without rolling
        back; the traffic stays as it is, and the next leader restores the runs."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self.runners.clear()
        self.removed.clear()

    def reconcile(self) -> None:
        experiments = {n: e for n, e in self.store.experiments().items() if e.service}
        for name in list(self.runners):
            if name not in experiments:
                self._removed(name)
        for name, experiment in experiments.items():
            runner = self.runners.get(name)
            if runner is not None and runner.experiment.identity() != experiment.identity():
                log.info("%s: service, versions or strategy changed: a new run starts", name)
                self._stop_task(name)
                runner = None
            if runner is None:
                runner = self._start(experiment)
            elif runner.experiment != experiment:
                runner.update(experiment)
            status = self.store.status_of(EXPERIMENT_KIND, name)
            runner.held = status.reason if status and status.state is ObjectState.HELD else None
        self._release_outcomes()

    def _start(self, experiment: Experiment) -> Runner:
        record = self.journal.get(RUN, experiment.name)
        same = record is not None and record.get("identity") == list(
            map(str, experiment.identity()))
        runner = Runner(experiment, self.deps, record if same else None)
        self.runners[experiment.name] = runner
        if runner.state.phase.terminal:
            return runner  # finished before; its outcome is already in force
        # A restored run's traffic is in force before any snapshot is built, so no
        # proxy ever sees the declared (reset) split; a new run's first step too.
        runner.begin()
        assert experiment.service is not None
        self.journal.delete(OUTCOME, experiment.service)  # the run owns the traffic now
        self._tasks[experiment.name] = asyncio.get_running_loop().create_task(
            self._run(runner), name=f"experiment {experiment.name}")
        return runner

    async def _run(self, runner: Runner) -> None:
        try:
            await runner.run(self._stop)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: run failed", runner.name)
            return
        if runner.state.phase.terminal:
            self._record_outcome(runner)
        self.removed.pop(runner.name, None)

    def _record_outcome(self, runner: Runner) -> None:
        override = self.store.override(runner.service_name)
        if override is None:
            return
        self.journal.put(OUTCOME, runner.service_name, {
            "experiment": runner.name, "run": runner.state.run,
            "phase": runner.state.phase.value, "override": override_json(override),
            "declared": _declared_weights(self.store, runner.service_name),
        })

    def _stop_task(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
        self.runners.pop(name, None)

    def _removed(self, name: str) -> None:
        runner = self.runners.pop(name)
        task = self._tasks.get(name)
        if task is None or task.done() or runner.state.phase.terminal:
            return
        log.warning("%s: experiment document removed; aborting the run", name)
        self.removed[name] = runner
        task.get_loop().create_task(runner.command("abort", "config (document removed)"))

    def _release_outcomes(self) -> None:
        """An edit of a service's declared weights ends a finished run's hold on it."""
        live = {r.service_name for n, r in self.runners.items()
                if n in self._tasks and not self._tasks[n].done()}
        for service, record in self.journal.all(OUTCOME).items():
            if service in live:
                continue
            declared = _declared_weights(self.store, service)
            if declared is None or declared == record.get("declared"):
                continue
            log.info("%s: declared weights edited; the outcome of %s no longer holds",
                     service, record.get("experiment"))
            self.journal.delete(OUTCOME, service)
            self.store.set_override(service, None)

    # -- operations

    async def command(self, name: str, cmd: str, who: str) -> tuple[int, str]:
        runner = self.runners.get(name) or self.removed.get(name)
        if runner is None:
            return 404, f"no experiment named {name!r}"
        task = self._tasks.get(name)
        if task is None or task.done():
            return 409, f"the run is over ({runner.state.phase.value})"
        ok, message = await runner.command(cmd, who)
        return (200 if ok else 409), message

    def view(self, name: str) -> dict[str, Any] | None:
        runner = self.runners.get(name) or self.removed.get(name)
        if runner is None:
            return None
        out = runner.view()
        out["weights"] = self._weights(runner.service_name)
        out["documentRemoved"] = name in self.removed
        return out

    def views(self) -> list[dict[str, Any]]:
        return [v for n in sorted({*self.runners, *self.removed}) if (v := self.view(n))]

    def _weights(self, service: str) -> dict[str, float]:
        try:
            return {v.name: v.weight for v in self.store.state.service(service).versions}
        except KeyError:
            return {}

    def decisions(self, name: str, run: str | None = None) -> list[dict[str, Any]]:
        return self.journal.events(DECISION, name, run)

    def looks(self, name: str, run: str | None = None) -> list[dict[str, Any]]:
        return self.journal.events(LOOK, name, run)

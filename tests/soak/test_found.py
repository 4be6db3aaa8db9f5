"""Bugs the chaos soak found in Sluice, each reproduced on its own."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from analysis.eta import eta
from analysis.judge import Look, judge, start
from analysis.samples import Window
from analysis.spec import Direction
from controlplane.config.experiment import experiment_from_mapping
from controlplane.rollout.journal import Journal
from controlplane.state import StateError, StateStore
from tests.unit.rollout.fakes import experiment, load, manager, until, weights


def test_an_eta_with_a_look_of_no_candidate_traffic_does_not_raise() -> None:
    # The soak's experiments died ("run failed", analysis/eta.py _samples_in:
    # ZeroDivisionError) on the first look after a Prometheus restart: a window with
    # no new requests for one version gives a rate of 0, and the error-rate branch of
    # ``eta`` divided by it. The run's task ended; the experiment stayed "Progressing"
    # with nobody driving it until the next restart of Sluice.
    spec = experiment_from_mapping({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Experiment", "metadata": {"name": "x"},
        "spec": {"baseline": "b", "candidate": "c", "steps": [{"weight": 20, "soak": "0s"}],
                 "metrics": [{"name": "errors", "kind": "error_rate", "harmMargin": 1.0,
                              "nonInferiorityMargin": 1.0, "minEffect": 0.1,
                              "minSamples": 30}]},
    }).analysis
    state = start(spec, 0.0)
    state, j = judge(state, Look(1.0, Window(1.0, "c", 10, 0, weight=20),
                                 Window(1.0, "b", 40, 0, weight=80)))
    errors = state.tracks[0].state
    for rate_c, rate_b in ((0.0, 40.0), (10.0, 0.0), (0.0, 0.0)):
        found = eta(j.metrics[0], Direction.HIGHER_IS_WORSE, rate_c, rate_b, min_samples=30,
                    interval_s=1.0, state=errors, alpha=0.05)  # type: ignore[arg-type]
        assert found.pass_in_s is None and found.decide_in_s is None


class _Disk:
    """A state store whose writes fail while ``readonly`` (a disk remounted read-only)."""

    def __init__(self, store: StateStore) -> None:
        self.store, self.readonly = store, False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if self.readonly and name in ("put", "append_event", "delete"):
            def refuse(*_: Any, **__: Any) -> Any:
                raise StateError("disk I/O error")
            return refuse
        return attr


async def test_a_rollback_decided_while_the_disk_is_read_only_survives_a_restart(
        tmp_path: Path) -> None:
    disk = _Disk(StateStore.open(tmp_path / "state.db"))
    mgr, store, source = manager(journal=Journal(disk))  # type: ignore[arg-type]
    doc = experiment(steps=[10, 20, 30, 40, 50], stallBudget="1h")
    load(store, mgr, doc)
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(mgr.run(stop))
    try:
        await until(lambda: mgr.view("canary")["step"] >= 1)  # type: ignore[index]
        disk.readonly = True
        source.error_rate = {"v1": 0.01, "v2": 0.5}
        await until(lambda: mgr.view("canary")["phase"] == "RolledBack")  # type: ignore[index]
        assert weights(store)["v2"] == 0
        disk.readonly = False  # the disk is back; nothing else happens to the run
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        await task
    # Sluice restarts on the same state file.
    again, store_again, _ = manager(journal=Journal(disk))  # type: ignore[arg-type]
    load(store_again, again, doc)
    try:
        view = again.view("canary")
        assert view is not None and view["phase"] == "RolledBack", view
        assert weights(store_again)["v2"] == 0
    finally:
        stop_again = asyncio.Event()
        stop_again.set()
        await again.run(stop_again)

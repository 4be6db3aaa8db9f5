"""The Grafana dashboard is generated from code, up to date, and asks only for series
Sluice exports."""

from __future__ import annotations

import asyncio
import json
import re

from prometheus_client import generate_latest

from controlplane.metrics import Metrics
from controlplane.metrics_experiments import ExperimentCollector
from manifests.dashboards.build import OUT, main
from tests.unit.rollout.fakes import experiment, load, manager, until


def test_the_committed_dashboard_is_up_to_date() -> None:
    assert main(["--check"]) == 0, "run: python -m manifests.dashboards.build"


async def test_every_series_the_dashboard_queries_is_exported() -> None:
    mgr, store, _ = manager()
    stop = asyncio.Event()
    load(store, mgr, experiment(steps=[10, 20, 30, 40, 50]))
    task = asyncio.get_running_loop().create_task(mgr.run(stop))
    await until(lambda: mgr.view("canary")["looks"] >= 2)  # type: ignore[index]
    metrics = Metrics()
    metrics.registry.register(ExperimentCollector(store, mgr))
    metrics.nacks.labels("Cluster", "sotw").inc(0)
    metrics.observe_documents([])
    text = generate_latest(metrics.registry).decode()
    exported = set(re.findall(r"^(sluice_\w+)", text, re.MULTILINE))
    exported |= set(re.findall(r"^# TYPE (sluice_\w+) gauge", text, re.MULTILINE))
    stop.set()
    await task
    board = json.loads(OUT.read_text())
    wanted = set(re.findall(r"\bsluice_\w+", json.dumps(board)))
    wanted -= {"sluice_experiments", "sluice"}  # the uid, the tag
    assert wanted and wanted <= exported, sorted(wanted - exported)
    refs = [[t["refId"] for t in p.get("targets", [])] for p in board["panels"]]
    assert all(len(set(r)) == len(r) and all(r) for r in refs)

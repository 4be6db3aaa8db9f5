"""The experiments API: reads are open, every mutation needs the bearer token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from controlplane.api_auth import Auth, read_tokens
from controlplane.api_experiments import ACTIONS, ExperimentsApi
from controlplane.metrics_experiments import ExperimentCollector
from controlplane.replay import main as replay
from tests.unit.rollout.fakes import experiment, load, manager, until

TOKEN = "s3cret-token-0123456789"


@pytest.fixture
async def setup() -> AsyncIterator[tuple[TestClient, object, object]]:  # type: ignore[type-arg]
    mgr, store, source = manager()
    source.per_read = 200  # slow enough that the run is still going
    stop = asyncio.Event()
    load(store, mgr, experiment(steps=[10, 20, 30, 40, 50], stallBudget="1h"))
    task = asyncio.get_running_loop().create_task(mgr.run(stop))
    app = web.Application()
    ExperimentsApi(mgr, TOKEN).routes(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client, mgr, store
    finally:
        await client.close()
        stop.set()
        await task


async def test_every_mutation_without_the_token_gets_401(setup) -> None:  # type: ignore[no-untyped-def]
    client, mgr, _ = setup
    for action in ACTIONS:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            r = await client.post(f"/api/v1/experiments/canary/{action}", headers=headers)
            assert r.status == 401, (action, headers)
            assert "Bearer" in r.headers["WWW-Authenticate"]
    assert mgr.view("canary")["phase"] in ("Progressing", "Holding")


async def test_without_a_token_file_mutations_are_403() -> None:
    mgr, store, _ = manager()
    load(store, mgr, experiment())
    app = web.Application()
    ExperimentsApi(mgr, None).routes(app)
    async with TestClient(TestServer(app)) as client:
        r = await client.post("/api/v1/experiments/canary/abort",
                              headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status == 403 and "api-token-file" in (await r.json())["error"]


async def test_reads_and_an_authorized_pause_and_abort(setup) -> None:  # type: ignore[no-untyped-def]
    client, mgr, _ = setup
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = await (await client.get("/api/v1/experiments")).json()
    [e] = body["experiments"]
    assert (e["name"], e["service"], e["strategy"]) == ("canary", "chat", "canary")
    assert e["weights"] == {"v1": 90, "v2": 10} and e["steps"] == [10, 20, 30, 40, 50]
    r = await client.post("/api/v1/experiments/canary/pause", headers=auth)
    assert r.status == 200 and (await r.json())["experiment"]["phase"] == "Paused"
    r = await client.post("/api/v1/experiments/canary/promote", headers=auth)
    assert r.status == 409
    r = await client.post("/api/v1/experiments/canary/abort", headers=auth)
    assert r.status == 200
    await until(lambda: mgr.view("canary")["phase"] == "RolledBack")
    detail = await (await client.get("/api/v1/experiments/canary")).json()
    kinds = [d["event"] for d in detail["decisions"]]
    assert kinds[:1] == ["start"] and {"pause", "abort", "done"} <= set(kinds)
    assert any("by token" in d["reason"] for d in detail["decisions"])
    assert (await client.get("/api/v1/experiments/nope")).status == 404


async def test_metrics_report_weights_phase_and_evidence(setup) -> None:  # type: ignore[no-untyped-def]
    _, mgr, store = setup
    await until(lambda: mgr.view("canary")["looks"] >= 2)
    registry = CollectorRegistry()
    registry.register(ExperimentCollector(store, mgr))
    families = {f.name: f for f in text_string_to_metric_families(
        generate_latest(registry).decode())}
    weights = {(s.labels["version"], s.labels["set_by"]): s.value
               for s in families["sluice_service_weight_percent"].samples}
    assert weights[("v2", "experiment/canary")] > 0
    phase = {s.labels["phase"]: s.value for s in families["sluice_experiment_phase"].samples}
    assert sum(phase.values()) == 1
    verdicts = [s for s in families["sluice_experiment_metric_verdict"].samples if s.value == 1]
    assert [s.labels["metric"] for s in verdicts] == ["errors"]
    assert {s.labels["version"] for s in families["sluice_experiment_requests"].samples} == {
        "v1", "v2"}


async def test_the_exported_samples_replay_to_the_same_decisions(
        setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    import json

    import yaml

    client, mgr, _ = setup
    await until(lambda: mgr.view("canary")["looks"] >= 4)
    body = await (await client.get("/api/v1/experiments/canary/samples.jsonl")).text()
    (tmp_path / "s.jsonl").write_text(body)
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(experiment(
        steps=[10, 20, 30, 40, 50], stallBudget="1h")))
    assert replay(["--experiment", str(tmp_path / "e.yaml"), str(tmp_path / "s.jsonl")]) == 0
    replayed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    live = [look for look in mgr.looks("canary") if look.get("counted")][:len(replayed)]
    assert len(replayed) >= 4
    for r, look in zip(replayed, live, strict=True):
        assert r["t"] == look["t"]
        assert [m["verdict"] for m in r["metrics"]] == [
            m["verdict"] for m in look["judgment"]["metrics"]]
        assert r["metrics"][0]["estimate"] == look["judgment"]["metrics"][0]["estimate"]


def test_token_files_are_checked(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("short\n")
    with pytest.raises(ValueError, match="at least 16"):
        read_tokens(str(tmp_path / "t"))
    with pytest.raises(ValueError, match="missing"):
        read_tokens(str(tmp_path / "missing"))
    (tmp_path / "t").write_text(f"  {TOKEN}\n")
    assert list(read_tokens(str(tmp_path / "t")).values()) == [TOKEN]
    (tmp_path / "t").write_text(f"# operators\nalice {TOKEN}\nbob {TOKEN}-bob\n")
    assert read_tokens(str(tmp_path / "t")) == {"alice": TOKEN, "bob": f"{TOKEN}-bob"}


async def test_mutations_are_audited_with_who_and_reads_can_need_a_token() -> None:
    mgr, store, _ = manager()
    load(store, mgr, experiment(steps=[10, 20, 30]))
    auth = Auth(write={"alice": TOKEN}, read={"dashboards": "read-token-0123456789"})
    app = web.Application(middlewares=[auth.middleware])
    ExperimentsApi(mgr, auth).routes(app)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/api/v1/experiments")).status == 401
        for token in ("read-token-0123456789", TOKEN):
            r = await client.get("/api/v1/experiments",
                                 headers={"Authorization": f"Bearer {token}"})
            assert r.status == 200
        r = await client.post("/api/v1/experiments/canary/pause",
                              headers={"Authorization": "Bearer read-token-0123456789"})
        assert r.status == 401  # a read token cannot change anything
        r = await client.post("/api/v1/experiments/canary/pause",
                              headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status == 200
        r = await client.get("/api/v1/audit", headers={"Authorization": f"Bearer {TOKEN}"})
        entries = (await r.json())["entries"]
    assert [(e["action"], e["status"], e["who"]) for e in entries] == [
        ("pause", 401, None), ("pause", 200, "alice")]
    assert all(e["experiment"] == "canary" and e["at"] > 0 for e in entries)

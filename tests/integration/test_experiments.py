"""Experiments end to end: real Envoys, simulated pods, Sluice deciding from Envoy's stats.

Each test runs a bounded load through Envoy and asserts what users care about:
the outcome, the traffic Envoy ends with, and that nothing Sluice did failed
a client request.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from controlplane.podsim import start_pods
from tests.integration.conftest import EnvoyFactory
from tests.integration.experiments_env import (
    TOKEN,
    Load,
    chat_url,
    experiment_doc,
    pod,
    service_doc,
    world,
)
from tests.integration.harness import async_wait_for, free_port
from tests.integration.prometheus import PrometheusProcess, ScrapeJob
from tests.integration.xds_env import (
    ConfigDir,
    SubprocessControlPlane,
    get_json,
    route_weights,
    start_envoy,
    wanted_weights,
)


async def test_a_healthy_canary_walks_every_step_and_is_promoted(
        tmp_path: Path, envoy_factory: EnvoyFactory) -> None:
    async with world(tmp_path, envoy_factory, [pod("v1"), pod("v1"), pod("v2")]) as w:
        load = Load([w.url]).start()
        w.config.write(experiment_doc(), name="rollout.yaml")
        view = await w.sluice.wait_phase({"Succeeded", "RolledBack", "Failed"})
        replies = await load.stop()
        assert view["phase"] == "Succeeded", view["reason"]
        steps = [d for d in view["decisions"] if d["event"] == "advance"]
        assert len(steps) == 1 and view["decisions"][-1]["event"] == "done"
        await w.envoys[0].async_wait_for(
            lambda: route_weights(w.envoys[0], "chat") == wanted_weights("chat", {"v1": 0,
                                                                                "v2": 100}),
            10, what="Envoy at 100 % v2")
        assert [r for r in replies if r.status != 200] == []
        assert load.versions().get("v2", 0) > 100
        body = await get_json(f"{w.sluice.admin}/api/v1/services")
        [chat] = body["services"]
        assert chat["weights"] == {"v1": 0, "v2": 100}
        assert chat["declaredWeights"] == {"v1": 100, "v2": 0}
        assert chat["weightsSetBy"] == "experiment/rollout"
        consistency = await get_json(f"{w.sluice.admin}/api/v1/services/chat/consistency")
        assert consistency["consistent"], consistency["mismatches"]
        assert consistency["proxies"][0]["serving"] == ["v2"]
        assert {p["reported"] for p in consistency["pods"]} == {"v1", "v2"}


async def test_a_candidate_with_raised_errors_is_rolled_back(
        tmp_path: Path, envoy_factory: EnvoyFactory) -> None:
    async with world(tmp_path, envoy_factory, [pod("v1"), pod("v1"), pod("v2")]) as w:
        w.pods[2].set_faults(error_rate=0.3)
        load = Load([w.url]).start()
        w.config.write(experiment_doc(), name="rollout.yaml")
        view = await w.sluice.wait_phase({"Succeeded", "RolledBack", "Failed"})
        await load.stop()
        assert view["phase"] == "RolledBack"
        assert "errors" in view["reason"] and "harm" in view["reason"]
        await w.envoys[0].async_wait_for(
            lambda: route_weights(w.envoys[0], "chat") == wanted_weights("chat", {"v1": 100,
                                                                                "v2": 0}),
            10, what="Envoy at 100 % v1")
        [errors] = view["judgment"]["metrics"]
        assert errors["verdict"] == "FAIL" and errors["pvalue"] <= errors["alpha"]
        assert errors["details"]["rate_candidate"] > 0.2 > errors["details"]["rate_baseline"]
        # the only failures are the candidate's own injected errors
        assert all(r.status == 500 and r.version == "v2" for r in load.failed())


async def test_an_ab_header_cohort_reaches_only_the_candidate_and_names_the_winner(
        tmp_path: Path, envoy_factory: EnvoyFactory) -> None:
    async with world(tmp_path, envoy_factory, [pod("v1"), pod("v2")]) as w:
        w.pods[0].set_faults(error_rate=0.15)  # the baseline is the worse arm
        w.config.write(experiment_doc(
            strategy="abtest", steps=None,
            abtest={"match": {"header": "x-cohort", "value": "beta"}, "minSamples": 300},
            metrics=[{"name": "errors", "kind": "error_rate", "harmMargin": 0.25,
                      "nonInferiorityMargin": 0.25, "primary": True}]), name="rollout.yaml")

        async def cohort_applied() -> bool:
            view = await w.sluice.experiment()
            return view is not None and view["stepStarted"] is not None

        await async_wait_for(cohort_applied, 15, what="the cohort route on every proxy")
        beta = Load([w.url], rate=60, headers={"x-cohort": "beta"}).start()
        rest = Load([w.url], rate=60).start()
        view = await w.sluice.wait_phase({"Succeeded", "RolledBack", "Failed"})
        await beta.stop()
        await rest.stop()
        assert view["phase"] == "Succeeded"
        result = view["report"]["abtest"]
        assert result["winner"] == "candidate", result
        assert result["effects"][0]["interval"][1] < 1
        # while the test ran, the cohort saw only v2 and everyone else only v1
        [ended] = [d["t"] for d in view["decisions"] if d["event"] == "conclude"]
        cohort = {r.version for r in beta.replies if r.status in (200, 500) and r.wall < ended}
        others = {r.version for r in rest.replies if r.status in (200, 500)}
        assert cohort == {"v2"} and others == {"v1"}
        assert view["weights"] == {"v1": 100, "v2": 0}  # promoteOnWin is off: v1 stays


async def test_bluegreen_mirrors_then_switches_without_dropping_a_request(
        tmp_path: Path, envoy_factory: EnvoyFactory) -> None:
    async with world(tmp_path, envoy_factory, [pod("v1"), pod("v2")]) as w:
        load = Load([w.url]).start()
        w.config.write(experiment_doc(strategy="bluegreen", steps=None,
                                    bluegreen={"mirrorDuration": "3s", "rollbackWindow": "3s"}),
                     name="rollout.yaml")
        await async_wait_for(lambda: sum(w.pods[1].responses.values()) > 50, 20,
                             what="mirrored copies reach v2")
        mirrored = {r.version for r in load.replies if r.status == 200}
        assert mirrored == {"v1"}  # clients only ever saw v1 while v2 took copies
        view = await w.sluice.wait_phase({"Succeeded", "RolledBack", "Failed"})
        await load.stop()
        assert view["phase"] == "Succeeded", view["reason"]
        assert load.failed() == []
        assert view["weights"] == {"v1": 0, "v2": 100}


async def test_a_rolling_update_replaces_pods_one_at_a_time_without_dropping_a_request(
        tmp_path: Path, envoy_factory: EnvoyFactory) -> None:
    async with world(tmp_path, envoy_factory, [pod("v1"), pod("v1"), pod("v1")]) as w:
        load = Load([w.url]).start()
        w.config.write(experiment_doc(
            strategy="rolling", steps=None,
            rolling={"updateHook": {"http": {
                "url": "http://{{pod}}/admin/version",
                "body": '{"version": "{{version}}", "coldStartMs": 300}'}},
                "drainTimeout": "10s", "readyTimeout": "20s"},
            metrics=[{"name": "errors", "kind": "error_rate", "harmMargin": 0.25,
                      "nonInferiorityMargin": 0.25, "minEffect": 0.05, "minSamples": 20}]),
            name="rollout.yaml")
        view = await w.sluice.wait_phase({"Succeeded", "RolledBack", "Failed"}, timeout=120)
        await load.stop()
        assert view["phase"] == "Succeeded", view["reason"]
        assert {p.version for p in w.pods} == {"v2"}
        assert load.failed() == []
        assert view["weights"] == {"v1": 0, "v2": 100}


async def test_a_strict_synchronized_switch_never_mixes_versions(
        tmp_path: Path, envoy_factory: EnvoyFactory) -> None:
    # Two xDS processes: the switch waits for every proxy's ACK on either of them.
    async with world(tmp_path, envoy_factory, [pod("v1"), pod("v2")], envoys=2,
                     workers=2) as w:
        load = Load([w.url], rate=100).start()
        await asyncio.sleep(1.0)
        w.config.write(experiment_doc(strategy="synchronized", steps=None,
                                    synchronized={"strict": True, "rollbackWindow": "2s",
                                                  "drainTimeout": "10s"}),
                     name="rollout.yaml")
        view = await w.sluice.wait_phase({"Succeeded", "RolledBack", "Failed"})
        replies = await load.stop()
        assert view["phase"] == "Succeeded", view["reason"]
        report = view["report"]["synchronized"]
        assert report["proxies"] == 2 and report["switchWindowMs"] >= 0
        assert report["oldDrainedMs"] is not None
        first_v2 = min(r.done for r in replies if r.version == "v2" and r.status == 200)
        late_v1 = [r for r in replies if r.version == "v1" and r.sent > first_v2]
        assert late_v1 == []  # once anyone saw v2, nobody was sent to v1
        assert load.failed(allow_503_retry_after=True) == []
        assert any(r.status == 503 and r.retry_after for r in replies) or report[
            "unavailableMs"] < 50


async def test_mutations_without_the_token_are_refused(
        tmp_path: Path, envoy_factory: EnvoyFactory) -> None:
    async with world(tmp_path, envoy_factory, [pod("v1"), pod("v2")]) as w:
        w.config.write(experiment_doc(steps=[10, 20, 30, 40, 50, 60, 70]), name="rollout.yaml")
        await w.sluice.wait_phase({"Progressing", "Holding"})
        for action in ("promote", "abort", "pause", "resume"):
            for token in (None, "wrong-token-wrong-token"):
                status, _ = await w.sluice.post(f"/api/v1/experiments/rollout/{action}", token)
                assert status == 401, action
        status, body = await w.sluice.post("/api/v1/experiments/rollout/abort", TOKEN)
        assert status == 200, body
        await w.sluice.wait_phase({"RolledBack"})


async def test_sigkill_mid_canary_resumes_at_the_same_step_and_weights(
        tmp_path: Path, envoy_factory: EnvoyFactory) -> None:
    listener = free_port()
    async with start_pods([pod("v1"), pod("v1"), pod("v2")]) as pods:
        config = ConfigDir(tmp_path / "config")
        config.write(service_doc(pods, listener), name="chat.yaml")
        config.write(experiment_doc(steps=[10, 20, 30, 40, 50, 60, 70, 80, 90],
                                    interval="500ms"), name="rollout.yaml")
        sluice = SubprocessControlPlane(config, tmp_path / "sluice.log",
                                        extra_args=("--state", str(tmp_path / "state.db")))
        await sluice.start()
        try:
            envoy = await start_envoy(envoy_factory, "gw-0", sluice.xds_port, delta=False)
            load = Load([chat_url(listener)], rate=150).start()

            async def experiment() -> dict[str, Any]:
                doc: dict[str, Any] = await get_json(
                    f"{sluice.admin_url}/api/v1/experiments/rollout")
                return doc

            async def at_step_three() -> dict[str, Any] | None:
                view = await experiment()
                return view if view["step"] >= 2 and view["stepStarted"] else None

            before = await async_wait_for(at_step_three, 60, what="step 3")
            sluice.kill()
            killed_at = route_weights(envoy, "chat")
            await asyncio.sleep(1.5)  # Envoy keeps serving the last config it has
            await sluice.start()
            after = await experiment()
            assert after["run"] == before["run"]
            assert after["step"] >= before["step"]  # same step, or later: never reset
            # Envoy never saw a reset split: its weights went from what it had at the
            # kill straight on, never back to the declared 100/0.
            seen = [killed_at]
            for _ in range(20):
                seen.append(route_weights(envoy, "chat"))
                await asyncio.sleep(0.1)
            assert all(w is not None and w["chat/v2"] >= killed_at["chat/v2"]  # type: ignore[index]
                       for w in seen), seen
            view = await async_wait_for(
                lambda: _finished(experiment), 90, what="the run to finish")
            replies = await load.stop()
            assert view["phase"] == "Succeeded", view["reason"]
            assert [r for r in replies if r.status != 200] == []
        finally:
            sluice.close()


async def _finished(experiment: Any) -> dict[str, Any] | None:
    view = await experiment()
    return view if view["phase"] in ("Succeeded", "RolledBack", "Failed") else None


async def test_prometheus_stopped_mid_run_holds_then_the_run_continues(
        tmp_path: Path, envoy_factory: EnvoyFactory) -> None:
    async with world(tmp_path, envoy_factory, [pod("v1"), pod("v2")]) as w:
        envoy = w.envoys[0]
        jobs = [ScrapeJob("envoy", [f"127.0.0.1:{envoy.admin_port}"], "/stats/prometheus")]
        prometheus = PrometheusProcess(jobs).start()
        try:
            load = Load([w.url]).start()
            w.config.write(experiment_doc(
                steps=[20, 40, 60, 80], metricsSource={"prometheus": {"url": prometheus.url,
                                                                      "timeout": "2s"}}),
                name="rollout.yaml")

            async def past_first_step() -> dict[str, Any] | None:
                view = await w.sluice.experiment()
                return view if view and view["step"] >= 1 and view["stepStarted"] else None

            await async_wait_for(past_first_step, 60, what="step 2")
            port = prometheus.port
            prometheus.stop()
            held = await w.sluice.wait_phase({"Holding"}, timeout=20)
            assert "prometheus" in held["reason"] and "metricsSource" in held["reason"]
            weights = held["weights"]
            await asyncio.sleep(3)
            still = await w.sluice.experiment()
            assert still is not None and still["phase"] == "Holding"
            assert still["weights"] == weights  # held in place: no rollback, no advance
            prometheus = PrometheusProcess(jobs, port=port).start()
            view = await w.sluice.wait_phase({"Succeeded", "RolledBack", "Failed"}, timeout=90)
            await load.stop()
            assert view["phase"] == "Succeeded", view["reason"]
            assert "rollback" not in [d["event"] for d in view["decisions"]]
        finally:
            prometheus.stop()

"""Whole runs through the real runner, judge and store, with a fake metrics source."""

from __future__ import annotations

import asyncio
from pathlib import Path

from controlplane.rollout.journal import Journal
from controlplane.rollout.machine import Phase
from controlplane.state import StateStore
from tests.unit.rollout.fakes import experiment, load, manager, until, weights


async def run_until(mgr, stop, phase_in, timeout=20.0):  # type: ignore[no-untyped-def]
    task = asyncio.get_running_loop().create_task(mgr.run(stop))
    try:
        await until(lambda: (v := mgr.view("canary")) is not None and v["phase"] in phase_in,
                    timeout)
    finally:
        pass
    return task


async def stop_all(mgr, stop, task) -> None:  # type: ignore[no-untyped-def]
    stop.set()
    await task


async def test_a_healthy_canary_walks_every_step_and_is_promoted() -> None:
    mgr, store, _ = manager()
    stop = asyncio.Event()
    load(store, mgr, experiment())
    assert weights(store) == {"v1": 90, "v2": 10}  # step 1 applied at once
    task = await run_until(mgr, stop, {"Succeeded"})
    assert weights(store) == {"v1": 0, "v2": 100}
    events = [d["event"] for d in mgr.decisions("canary")]
    assert events[0] == "start" and "advance" in events and events[-2:] == ["promote", "done"]
    await stop_all(mgr, stop, task)


async def test_a_candidate_with_more_errors_is_rolled_back_to_all_baseline() -> None:
    mgr, store, source = manager()
    source.error_rate["v2"] = 0.08
    stop = asyncio.Event()
    load(store, mgr, experiment())
    task = await run_until(mgr, stop, {"RolledBack"})
    assert weights(store) == {"v1": 100, "v2": 0}
    view = mgr.view("canary")
    assert view is not None and "errors" in view["reason"] and "harm" in view["reason"]
    await stop_all(mgr, stop, task)


async def test_a_guard_rolls_back_before_the_statistics_have_enough_data() -> None:
    mgr, store, source = manager()
    source.error_rate["v2"] = 0.9
    source.per_read = 300
    stop = asyncio.Event()
    load(store, mgr, experiment(guards=[{"metric": "errors", "above": 0.5, "minRequests": 10}],
                                metrics=[{"name": "errors", "kind": "error_rate",
                                          "harmMargin": 0.2, "nonInferiorityMargin": 0.2,
                                          "minSamples": 100000}]))
    task = await run_until(mgr, stop, {"RolledBack"})
    view = mgr.view("canary")
    assert view is not None and "guard errors > 50.0%" in view["reason"]
    assert view["looks"] <= 3
    await stop_all(mgr, stop, task)


async def test_no_data_holds_and_never_rolls_back_then_the_stall_budget_pauses() -> None:
    mgr, store, source = manager()
    source.down = True
    stop = asyncio.Event()
    load(store, mgr, experiment(stallBudget="300ms", onStall="pause"))
    task = await run_until(mgr, stop, {"Holding"})
    assert weights(store) == {"v1": 90, "v2": 10}
    view = mgr.view("canary")
    assert view is not None and "connection refused" in view["reason"]
    await until(lambda: mgr.view("canary")["phase"] == "Paused")  # type: ignore[index]
    assert weights(store) == {"v1": 90, "v2": 10}  # paused in place, not rolled back
    assert "stalled" in mgr.view("canary")["reason"]  # type: ignore[index]
    source.down = False
    status, _ = await mgr.command("canary", "resume", "test")
    assert status == 200
    await until(lambda: mgr.view("canary")["phase"] == "Succeeded")  # type: ignore[index]
    await stop_all(mgr, stop, task)


async def test_an_outage_that_ends_lets_the_run_continue() -> None:
    mgr, store, source = manager()
    stop = asyncio.Event()
    source.down = True
    load(store, mgr, experiment(stallBudget="1h"))
    task = await run_until(mgr, stop, {"Holding"})
    source.down = False
    await until(lambda: mgr.view("canary")["phase"] == "Succeeded")  # type: ignore[index]
    await stop_all(mgr, stop, task)


async def test_the_promotion_gate_waits_for_an_authorized_promote() -> None:
    mgr, store, _ = manager()
    stop = asyncio.Event()
    load(store, mgr, experiment(pauseBeforePromotion=True))
    task = await run_until(mgr, stop, {"Paused"})
    view = mgr.view("canary")
    assert view is not None and view["gate"] and weights(store) == {"v1": 50, "v2": 50}
    assert (await mgr.command("canary", "resume", "t"))[0] == 409
    status, message = await mgr.command("canary", "promote", "alice")
    assert status == 200, message
    await until(lambda: mgr.view("canary")["phase"] == "Succeeded")  # type: ignore[index]
    assert weights(store) == {"v1": 0, "v2": 100}
    await stop_all(mgr, stop, task)


async def test_promote_without_a_gate_is_refused_and_abort_rolls_back() -> None:
    mgr, store, source = manager()
    source.per_read = 50  # too few samples to pass soon
    stop = asyncio.Event()
    load(store, mgr, experiment())
    task = await run_until(mgr, stop, {"Progressing", "Holding"})
    status, message = await mgr.command("canary", "promote", "bob")
    assert status == 409 and "nothing to approve" in message
    assert (await mgr.command("canary", "abort", "bob"))[0] == 200
    await until(lambda: mgr.view("canary")["phase"] == "RolledBack")  # type: ignore[index]
    assert weights(store) == {"v1": 100, "v2": 0}
    await stop_all(mgr, stop, task)


async def test_a_restart_mid_canary_resumes_at_the_same_step_and_weights(
        tmp_path: Path) -> None:
    state = StateStore.open(tmp_path / "state.db")
    mgr, store, source = manager(journal=Journal(state))
    source.per_read = 600
    stop = asyncio.Event()
    load(store, mgr, experiment(steps=[10, 30, 50, 70, 90]))
    task = asyncio.get_running_loop().create_task(mgr.run(stop))
    await until(lambda: mgr.view("canary")["step"] >= 2)  # type: ignore[index]
    stop.set()
    await task
    step, split = mgr.view("canary")["step"], weights(store)  # type: ignore[index]
    run = mgr.view("canary")["run"]  # type: ignore[index]
    # a new process: new store, new manager, the same state file
    mgr2, store2, _ = manager(journal=Journal(state))
    load(store2, mgr2, experiment(steps=[10, 30, 50, 70, 90]))
    view = mgr2.view("canary")
    assert view is not None and (view["step"], view["run"]) == (step, run)
    assert weights(store2) == split  # in force before anything else runs
    assert view["looks"] > 0  # the judge's statistics were rebuilt from the journal
    state.close()


async def test_removing_the_experiment_rolls_back_and_the_outcome_stays() -> None:
    mgr, store, _ = manager()
    stop = asyncio.Event()
    load(store, mgr, experiment(steps=[10, 50], stallBudget="1h"))
    task = asyncio.get_running_loop().create_task(mgr.run(stop))
    await until(lambda: weights(store) == {"v1": 90, "v2": 10})
    load(store, mgr, None)
    await until(lambda: weights(store) == {"v1": 100, "v2": 0})
    await stop_all(mgr, stop, task)


async def test_an_outcome_holds_until_the_declared_weights_are_edited() -> None:
    mgr, store, _ = manager()
    stop = asyncio.Event()
    load(store, mgr, experiment())
    task = await run_until(mgr, stop, {"Succeeded"})
    await asyncio.sleep(0.05)
    load(store, mgr, None)  # the document goes; the outcome stays
    assert weights(store) == {"v1": 0, "v2": 100}
    assert store.override("chat") is not None
    from controlplane.config import load_text
    from tests.unit.rollout.fakes import SERVICE

    edited = SERVICE.replace("weight: 100", "weight: 60").replace("weight: 0", "weight: 40")
    store.apply_load("file", load_text(edited, "chat.yaml"))
    mgr.reconcile()
    assert weights(store) == {"v1": 60, "v2": 40}
    await stop_all(mgr, stop, task)


async def test_an_ab_header_cohort_names_the_winner_and_promotes_on_win() -> None:
    mgr, store, source = manager()
    source.error_rate = {"v1": 0.05, "v2": 0.01}
    stop = asyncio.Event()
    load(store, mgr, experiment(
        strategy="abtest", steps=None,
        abtest={"match": {"header": "x-cohort", "value": "beta"}, "promoteOnWin": True,
                "minSamples": 4000},
        metrics=[{"name": "errors", "kind": "error_rate", "harmMargin": 0.2,
                  "nonInferiorityMargin": 0.2, "primary": True}]))
    shape = store.state.service("chat").traffic
    assert [(c.header, c.value, c.version) for c in shape.cohorts] == [("x-cohort", "beta", "v2")]
    task = await run_until(mgr, stop, {"Succeeded"})
    result = mgr.view("canary")["report"]["abtest"]  # type: ignore[index]
    assert result["winner"] == "candidate"
    [effect] = result["effects"]
    assert effect["better"] == "candidate" and effect["interval"][1] < 1
    assert weights(store) == {"v1": 0, "v2": 100}
    await stop_all(mgr, stop, task)


async def test_bluegreen_mirrors_first_then_switches_and_keeps_the_baseline_warm() -> None:
    mgr, store, _ = manager()
    stop = asyncio.Event()
    load(store, mgr, experiment(strategy="bluegreen", steps=None,
                                bluegreen={"mirrorDuration": "50ms", "rollbackWindow": "50ms"}))
    svc = store.state.service("chat")
    assert weights(store) == {"v1": 100, "v2": 0}
    assert [(m.version, m.percent) for m in svc.traffic.mirrors] == [("v2", 100)]
    task = asyncio.get_running_loop().create_task(mgr.run(stop))
    await until(lambda: weights(store) == {"v1": 0, "v2": 100})
    assert [m.version for m in store.state.service("chat").traffic.mirrors] == ["v1"]
    await until(lambda: mgr.view("canary")["phase"] == "Succeeded")  # type: ignore[index]
    assert store.state.service("chat").traffic.mirrors == ()
    await stop_all(mgr, stop, task)


async def test_phase_words_the_api_reports() -> None:
    assert {p.value for p in Phase} >= {"Progressing", "Holding", "Paused", "Succeeded",
                                        "RolledBack", "Failed"}


async def test_sticky_services_do_not_hold_on_a_per_request_split_check() -> None:
    from controlplane.config import load_text
    from controlplane.store import Store
    from tests.unit.rollout.fakes import SERVICE

    sticky = SERVICE.replace("  versions:", "  loadBalancing: {policy: maglev, hashKey: {header: "
                             "x-session-id}}\n  versions:")
    store = Store(("file",))
    store.apply_load("file", load_text(sticky, "chat.yaml"))
    mgr, store, _ = manager(store=store)
    store.apply_load("file", load_text(sticky, "chat.yaml"))
    import yaml

    store.apply_load("file", load_text(sticky + "---\n" + yaml.safe_dump(experiment()),
                                       "chat.yaml"))
    mgr.reconcile()
    runner = mgr.runners["canary"]
    assert not runner.analysis.check_srm and "sticky" in runner.report["srm"]


class RefusingJournal(Journal):
    """A journal whose store can be made to refuse writes (a read-only disk)."""

    refuse = False

    def put(self, kind, name, value):  # type: ignore[no-untyped-def]
        return False if self.refuse else super().put(kind, name, value)

    def append(self, kind, name, event):  # type: ignore[no-untyped-def]
        return False if self.refuse else super().append(kind, name, event)


async def test_what_cannot_be_recorded_is_not_done_except_a_safety_rollback() -> None:
    journal = RefusingJournal()
    mgr, store, source = manager(journal=journal)
    stop = asyncio.Event()
    load(store, mgr, experiment(steps=[10, 20, 30]))
    journal.refuse = True
    source.per_read = 20_000
    task = asyncio.get_running_loop().create_task(mgr.run(stop))
    await until(lambda: "refused to record" in mgr.view("canary")["reason"])  # type: ignore[index]
    reads = source.reads
    await until(lambda: source.reads >= reads + 5)
    view = mgr.view("canary")
    assert view is not None and view["step"] == 0 and weights(store) == {"v1": 90, "v2": 10}
    source.error_rate["v2"] = 0.2  # harm: the rollback goes ahead even unrecorded
    await until(lambda: mgr.view("canary")["phase"] == "RolledBack")  # type: ignore[index]
    assert weights(store) == {"v1": 100, "v2": 0}
    stop.set()
    await task


async def test_a_command_that_comes_as_the_run_ends_is_answered() -> None:
    """Nothing reads the queue once a run has ended: a command queued just then
    (the manager saw the run alive) is answered, never left waiting forever."""
    from controlplane.rollout.runner import Command

    mgr, store, _ = manager()
    load(store, mgr, experiment(steps=[10, 20, 30]))
    runner = mgr.runners["canary"]
    queued = Command("pause", "test")
    runner.commands.put_nowait(queued)
    stop = asyncio.Event()
    stop.set()  # the run ends before it serves anything
    await runner.run(stop)
    assert await asyncio.wait_for(queued.done, 1) == (False, "the run is over (Progressing)")
    late = await asyncio.wait_for(runner.command("resume", "test"), 1)
    assert late[0] is False and "the run is over" in late[1]
    await mgr.run(stop)  # and the manager's own task for it ends too

"""Properties of whole runs (real runner, judge and plans; a fake metrics source):

- no path leaves the candidate any traffic (weight, mirror or cohort) after RolledBack;
- no path promotes the candidate without a PASS on every gating metric at the last step.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.rollout.journal import LOOK
from tests.unit.rollout.fakes import experiment, load, manager, until

STRATEGIES = {
    "canary": {},
    "bluegreen": {"strategy": "bluegreen", "steps": None,
                  "bluegreen": {"mirrorDuration": "20ms", "rollbackWindow": "20ms"}},
    "abtest": {"strategy": "abtest", "steps": None,
               "abtest": {"weight": 30, "minSamples": 3000, "promoteOnWin": True}},
}

looks = st.lists(st.tuples(st.sampled_from([0.0, 0.01, 0.02, 0.05, 0.3]),
                           st.sampled_from([None, None, None, "pause", "resume", "abort",
                                            "promote"])), min_size=3, max_size=25)


async def _run(strategy: str, script: list[tuple[float, str | None]], gated: bool) -> None:
    mgr, store, source = manager()
    # Capacity ramps step every 20 ms here (10 s by default), so a rollback or a
    # promotion that ramps finishes within the wait for the next look.
    spec: dict[str, Any] = {**STRATEGIES[strategy], "pauseBeforePromotion": gated,
                            "stallBudget": "1h", "rollback": {"interval": "20ms"},
                            "promotion": {"interval": "20ms"}}
    load(store, mgr, experiment(**spec))
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(mgr.run(stop))
    try:
        for rate, command in script:
            source.error_rate["v2"] = rate
            before = source.reads
            await until(lambda b=before: source.reads > b or mgr.view("canary")["phase"] in (  # type: ignore[index]
                "Succeeded", "RolledBack", "Failed"), 10)
            if command is not None:
                # Bounded: a command that is never answered is a defect to report, not
                # a test to hang on.
                await asyncio.wait_for(mgr.command("canary", command, "prop"), 10)
            if mgr.view("canary")["phase"] in ("Succeeded", "RolledBack"):  # type: ignore[index]
                break
        view = mgr.view("canary")
        assert view is not None
        svc = store.state.service("chat")
        weights = {v.name: v.weight for v in svc.versions}
        if view["phase"] in ("RollingBack", "RolledBack"):
            await until(lambda: mgr.view("canary")["phase"] == "RolledBack", 10)  # type: ignore[index]
            svc = store.state.service("chat")
            weights = {v.name: v.weight for v in svc.versions}
            assert weights["v2"] == 0
            assert "v2" not in {m.version for m in svc.traffic.mirrors}
            assert "v2" not in {c.version for c in svc.traffic.cohorts}
        if view["outcome"] == "candidate":
            decisions = mgr.decisions("canary")
            promoted = next(d for d in decisions if d["to"] == "Promoting")
            judged = [look for look in mgr.journal.events(LOOK, "canary") if look["counted"]
                      and look["t"] <= promoted["t"] + 1e-6]
            last_step = len(mgr.runners["canary"].analysis.steps) - 1
            assert judged, decisions
            at = judged[-1] if not gated else next(
                look for look in reversed(judged) if look["decision"] == "promote")
            assert at["step"] == last_step
            gating = [m for m in at["judgment"]["metrics"] if m["gating"]]
            assert gating and all(m["verdict"] == "PASS" for m in gating), at
    finally:
        stop.set()
        await task


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(STRATEGIES)), looks, st.booleans())
def test_runs_never_keep_candidate_traffic_after_rollback_nor_promote_without_pass(
        strategy: str, script: list[tuple[float, str | None]], gated: bool) -> None:
    asyncio.run(_run(strategy, script, gated))

"""ETA to a decision for every gating metric of a run (shown in status, API, /metrics).

For each gating metric: the evidence so far and how long until it can pass or
fail at the traffic of the latest look (``analysis.eta``); for the run, when
the step can advance (every gating metric passed, soak and minimum samples
met) and when a rollback would come at the current effects. A metric that
cannot decide within the stall budget at this traffic says so early.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from analysis.eta import Eta, describe, eta
from analysis.judge import Judgment, Look
from analysis.rates import ErrorRateState

if TYPE_CHECKING:
    from controlplane.rollout.runner import Runner


def estimate(runner: Runner, t: float, look: Look, judgment: Judgment,
             window_s: float) -> dict[str, Any]:
    spec = runner.analysis
    step = spec.steps[min(runner.state.step, len(spec.steps) - 1)]
    started = runner.state.step_started or t
    soak_left = max(0.0, step.soak_s - (t - started))
    rate_c = (look.candidate.requests / window_s) if look.candidate and window_s > 0 else 0.0
    rate_b = (look.baseline.requests / window_s) if look.baseline and window_s > 0 else 0.0
    tracks = {tr.spec.name: tr for tr in runner.js.tracks}
    budget = runner.experiment.stall_budget_ms / 1000
    rows: list[Eta] = []
    for v in judgment.metrics:
        if not v.gating:
            continue
        track = tracks.get(v.name)
        metric = track.spec if track else None
        state = track.state if track and isinstance(track.state, ErrorRateState) else None
        rows.append(eta(
            v, metric.direction if metric else spec.metrics[0].direction, rate_c, rate_b,
            metric.min_samples if metric else 0, soak_left,
            metric.min_effect if metric else 0.0, window_s, state, spec.alpha))
    passes = [r.pass_in_s for r in rows]
    advance = None if not rows or any(p is None for p in passes) else max(
        [p for p in passes if p is not None] + [soak_left])
    fails = [r.fail_in_s for r in rows if r.fail_in_s is not None]
    out = []
    for r in rows:
        item = r.to_json()
        if r.decide_in_s is None or r.decide_in_s > budget:
            item["warning"] = (f"cannot decide within the stall budget ({budget:g}s) at this "
                               f"traffic; at best {describe(r.decide_in_s)}")
        out.append(item)
    return {"t": t, "metrics": out, "advanceInS": advance,
            "rollbackInS": min(fails) if fails else None,
            "summary": f"advance {describe(advance)}, rollback "
                       f"{describe(min(fails) if fails else None)} at the current effects"}

"""One look, from windows to a rollout event (pure): the judge, guards, A/B results.

The judge (``analysis.judge``) accumulates the statistics and proposes a
decision; the rollout machine owns phase and step. ``fold`` keeps the judge's
step and clock in line with the run's (a step's clock starts when every proxy
ACKed it, not at the look that advanced), and keeps it running while the run
waits at a gate or a pause, so harm is still caught there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from analysis.judge import Decision, JudgeState, Judgment, Look, Phase, judge
from analysis.samples import Window
from analysis.spec import Direction, MetricKind
from analysis.verdicts import MetricVerdict, Verdict, point_value
from controlplane.config.durations import format_time
from controlplane.experiment import Experiment, Guard
from controlplane.rollout.machine import Event


def fold(js: JudgeState, look: Look, step: int, step_started: float) -> tuple[JudgeState,
                                                                                 Judgment]:
    """Judge one look at the run's step; the judge's own step moves are undone."""
    at = replace(js, step=step, step_started=step_started, phase=Phase.RUNNING,
                 terminal_reason="")
    new, judgment = judge(at, look)
    return replace(new, step=step, step_started=step_started, phase=Phase.RUNNING,
                   terminal_reason=""), judgment


@dataclass(frozen=True)
class Proposal:
    event: Event
    reason: str
    starving: bool  # holding for lack of data (counts against the stall budget)


def propose(judgment: Judgment, look: Look, check_srm: bool) -> Proposal:
    """The rollout event the judge's decision stands for."""
    d = judgment.decision
    if d is Decision.ROLLBACK:
        return Proposal(Event.ROLLBACK, judgment.reason, False)
    if d is Decision.ADVANCE:
        return Proposal(Event.ADVANCE, judgment.reason, False)
    if d is Decision.PROMOTE:
        return Proposal(Event.PROMOTE, judgment.reason, False)
    gating = [v for v in judgment.metrics if v.gating]
    # A gating quantile whose buckets can never show its margin is as stuck as one
    # without data: it counts against the stall budget, so onStall decides (not a
    # silent hold forever).
    stuck = any(v.verdict is Verdict.INCONCLUSIVE and v.details.get("coarse_buckets")
                for v in gating)
    starving = (look.excluded is not None
                or any(v.verdict is Verdict.NODATA for v in gating)
                or (check_srm and judgment.srm.mismatch) or stuck)
    return Proposal(Event.HOLD if starving else Event.WAIT, judgment.reason, starving)


# --- guards -----------------------------------------------------------------------------


def window_value(experiment: Experiment, metric_name: str, w: Window) -> tuple[float, int] | None:
    """A metric's value in one window of one version, with its n; None when unknown.

    Error and slow rates (a share of requests), the interpolated latency
    quantile (seconds), the mean, the ratio (``analysis.verdicts.point_value``).
    """
    spec = next((m for m in experiment.analysis.metrics if m.name == metric_name), None)
    return None if spec is None else point_value(spec, w)


def tripped(experiment: Experiment, candidate: Window | None) -> str | None:
    """The first guard the candidate's window crosses, as a reason; None when none does."""
    if candidate is None:
        return None
    for guard in experiment.guards:
        found = window_value(experiment, guard.metric, candidate)
        if found is None:
            continue
        value, n = found
        if n < guard.min_requests:
            continue
        if _beyond(experiment, guard, value):
            return (f"guard {guard.metric} > {_show(experiment, guard, guard.above)}: the "
                    f"candidate's last window had {_show(experiment, guard, value)} "
                    f"(n={n})")
    return None


def _metric_kind(experiment: Experiment, name: str) -> tuple[MetricKind, Direction] | None:
    spec = next((m for m in experiment.analysis.metrics if m.name == name), None)
    return (spec.kind, spec.direction) if spec else None


def _beyond(experiment: Experiment, guard: Guard, value: float) -> bool:
    found = _metric_kind(experiment, guard.metric)
    if found is not None and found[1] is Direction.LOWER_IS_WORSE:
        return value < guard.above
    return value > guard.above


def _show(experiment: Experiment, guard: Guard, value: float) -> str:
    found = _metric_kind(experiment, guard.metric)
    if found is not None and found[0] is MetricKind.LATENCY:
        return format_time(value)
    if found is not None and found[0] in (MetricKind.ERROR_RATE, MetricKind.SLOW_RATE):
        return f"{value:.1%}"
    return f"{value:.4g}"


# --- A/B tests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricEffect:
    name: str
    estimate: float  # candidate / baseline
    interval: tuple[float, float]
    better: str | None  # "candidate", "baseline" or None (not shown either way)

    def to_json(self) -> dict[str, object]:
        lo, hi = self.interval
        return {"name": self.name, "estimate": _finite(self.estimate),
                "interval": [_finite(lo), _finite(hi)], "better": self.better}


@dataclass(frozen=True)
class AbResult:
    winner: str | None  # "candidate", "baseline" or None
    effects: tuple[MetricEffect, ...]
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"winner": self.winner, "reason": self.reason,
                "effects": [e.to_json() for e in self.effects]}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def effect(v: MetricVerdict, direction: Direction) -> MetricEffect:
    """Which arm the (anytime-valid) interval shows to be better, if any."""
    lo, hi = v.interval
    better = None
    if direction is Direction.HIGHER_IS_WORSE:
        better = "candidate" if hi < 1 else "baseline" if lo > 1 else None
    else:
        better = "candidate" if lo > 1 else "baseline" if hi < 1 else None
    return MetricEffect(v.name, v.estimate, (lo, hi), better)


def ab_result(experiment: Experiment, verdicts: Sequence[MetricVerdict]) -> AbResult:
    """Superiority on the primary metrics (every gating metric when none is marked)."""
    specs = {m.name: m for m in experiment.analysis.metrics}
    primary = [m.name for m in experiment.analysis.metrics if m.primary] or [
        m.name for m in experiment.analysis.gating_metrics]
    effects = tuple(effect(v, specs[v.name].direction) for v in verdicts if v.name in specs)
    decisive = [e for e in effects if e.name in primary]
    if decisive and all(e.better == "candidate" for e in decisive):
        return AbResult("candidate", effects,
                        f"candidate better on {', '.join(e.name for e in decisive)}")
    losing = [e for e in decisive if e.better == "baseline"]
    if losing:
        return AbResult("baseline", effects,
                        f"baseline better on {', '.join(e.name for e in losing)}")
    return AbResult(None, effects,
                    "no arm shown better on " + ", ".join(primary) if primary else "no metric")


def ab_done(experiment: Experiment, n: Mapping[str, float], elapsed_s: float) -> str | None:
    """Why an A/B test ends now (enough samples per arm, or out of time), or None."""
    ab = experiment.abtest
    if ab is None:
        return None
    need = ab.min_samples or max((m.min_samples for m in experiment.analysis.metrics),
                                 default=0)
    if need and all(n.get(v, 0.0) >= need for v in ("candidate", "baseline")):
        return f"{need} requests per arm reached"
    if elapsed_s * 1000 >= ab.max_duration_ms:
        return f"maxDuration {ab.max_duration_ms / 1000:g}s reached"
    return None

"""The soak's verdict: invariants judged over everything recorded, and the figures.

Invariants (each broken one is a line in ``Report.violations``):

1. every failed client request was in flight on a crashed pod (or, timing out,
   on a hung one): nothing else fails;
2. no proxy ever runs a route to a cluster it does not have warm;
3. no proxy ever sees a reset split: within a run, the candidate's share on
   Envoy never goes down unless a rollback (or abort) was decided before,
   and never jumps above the last step's weight unless a promotion was;
4. the experiment's phase and step never go backwards, and its run never
   changes, unless by a rollback decision;
5. after every fault the whole fleet is SYNCED again (within the cap);
6. every fault was injected and repaired as planned;
7. Sluice logged no unhandled exception (a crashed experiment task, say).
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.soak.faults import KINDS, Fault
from tests.soak.watch import EnvoySample, ExperimentLog, ExperimentView, Request

RANK = {"Pending": 0, "Progressing": 1, "Holding": 1, "Paused": 1, "Promoting": 2,
        "RollingBack": 2, "Succeeded": 3, "RolledBack": 3, "Failed": 3}
BACKWARD_EVENTS = {"rollback", "abort", "fail"}
CRASH_SLACK_S = 1.0  # the crash happens while the control call is answered


@dataclass(frozen=True)
class Epoch:
    """One experiment run the soak started: from ``start`` (wall clock) on."""

    start: float
    name: str
    baseline: str
    candidate: str
    top_weight: int  # its last step's weight


@dataclass
class Report:
    minutes: float
    violations: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)  # faults by kind

    def text(self) -> str:
        verdict = ("all invariants held" if not self.violations
                   else f"{len(self.violations)} INVARIANT VIOLATION(S)")
        out = [*self.lines, "", f"verdict: {verdict}"]
        out += [f"  - {v}" for v in self.violations[:50]]
        if len(self.violations) > 50:
            out.append(f"  ... and {len(self.violations) - 50} more")
        return "\n".join(out)


def _event_times(log: ExperimentLog, name: str, events: set[str]) -> list[float]:
    return sorted(float(d["t"]) for (n, _), ds in log.decisions.items() if n == name
                  for d in ds if d.get("event") in events and isinstance(d.get("t"), int | float))


def attribute(requests: Sequence[Request], faults: Sequence[Fault]) -> dict[str, list[Request]]:
    crashes = [f.injected for f in faults if f.kind == "pod_crash" and f.error is None]
    hangs = [f.window for f in faults if f.kind == "pod_hang" and f.window is not None]
    causes: dict[str, list[Request]] = {"crashed pod (in flight)": [], "hung pod (in flight)": [],
                                        "unattributed": []}
    for r in requests:
        if r.status == 200:
            continue
        timed_out = r.status == 504 or (r.error or "").startswith(("TimeoutError",
                                                                    "ServerTimeoutError"))
        if any(r.sent <= at + CRASH_SLACK_S and r.done >= at for at in crashes):
            causes["crashed pod (in flight)"].append(r)
        elif timed_out and any(r.sent <= end and r.done >= start for start, end in hangs):
            causes["hung pod (in flight)"].append(r)
        else:
            causes["unattributed"].append(r)
    return causes


def _epoch_at(epochs: Sequence[Epoch], t: float) -> Epoch | None:
    found = [e for e in epochs if e.start <= t]
    return found[-1] if found else None


def check_envoys(samples: Sequence[EnvoySample], epochs: Sequence[Epoch],
                 log: ExperimentLog) -> list[str]:
    problems: list[str] = []
    for node in sorted({s.envoy for s in samples}):
        floor, key, seen_route = 0.0, None, False
        for s in sorted((s for s in samples if s.envoy == node), key=lambda s: s.t):
            if s.unwarmed:
                problems.append(f"{node} at {s.t:.1f}: a route names unwarmed cluster(s) "
                                f"{', '.join(s.unwarmed)}")
            if s.weights is None:
                if seen_route:
                    problems.append(f"{node} at {s.t:.1f}: chat's route disappeared")
                continue
            seen_route = True
            epoch = _epoch_at(epochs, s.t)
            total = sum(s.weights.values())
            if epoch is None or total <= 0:
                continue
            share = 100.0 * s.weights.get(f"chat/{epoch.candidate}", 0) / total
            resets = [t for t in _event_times(log, epoch.name, BACKWARD_EVENTS) if t <= s.t]
            if (epoch.name, resets[-1] if resets else None) != key:
                key, floor = (epoch.name, resets[-1] if resets else None), 0.0
            if share < floor - 0.5:
                problems.append(f"{node} at {s.t:.1f}: {epoch.name}'s candidate "
                                f"{epoch.candidate} went from {floor:.0f}% to {share:.0f}% "
                                "with no rollback decided (a reset split)")
                floor = share  # one report per drop
            floor = max(floor, share)
            promoted = any(t <= s.t for t in _event_times(log, epoch.name, {"promote"}))
            if share > epoch.top_weight + 0.5 and not promoted and s.t > epoch.start:
                problems.append(f"{node} at {s.t:.1f}: {epoch.name}'s candidate at {share:.0f}% "
                                f"above its last step ({epoch.top_weight}%) before any promotion")
    return problems


def check_experiments(log: ExperimentLog, epochs: Sequence[Epoch]) -> list[str]:
    problems: list[str] = []
    for epoch in epochs:
        views: list[ExperimentView] = sorted((v for v in log.views if v.name == epoch.name),
                                             key=lambda v: v.t)
        backs = _event_times(log, epoch.name, BACKWARD_EVENTS)
        for prev, cur in itertools.pairwise(views):
            where = f"{epoch.name} at {cur.t:.1f}"
            if cur.run != prev.run:
                problems.append(f"{where}: run changed {prev.run} -> {cur.run}")
            excused = any(t <= cur.t for t in backs)
            if cur.step < prev.step and not excused:
                problems.append(f"{where}: step went back {prev.step} -> {cur.step}")
            if RANK.get(cur.phase, 0) < RANK.get(prev.phase, 0):
                problems.append(f"{where}: phase went back {prev.phase} -> {cur.phase}")
    return problems


def tracebacks(log_text: str) -> list[str]:
    """One line per traceback in a log: the line that announced it and the exception."""
    lines = log_text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            before = lines[i - 1] if i > 0 else ""
            end = next((x for x in lines[i + 1:] if x and not x.startswith(" ")), "?")
            found.append(f"{before.strip()[:160]} / {end.strip()[:200]}")
    return found


def _seconds(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"p50 {statistics.median(values):5.2f}s  max {max(values):5.2f}s"


def judge(minutes: float, requests: Sequence[Request], faults: Sequence[Fault],
          samples: Sequence[EnvoySample], log: ExperimentLog, epochs: Sequence[Epoch],
          sync_cap: float, sluice_log: str, notes: Sequence[str] = ()) -> Report:
    report = Report(minutes)
    lines = report.lines
    lines.append(f"soak: {minutes:g} minutes of faults, {len(faults)} injected")
    lines += [f"  {n}" for n in notes]
    lines.append("")
    lines.append("faults                 count   time to SYNCED after repair")
    report.injected.update(f.kind for f in faults if f.error is None)
    for kind in KINDS:
        mine = [f for f in faults if f.kind == kind]
        synced = [f.synced_after for f in mine if f.synced_after is not None]
        lines.append(f"  {kind:<20} {len(mine):>5}   {_seconds(synced)}")
        if not mine:
            report.violations.append(f"fault {kind} was never injected (run longer)")
    for f in faults:
        if f.error is not None:
            report.violations.append(f"{f.kind} ({f.detail}) failed: {f.error}")
        elif f.synced_after is None:
            report.violations.append(f"after {f.kind} ({f.detail}) the fleet was not SYNCED "
                                     f"within {sync_cap:.0f}s")
    outages = [f.repaired - f.injected for f in faults]
    lines.append(f"  outage per fault (injection to repair): {_seconds(outages)}")
    lines.append("")
    causes = attribute(requests, faults)
    ok = sum(1 for r in requests if r.status == 200)
    versions = Counter(r.version for r in requests if r.status == 200)
    lines.append(f"client requests: {len(requests)}, ok {ok}, failed {len(requests) - ok}  "
                 f"(served by {dict(sorted(versions.items(), key=str))})")
    for cause, failed in causes.items():
        lines.append(f"  failed, {cause:<24} {len(failed)}")
    for r in causes["unattributed"][:20]:
        report.violations.append(f"request at {r.sent:.1f} failed outside any pod fault: "
                                 f"status {r.status} {r.error or ''}".rstrip())
    if len(causes["unattributed"]) > 20:
        report.violations.append(f"... {len(causes['unattributed']) - 20} more failed requests")
    lines.append("")
    by_envoy = Counter(s.envoy for s in samples)
    with_route = Counter(s.envoy for s in samples if s.weights is not None)
    lines.append(f"envoy config samples: {dict(sorted(by_envoy.items()))}, with chat's split "
                 f"{dict(sorted(with_route.items()))}")
    for envoy in sorted(by_envoy):
        if not with_route[envoy]:
            report.violations.append(f"{envoy}: no sample showed chat's route (watcher broken?)")
    report.violations += check_envoys(samples, epochs, log)
    report.violations += check_experiments(log, epochs)
    report.violations += [f"Sluice logged an unhandled exception: {t}"
                          for t in tracebacks(sluice_log)]
    lines.append("experiments:")
    for epoch in epochs:
        last: dict[str, Any] = log.last.get(epoch.name, {})
        events = Counter(d.get("event") for (n, _), ds in log.decisions.items()
                         if n == epoch.name for d in ds)
        lines.append(f"  {epoch.name}: {epoch.candidate} against {epoch.baseline}, "
                     f"phase {last.get('phase', '?')}, step {last.get('step', '?')}, "
                     f"decisions {dict(sorted(events.items(), key=str))}")
    return report

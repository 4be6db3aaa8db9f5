"""What ``sluice demo`` shows while it runs: a live terminal view (rich), or plain lines.

Both read one :class:`Frame` per tick: the experiment's view (as the admin API
serves it), the requests clients saw per version, and the demo's settings.
The live view redraws in place; plain lines are printed when the experiment
took a new look or made a decision (stdout is not a terminal: CI, a pipe).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from controlplane.config.durations import parse_duration
from controlplane.demo_load import Counts
from controlplane.demo_scenario import BASELINE, CANDIDATE, Scenario, Timing
from controlplane.report import evidence, values

__all__ = ["Frame", "PlainLog", "describe_outcome", "render"]

VERDICT_STYLE = {"PASS": "bold green", "FAIL": "bold red", "INCONCLUSIVE": "yellow",
                 "NODATA": "dim"}
PHASE_STYLE = {"Succeeded": "bold green", "RolledBack": "bold red", "RollingBack": "bold red",
               "Failed": "bold red", "Promoting": "bold green", "Holding": "yellow",
               "Paused": "yellow"}


@dataclass
class Frame:
    scenario: Scenario
    timing: Timing
    started: float  # wall clock
    gateway: str
    status_page: str
    pods: dict[str, list[str]]  # version -> ["h100 127.0.0.1:PORT (w2)", ...]
    load: dict[str, Counts] = field(default_factory=dict)
    experiment: dict[str, Any] | None = None
    now: float = field(default_factory=time.time)


def _num(x: object, digits: int = 3) -> str:
    # NaN: a ratio of two zero rates (no errors on either side yet) is not a number.
    if isinstance(x, bool) or not isinstance(x, int | float) or x != x:
        return "-"
    if abs(x) >= 1e4:
        return f"{x:.2e}"
    return f"{x:.{digits}g}"


def _interval(m: dict[str, Any]) -> str:
    lo, hi = m.get("interval") or (None, None)
    return f"[{_num(lo)}, {_num(hi)}]"


def step_progress(e: dict[str, Any], timing: Timing, now: float) -> list[tuple[str, float, str]]:
    """Per step: (label, fraction done, style)."""
    steps = list(e.get("steps") or [])
    phase = str(e.get("phase"))
    current = int(e.get("step") or 0)
    soak_s = parse_duration(timing.soak) / 1000
    started = e.get("stepStarted")
    out = []
    for i, weight in enumerate(steps):
        label = f"step {i + 1}/{len(steps)}  {CANDIDATE} {weight:g}%"
        if phase == "Succeeded" or i < current or (phase == "Promoting" and i <= current):
            out.append((label, 1.0, "green"))
        elif i > current:
            out.append((label, 0.0, "dim"))
        elif phase in ("RolledBack", "RollingBack", "Failed"):
            out.append((label + "  stopped", 1.0, "red"))
        else:
            soak = (now - float(started)) / soak_s if started and soak_s else 0.0
            n = min((float((m.get("n") or {}).get("candidate") or 0)
                     for m in ((e.get("judgment") or {}).get("metrics") or [])), default=0.0)
            samples = n / timing.min_samples if timing.min_samples else 1.0
            out.append((label, max(0.0, min(1.0, soak, samples)), "cyan"))
    return out


def describe_outcome(e: dict[str, Any]) -> str:
    """One paragraph: promoted, or rolled back with the metric and the evidence."""
    phase = e.get("phase")
    if phase == "Succeeded":
        text = f"PROMOTED: {CANDIDATE} now takes 100 % of the traffic."
        return text + (f" ({e.get('reason')})" if e.get("reason") else "")
    failed = [m for m in ((e.get("judgment") or {}).get("metrics") or [])
              if m.get("verdict") == "FAIL"]
    if phase == "RolledBack":
        text = f"ROLLED BACK: {BASELINE} has 100 % of the traffic again."
        for m in failed:
            ratio = f"ratio {_num(m.get('estimate'))}, " if m.get("estimate") is not None else ""
            text += (f"\n  metric {m['name']}: {CANDIDATE} / {BASELINE} {values(m)}, "
                     f"{ratio}interval {_interval(m)}, {evidence(m)}")
        return text + f"\n  reason: {e.get('reason')}"
    return f"{phase}: {e.get('reason')}"


def _load_table(frame: Frame, e: dict[str, Any] | None) -> Table:
    weights = (e or {}).get("weights") or {BASELINE: 100, CANDIDATE: 0}
    t = Table(expand=True, box=None, pad_edge=False)
    for col, just in (("version", "left"), ("pods", "left"), ("weight", "right"),
                      ("", "left"), ("requests", "right"), ("errors", "right"),
                      ("mean latency", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for version in (BASELINE, CANDIDATE):
        c = frame.load.get(version, Counts())
        w = float(weights.get(version, 0))
        rate = f"{c.errors} ({100 * c.errors / c.requests:.1f} %)" if c.requests else "0"
        mean = c.mean_latency_ms
        t.add_row(version, ", ".join(frame.pods.get(version, [])), f"{w:g}%",
                  ProgressBar(total=100, completed=w, width=20), str(c.requests), rate,
                  f"{mean:.0f} ms" if mean is not None else "-")
    return t


def _metrics_table(e: dict[str, Any]) -> Table:
    t = Table(expand=True, box=None, pad_edge=False)
    for col in ("metric", "verdict", f"{CANDIDATE} / {BASELINE}", "ratio", "interval",
                "evidence of harm", "n", "margins"):
        t.add_column(col)
    for m in (e.get("judgment") or {}).get("metrics") or []:
        n = m.get("n") or {}
        t.add_row(m["name"], Text(m["verdict"], style=VERDICT_STYLE.get(m["verdict"], "")),
                  values(m), _num(m.get("estimate")), _interval(m), evidence(m),
                  f"{_num(n.get('candidate'), 6)}/{_num(n.get('baseline'), 6)}",
                  f"harm >{1 + float(m.get('harmMargin') or 0):.2f}, "
                  f"ok <{1 + float(m.get('nonInferiorityMargin') or 0):.2f}")
    return t


def render(frame: Frame) -> RenderableType:
    e = frame.experiment
    head = Text.assemble(("Sluice demo", "bold"), f"  scenario {frame.scenario.name}: ",
                         (frame.scenario.summary, "italic"))
    links = Text(f"gateway {frame.gateway}   status page {frame.status_page}   "
                 f"elapsed {frame.now - frame.started:.0f}s", style="dim")
    parts: list[RenderableType] = [head, links, Text(""), _load_table(frame, e)]
    if e is None:
        parts += [Text(""), Text("warming up: baseline traffic before the canary starts ...",
                                 style="yellow")]
        return Panel(Group(*parts), title="sluice demo", border_style="blue")
    steps = Table.grid(padding=(0, 2))
    for label, done, style in step_progress(e, frame.timing, frame.now):
        steps.add_row(Text(label, style=style),
                      ProgressBar(total=1.0, completed=done, width=30,
                                  complete_style=style, finished_style=style))
    phase = str(e.get("phase"))
    decision = Text.assemble(("phase ", "dim"), (phase, PHASE_STYLE.get(phase, "bold cyan")),
                             ("   decision: ", "dim"), str(e.get("reason") or ""))
    parts += [Text(""), Text(f"experiment {e['name']}: canary of {CANDIDATE} against "
                             f"{BASELINE}", style="bold"), steps, Text(""),
              _metrics_table(e), Text(""), decision]
    decisions = [d for d in e.get("decisions") or [] if d.get("from") != d.get("to")][-4:]
    for d in decisions:
        parts.append(Text(f"  {d['t'] - frame.started:5.0f}s  {d['from']} -> {d['to']}: "
                          f"{d['reason']}", style="dim", no_wrap=True, overflow="ellipsis"))
    if e.get("waitingFor"):
        parts.append(Text(f"waiting for: {e['waitingFor']}", style="yellow"))
    return Panel(Group(*parts), title="sluice demo", border_style="blue")


@dataclass
class PlainLog:
    """Plain lines for a log: one per look or decision, never a redraw."""

    out: Callable[[str], None] = print
    _looks: int = -1
    _decisions: int = 0

    def __call__(self, frame: Frame) -> None:
        e = frame.experiment
        if e is None:
            return
        t = frame.now - frame.started
        for d in (e.get("decisions") or [])[self._decisions:]:
            self.out(f"[{d['t'] - frame.started:6.1f}s] decision: {d['from']} -> {d['to']} "
                     f"(step {d['step'] + 1}): {d['reason']}")
        self._decisions = len(e.get("decisions") or [])
        looks = int(e.get("looks") or 0)
        if looks == self._looks:
            return
        self._looks = looks
        w = e.get("weights") or {}
        traffic = "  ".join(
            f"{v} {float(w.get(v, 0)):g}% {c.requests} req {c.errors} err "
            f"{c.mean_latency_ms or 0:.0f} ms"
            for v, c in ((v, frame.load.get(v, Counts())) for v in (BASELINE, CANDIDATE)))
        metrics = "  ".join(
            f"{m['name']} {m['verdict']} {values(m)} ratio {_num(m.get('estimate'))} "
            f"{_interval(m)} {evidence(m)}"
            for m in (e.get("judgment") or {}).get("metrics") or [])
        steps = e.get("steps") or []
        self.out(f"[{t:6.1f}s] {e.get('phase')} step {int(e.get('step') or 0) + 1}/"
                 f"{len(steps)} | {traffic} | {metrics or 'no judgment yet'} | "
                 f"{e.get('reason') or ''}")

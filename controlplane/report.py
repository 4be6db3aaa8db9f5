"""``sluice report NAME --out report.html``: one self-contained HTML file about a run.

Reads the run from the admin API (``GET /api/v1/experiments/NAME`` and
``.../looks``) or, offline, from a ``--state`` file. The page needs no network:
styles are inline and the plots are inline SVG (drawn by ``report_svg``; a
plotting library would add tens of megabytes for four line charts). It shows
the traffic weights over time, each metric's estimate with its confidence
sequence and margins, the e-values against the rejection threshold, and every
decision with its reason, with a few lines on how to read each part.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from controlplane.report_svg import Band, HLine, Series, VLine, line_chart

__all__ = ["build_report", "evidence", "from_state", "main", "values", "weight_of"]

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
EVENT_COLORS = {"advance": "#2ca02c", "promote": "#2ca02c", "rollback": "#d62728",
                "abort": "#d62728", "done": "#555", "start": "#1f77b4"}
CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,sans-serif;margin:0 auto;max-width:900px;
padding:16px;color:#222}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600}
.ok{background:#2a7d2a}.bad{background:#c0392b}.wait{background:#b7950b}
table{border-collapse:collapse;width:100%;font-size:.9em}td,th{border-bottom:1px solid #eee;
padding:4px 6px;text-align:left;vertical-align:top}th{background:#f6f6f6}
figure{margin:1em 0}figcaption{font-weight:600}svg.chart{width:100%;height:auto}
.legend{font-size:.85em}.key{margin-right:1em}.key i{display:inline-block;width:12px;height:12px;
margin-right:4px;vertical-align:middle}.note{color:#555;font-size:.9em}
.PASS{color:#2a7d2a;font-weight:600}.FAIL{color:#c0392b;font-weight:600}
.INCONCLUSIVE{color:#b7950b}.NODATA{color:#888}
"""


def weight_of(phase: str, step: int, steps: Sequence[float]) -> float | None:
    """The candidate's traffic percent after a decision that led to ``phase`` (None while
    promoting or rolling back: those ramp, and the looks say by how much)."""
    if phase in ("Promoting", "RollingBack"):
        return None
    if phase in ("RolledBack", "Failed", "Pending"):
        return 0.0
    if phase == "Succeeded":
        return 100.0
    return float(steps[min(step, len(steps) - 1)]) if steps else None


def _num(x: object) -> str:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return "-"
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.2e}"


def evidence(m: dict[str, Any]) -> str:
    """The evidence of harm against the rollback threshold: ``e=3.2 (rollback at 40)``, or
    ``p=0.2 (rollback at 0.025)`` for tests that give an anytime-valid p-value."""
    alpha = m.get("alpha")
    if not isinstance(alpha, int | float) or not alpha:
        return f"e={_num(m.get('evalue'))}"
    if isinstance(m.get("evalue"), int | float):
        return f"e={_num(m.get('evalue'))} (rollback at {_num(1 / alpha)})"
    return f"p={_num(m.get('pvalue'))} (rollback at {_num(alpha)})"


def values(m: dict[str, Any]) -> str:
    """What each version measured: error rates, or the latency quantile."""
    d = m.get("details") or {}
    for c, b, scale, fmt in (("rate_candidate", "rate_baseline", 100, "{:.2f}%"),
                             ("q_candidate_s", "q_baseline_s", 1000, "{:.0f} ms")):
        cand, base = _f(d.get(c)), _f(d.get(b))
        if c in d or b in d:
            return " / ".join("-" if v is None else fmt.format(scale * v) for v in (cand, base))
    return "-"


def _f(x: object) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _upper(m: dict[str, Any]) -> float | None:
    lo, hi = (m.get("interval") or [None, None])[:2]
    return _f(hi) if _f(hi) is not None else (math.inf if _f(lo) is not None else None)


def _weights_chart(view: dict[str, Any], looks: list[dict[str, Any]], t0: float, t1: float,
                   markers: list[VLine]) -> str:
    steps = list(view.get("steps") or [])
    candidate = view.get("candidate") or "candidate"
    baseline = view.get("baseline") or "baseline"
    # The split in force: set at each decision, and recorded with every look's windows.
    configured: list[tuple[float, float]] = [(0.0, 0.0)]
    for d in view.get("decisions") or []:
        w = weight_of(str(d.get("to")), int(d.get("step") or 0), steps)
        if w is not None:
            configured.append((float(d["t"]) - t0, w))
    observed: list[tuple[float, float | None]] = []
    for look in looks:
        t = float(look["t"]) - t0
        n = {w.get("version"): float(w.get("requests") or 0) for w in look.get("windows") or []}
        total = sum(n.values())
        if total > 0 and candidate in n:
            observed.append((t, 100 * n[candidate] / total))
        configured += [(t, float(w["weight"])) for w in look.get("windows") or []
                       if w.get("version") == candidate and _f(w.get("weight")) is not None]
    configured.sort(key=lambda p: p[0])
    points: list[tuple[float, float | None]] = [*configured, (t1 - t0, configured[-1][1])]
    series = [Series(f"{candidate} (configured)", points, COLORS[1], step=True, dots=False),
              Series(f"{baseline} (configured)", [(x, None if y is None else 100 - y)
                                                  for x, y in points], COLORS[0], step=True,
                     dots=False)]
    if observed:
        series.append(Series(f"{candidate} (observed share of requests, per look)", observed,
                             "#999", dash="1 3"))
    return line_chart("Traffic weights over time", "seconds since the experiment started",
                      "% of requests", series, vlines=markers, y_range=(0, 100),
                      x_range=(0, max(t1 - t0, 1.0)))


def _metric_charts(name: str, points: list[tuple[float, dict[str, Any]]], x1: float,
                   markers: list[VLine]) -> str:
    last = points[-1][1]
    harm, ni = _f(last.get("harmMargin")) or 0.0, _f(last.get("nonInferiorityMargin")) or 0.0
    est = [(x, _f(m.get("estimate"))) for x, m in points]
    lo = [(x, _f((m.get("interval") or [None, None])[0])) for x, m in points]
    # An upper bound the API shows as null is unbounded (no evidence yet that way).
    hi = [(x, _upper(m)) for x, m in points]
    finite = [y for _, y in est + lo + hi if y is not None and math.isfinite(y)]
    top = max(2.0, 1 + 2 * max(harm, ni), min(max(finite, default=2.0) * 1.1, 5.0))
    chart = line_chart(
        f"{name}: candidate / baseline, with its 95 % confidence sequence",
        "seconds since the experiment started", "ratio (1 = no difference)",
        [Series("estimate", est, COLORS[0])],
        bands=[Band("confidence sequence (valid at every look)", lo, hi, COLORS[0])],
        hlines=[HLine(1.0, "no difference", "#555", None, left=True),
                HLine(1 + ni, f"non-inferiority margin (+{100 * ni:g} %)", "#2a7d2a"),
                HLine(1 + harm, f"harm margin (+{100 * harm:g} %)", "#c0392b")],
        vlines=markers, y_range=(0.0, top), x_range=(0, x1))
    chart += _values_chart(name, points, x1, markers)
    evidence = [(x, e) for x, m in points if (e := _evidence(m)) is not None]
    alpha = _f(last.get("alpha")) or 0.05
    if not evidence:
        return chart
    kind = "e-value" if _f(last.get("evalue")) is not None else "1/p (anytime-valid p-value)"
    top_e = max(max(y for _, y in evidence) * 2, 4 / alpha)
    chart += line_chart(
        f"{name}: evidence of harm ({kind}) against the rollback threshold",
        "seconds since the experiment started", f"{kind}, log scale",
        [Series(kind, evidence, COLORS[1])],
        hlines=[HLine(1 / alpha, f"rollback threshold 1/α = {1 / alpha:g}", "#c0392b")],
        vlines=markers, y_range=(min(min(y for _, y in evidence), 0.1), top_e),
        x_range=(0, x1), log_y=True)
    return chart


def _evidence(m: dict[str, Any]) -> float | None:
    """The e-value, or 1/p for tests that report an anytime-valid p-value instead."""
    e, p = _f(m.get("evalue")), _f(m.get("pvalue"))
    if e is not None:
        return max(e, 1e-3)
    return min(1 / max(p, 1e-300), 1e300) if p is not None else None


def _values_chart(name: str, points: list[tuple[float, dict[str, Any]]], x1: float,
                  markers: list[VLine]) -> str:
    """Each version's own value (error rate, latency quantile), when the judge reports it."""
    d = points[-1][1].get("details") or {}
    if "rate_candidate" in d:
        keys, scale, unit = ("rate_baseline", "rate_candidate"), 100.0, "error rate, %"
    elif "q_candidate_s" in d:
        q = _f(d.get("quantile")) or 0.95
        keys, scale, unit = ("q_baseline_s", "q_candidate_s"), 1000.0, f"p{100 * q:g} latency, ms"
    else:
        return ""
    series = []
    for key, label, color in zip(keys, ("baseline", "candidate"), COLORS, strict=False):
        pts = [(x, None if (v := _f((m.get("details") or {}).get(key))) is None else v * scale)
               for x, m in points]
        series.append(Series(label, pts, color))
    top = max((y for s in series for _, y in s.points if y is not None), default=0.0)
    return line_chart(f"{name}: each version's {unit} (all looks so far)",
                      "seconds since the experiment started", unit, series, vlines=markers,
                      x_range=(0, x1), y_range=(0.0, top * 1.15 or 1.0))


def _outcome(view: dict[str, Any]) -> tuple[str, str]:
    phase = str(view.get("phase"))
    if phase == "Succeeded":
        return "Promoted", "ok"
    if phase in ("RolledBack", "RollingBack", "Failed"):
        return {"Failed": "Failed"}.get(phase, "Rolled back"), "bad"
    return phase, "wait"


def build_report(view: dict[str, Any], looks: list[dict[str, Any]],
                 generated: float | None = None) -> str:
    """The whole page; ``view`` as ``GET /api/v1/experiments/NAME`` answers (decisions in)."""
    decisions = list(view.get("decisions") or [])
    times = [float(x["t"]) for x in [*decisions, *looks] if _f(x.get("t")) is not None]
    t0 = _f(view.get("startedAt")) or (min(times) if times else 0.0)
    t1 = max([*times, _f(view.get("updatedAt")) or t0])
    markers = [VLine(float(d["t"]) - t0, f"{d['event']}: {d['reason']}",
                     EVENT_COLORS.get(str(d["event"]), "#999"))
               for d in decisions if d.get("event") not in ("wait", "hold", "applied")]
    per_metric: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for look in looks:
        for m in (look.get("judgment") or {}).get("metrics") or []:
            per_metric.setdefault(m["name"], []).append((float(look["t"]) - t0, m))
    label, cls = _outcome(view)
    name = escape(str(view.get("name")))
    baseline, candidate = view.get("baseline") or "baseline", view.get("candidate") or "candidate"
    h = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
         f'<meta name=viewport content="width=device-width,initial-scale=1">'
         f"<title>Sluice report: {name}</title><style>{CSS}</style></head><body>",
         f"<h1>Experiment {name}</h1>",
         f'<p><span class="badge {cls}" id="outcome">{escape(label)}</span> '
         f"{escape(str(view.get('strategy') or 'canary'))} of <b>{escape(candidate)}</b> "
         f"against <b>{escape(baseline)}</b> on service "
         f"<b>{escape(str(view.get('service') or '-'))}</b>, {t1 - t0:.0f} s, "
         f"{len(looks)} looks. Run <code>{escape(str(view.get('run')))}</code>.</p>",
         f'<p id="reason"><b>Why:</b> {escape(str(view.get("reason") or "-"))}</p>',
         '<p class="note">How Sluice decides: every interval it compares the candidate with '
         "the baseline on each metric. It rolls back as soon as the evidence of harm (the "
         "e-value) crosses its threshold, and advances a step only when the confidence "
         "sequence shows the candidate within the non-inferiority margin. Both stay valid "
         "however often they are looked at, so checking every interval does not inflate "
         "false alarms. Otherwise it holds and gathers more data.</p>",
         "<h2>Traffic</h2>", _weights_chart(view, looks, t0, t1, markers),
         '<p class="note">Solid lines: the split Sluice configured in Envoy at each decision. '
         "Dotted: the candidate's observed share of requests in each look (Sluice holds when "
         "the two disagree: a sample ratio mismatch). Vertical lines mark decisions.</p>",
         "<h2>Final evidence</h2>", _final_table(view)]
    for metric, points in per_metric.items():
        h += [f"<h2>Metric {escape(metric)}</h2>",
              _metric_charts(metric, points, max(t1 - t0, 1.0), markers),
              '<p class="note">First: the ratio of candidate to baseline with its confidence '
              "sequence (a band that holds at every look at once). Entirely below the green "
              "line: non-inferior (PASS). Second: what each version measured. Last: evidence "
              "of harm beyond the harm margin; at the red line or above, Sluice rolls back "
              "(FAIL). An empty ratio means it is not defined yet (no errors on the baseline: "
              "the error rates show the difference).</p>"]
    h += ["<h2>Decisions</h2>", _decision_table(decisions, t0),
          f'<p class="note">Written by sluice report at '
          f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(generated or time.time()))}."
          "</p></body></html>"]
    return "\n".join(h)


def _final_table(view: dict[str, Any]) -> str:
    rows = []
    for m in (view.get("judgment") or {}).get("metrics") or []:
        lo, hi = m.get("interval") or [None, None]
        n = m.get("n") or {}
        rows.append(f'<tr class="metric"><td>{escape(m["name"])}</td>'
                    f'<td class="{escape(m["verdict"])}">{escape(m["verdict"])}</td>'
                    f"<td>{escape(values(m))}</td><td>{_num(m.get('estimate'))}</td>"
                    f"<td>{_num(lo)} – {_num(hi)}</td><td>{escape(evidence(m))}</td>"
                    f"<td>{_num(n.get('candidate'))} / {_num(n.get('baseline'))}</td>"
                    f"<td>{escape(str(m.get('reason') or ''))}</td></tr>")
    if not rows:
        return "<p>No judgment was made.</p>"
    return ("<table><tr><th>metric</th><th>verdict</th><th>candidate / baseline</th>"
            "<th>ratio</th><th>interval</th><th>evidence of harm</th><th>n cand. / base.</th>"
            "<th>reason</th></tr>" + "".join(rows) + "</table>")


def _decision_table(decisions: list[dict[str, Any]], t0: float) -> str:
    rows = [f'<tr class="decision"><td>{float(d["t"]) - t0:.1f} s</td>'
            f"<td>{escape(str(d.get('event')))}</td><td>{escape(str(d.get('from')))} → "
            f"{escape(str(d.get('to')))}</td><td>{int(d.get('step') or 0) + 1}</td>"
            f"<td>{escape(str(d.get('reason')))}</td></tr>" for d in decisions]
    return ("<table><tr><th>time</th><th>event</th><th>phase</th><th>step</th><th>reason</th>"
            "</tr>" + "".join(rows) + "</table>")


def from_state(path: str, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The latest run of ``name`` in a ``--state`` file: (view with decisions, looks)."""
    from controlplane.rollout.journal import DECISION, LOOK, RUN, Journal
    from controlplane.state import StateStore

    if not Path(path).is_file():
        raise ValueError(f"{path}: no such state file")
    with StateStore.open(path) as store:
        journal = Journal(store)
        record = journal.get(RUN, name)
        if record is None:
            raise ValueError(f"{path}: no experiment named {name!r}")
        state = dict(record["state"])
        run = str(state["run"])
        looks = journal.events(LOOK, name, run)
        decisions = journal.events(DECISION, name, run)
    steps: dict[int, float] = {}
    judgment = None
    versions: list[str] = []
    for look in looks:
        j = look.get("judgment")
        if j:
            steps[int(look.get("step") or 0)] = float(j.get("weight") or 0)
            judgment = j
        if len(look.get("windows") or []) == 2 and not versions:
            versions = [str(w.get("version")) for w in look["windows"]]
    view = {**state, "name": name, "service": record.get("service"), "report": record.get(
        "report"), "steps": [steps[k] for k in sorted(steps)], "decisions": decisions,
        "judgment": judgment, "baseline": versions[0] if versions else None,
        "candidate": versions[1] if versions else None}
    return view, looks


def _fetch(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="sluice report", description="Write an experiment's run "
                                "as one self-contained HTML file with plots.")
    p.add_argument("name")
    p.add_argument("--out", default="report.html", metavar="FILE")
    p.add_argument("--admin-address", default="127.0.0.1:19000", metavar="HOST:PORT")
    p.add_argument("--state", metavar="PATH", help="read a state file instead of the admin API")
    args = p.parse_args(argv)
    try:
        if args.state:
            view, looks = from_state(args.state, args.name)
        else:
            base = args.admin_address
            base = base if base.startswith("http") else f"http://{base}"
            view = _fetch(f"{base}/api/v1/experiments/{args.name}")
            looks = _fetch(f"{base}/api/v1/experiments/{args.name}/looks")["looks"]
    except (ValueError, OSError, urllib.error.URLError, KeyError) as exc:
        print(f"sluice report: {exc}", file=sys.stderr)
        return 1
    Path(args.out).write_text(build_report(view, looks), encoding="utf-8")
    print(f"report: {Path(args.out).resolve()}")
    return 0

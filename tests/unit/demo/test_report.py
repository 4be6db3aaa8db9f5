"""The HTML report: self-contained, with plots and every decision, from the API or a state file."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from controlplane.report import build_report, from_state, main, weight_of
from controlplane.report_svg import nice_ticks
from controlplane.rollout.journal import DECISION, LOOK, RUN, Journal
from controlplane.state import StateStore

T0 = 1_700_000_000.0


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.captions: list[str] = []
        self.decision_rows = 0
        self.external: list[str] = []
        self.outcome = ""
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "tr" and a.get("class") == "decision":
            self.decision_rows += 1
        for key in ("src", "href"):
            if a.get(key):
                self.external.append(str(a[key]))
        if tag == "figcaption":
            self._in = "caption"
        if a.get("id") == "outcome":
            self._in = "outcome"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("figcaption", "span"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "caption":
            self.captions.append(data)
        elif self._in == "outcome":
            self.outcome += data


def metric(name: str, t: float, verdict: str, estimate: float, lo: float, hi: float | None,
           evalue: float | None) -> dict[str, Any]:
    return {"name": name, "verdict": verdict, "estimate": estimate, "interval": [lo, hi],
            "evalue": evalue, "pvalue": min(1.0, 1 / evalue) if evalue else 1.0,
            "alpha": 0.025, "harmMargin": 0.0, "nonInferiorityMargin": 0.5,
            "n": {"candidate": 10 * t, "baseline": 40 * t}, "reason": f"{name} at {t}",
            "details": {"rate_candidate": 0.05, "rate_baseline": 0.0} if name == "errors" else
            {"q_candidate_s": 1.0, "q_baseline_s": 0.9, "quantile": 0.95}}


def run(rolled_back: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    looks = []
    for i in range(1, 11):
        e = 2.0 ** i if rolled_back else 1.0
        looks.append({
            "run": "r1", "t": T0 + i, "step": 0, "counted": True, "decision": "wait",
            "reason": "soak", "windows": [{"version": "v1", "requests": 40, "errors": 0},
                                          {"version": "v2", "requests": 10, "errors": i}],
            "judgment": {"weight": 20, "metrics": [
                metric("errors", i, "FAIL" if rolled_back and i == 10 else "INCONCLUSIVE",
                       3.0 if rolled_back else 1.0, 0.5, None if i < 3 else 4.0, e),
                metric("latency-p95", i, "PASS", 1.0, 0.9, 1.1, None)]}})
    decisions = [
        {"run": "r1", "t": T0, "event": "start", "from": "Pending", "to": "Progressing",
         "step": 0, "reason": "started: canary of v2 against v1"},
        {"run": "r1", "t": T0 + 10, "event": "rollback" if rolled_back else "promote",
         "from": "Progressing", "to": "RollingBack" if rolled_back else "Promoting", "step": 0,
         "reason": "errors: harm" if rolled_back else "every gating metric non-inferior"},
        {"run": "r1", "t": T0 + 11, "event": "done",
         "from": "RollingBack" if rolled_back else "Promoting",
         "to": "RolledBack" if rolled_back else "Succeeded", "step": 0, "reason": "done"},
    ]
    view = {"name": "chat-canary", "service": "chat", "strategy": "canary", "baseline": "v1",
            "candidate": "v2", "run": "r1", "phase": decisions[-1]["to"], "step": 0,
            "steps": [20], "startedAt": T0, "updatedAt": T0 + 11, "reason": "done",
            "decisions": decisions, "judgment": looks[-1]["judgment"]}
    return view, looks


def test_a_rolled_back_run_has_its_plots_decisions_and_no_external_resource() -> None:
    view, looks = run(rolled_back=True)
    page = Page()
    page.feed(build_report(view, looks, generated=T0 + 20))
    assert page.outcome == "Rolled back"
    assert page.decision_rows == 3
    # weights, and per metric: the ratio, each version's value, the evidence of harm
    assert page.tags["svg"] == 7
    assert any("Traffic weights" in c for c in page.captions)
    assert any("errors: evidence of harm (e-value)" in c for c in page.captions)
    assert any("errors: each version's error rate" in c for c in page.captions)
    assert any("latency-p95: candidate / baseline" in c for c in page.captions)
    assert any("latency-p95: evidence of harm (1/p" in c for c in page.captions)
    assert page.tags.get("polygon", 0) >= 2  # the confidence-sequence bands
    assert page.external == []  # opens without a network
    assert page.tags.get("script", 0) == 0


def test_a_promoted_run_reads_promoted() -> None:
    view, looks = run(rolled_back=False)
    page = Page()
    page.feed(build_report(view, looks))
    assert page.outcome == "Promoted"
    assert page.decision_rows == 3


def test_weights_follow_the_phase() -> None:
    assert weight_of("Progressing", 1, [10, 25, 50]) == 25
    assert weight_of("RolledBack", 2, [10, 25, 50]) == 0
    assert weight_of("Succeeded", 0, [10]) == 100
    assert nice_ticks(0, 100) == [0, 20, 40, 60, 80, 100]


def test_the_report_reads_a_state_file_offline(tmp_path: Path) -> None:
    view, looks = run(rolled_back=True)
    path = tmp_path / "state.db"
    with StateStore.open(path) as store:
        journal = Journal(store)
        journal.put(RUN, "chat-canary", {"state": {k: view[k] for k in (
            "run", "phase", "step", "reason", "startedAt", "updatedAt")}, "service": "chat",
            "report": {}})
        for d in view["decisions"]:
            journal.append(DECISION, "chat-canary", d)
        for look in looks:
            journal.append(LOOK, "chat-canary", look)
    got, got_looks = from_state(str(path), "chat-canary")
    assert (got["baseline"], got["candidate"], got["steps"]) == ("v1", "v2", [20.0])
    assert len(got_looks) == 10 and len(got["decisions"]) == 3
    out = tmp_path / "report.html"
    assert main(["chat-canary", "--state", str(path), "--out", str(out)]) == 0
    page = Page()
    page.feed(out.read_text())
    assert page.outcome == "Rolled back" and page.decision_rows == 3
    assert main(["nope", "--state", str(path), "--out", str(out)]) == 1

"""The demo's pure parts: options, scenarios, the documents it writes, what it shows."""

from __future__ import annotations

import pytest
import yaml
from rich.console import Console

from controlplane.config import load_text
from controlplane.demo import Options, parse_args
from controlplane.demo_load import Counts
from controlplane.demo_scenario import (
    SCENARIOS,
    experiment_doc,
    pod_specs,
    service_doc,
    timing,
)
from controlplane.demo_view import Frame, PlainLog, describe_outcome, render


def test_options_default_to_a_healthy_canary_on_fixed_loopback_ports() -> None:
    assert parse_args([]) == Options()
    o = parse_args(["--scenario", "errors", "--fast", "--admin-address", "127.0.0.1:0",
                    "--gateway-port", "0", "--report", "r.html"])
    assert (o.scenario, o.fast, o.admin_address, o.gateway_port, o.report) == (
        "errors", True, "127.0.0.1:0", 0, "r.html")
    for bad in (["--admin-address", "0.0.0.0:18001"], ["--scenario", "nope"],
                ["--gateway-port", "70000"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_v1_and_v2_run_on_an_h100_and_an_a100_and_only_v2_carries_the_fault() -> None:
    specs = pod_specs(SCENARIOS["errors"], seed=1)
    assert [(s.version, s.gpu) for s in specs] == [("v1", "h100"), ("v1", "a100"),
                                                   ("v2", "h100"), ("v2", "a100")]
    assert [s.faults.error_rate for s in specs] == [0, 0, 0.05, 0.05]
    assert all(s.host == "127.0.0.1" for s in specs)
    assert {s.faults.extra_latency_ms for s in pod_specs(SCENARIOS["latency"])} == {0, 500}
    assert SCENARIOS["ttft"].stream and not SCENARIOS["latency"].stream


@pytest.mark.parametrize("fast", [True, False])
def test_the_documents_the_demo_writes_are_valid(fast: bool) -> None:
    docs = [service_doc({"v1": [18081, 18082], "v2": [18083, 18084]}, 10000),
            experiment_doc(timing(fast))]
    loaded = load_text(yaml.safe_dump_all(docs), "demo.yaml")
    assert loaded.state is not None and not loaded.errors, [str(e) for e in loaded.errors]
    [chat] = loaded.state.services
    assert [(v.name, v.weight, [e.weight for e in v.endpoints]) for v in chat.versions] == [
        ("v1", 100, [2, 1]), ("v2", 0, [2, 1])]
    assert chat.listener.address == "127.0.0.1"


def view(phase: str) -> dict[str, object]:
    failed = phase == "RolledBack"
    return {
        "name": "chat-canary", "phase": phase, "step": 0, "steps": [25, 50],
        "stepStarted": 100.0, "weights": {"v1": 100, "v2": 0} if failed else {"v1": 0, "v2": 100},
        "looks": 3, "reason": "errors: harm" if failed else "promoted",
        "decisions": [{"t": 101.0, "from": "Pending", "to": "Progressing", "step": 0,
                       "reason": "started"}],
        "judgment": {"metrics": [{
            "name": "errors", "verdict": "FAIL" if failed else "PASS", "estimate": None,
            "interval": [1.4, None], "evalue": 164.0, "pvalue": 0.006, "alpha": 0.025,
            "harmMargin": 0.0, "nonInferiorityMargin": 0.5, "n": {"candidate": 100,
                                                                "baseline": 400},
            "details": {"rate_candidate": 0.07, "rate_baseline": 0.0}}]},
    }


def frame(phase: str) -> Frame:
    return Frame(SCENARIOS["errors"], timing(True), 100.0, "http://127.0.0.1:10000",
                 "http://127.0.0.1:18001/", {"v1": ["h100 :1 w2"], "v2": ["h100 :3 w2"]},
                 {"v1": Counts(400, 0, 100.0), "v2": Counts(100, 7, 30.0)}, view(phase),
                 now=110.0)


def test_a_rollback_names_the_metric_and_its_evidence() -> None:
    text = describe_outcome(view("RolledBack"))
    assert text.startswith("ROLLED BACK: v1 has 100 % of the traffic again.")
    assert "metric errors: v2 / v1 7.00% / 0.00%" in text
    assert "e=164 (rollback at 40)" in text
    assert describe_outcome(view("Succeeded")).startswith("PROMOTED")


def test_the_live_view_shows_steps_weights_traffic_and_evidence() -> None:
    console = Console(record=True, width=160)
    console.print(render(frame("RolledBack")))
    text = console.export_text()
    for expected in ("step 1/2", "v2 25%", "stopped", "400", "7 (7.0 %)", "FAIL",
                     "e=164 (rollback at 40)", "RolledBack", "errors: harm"):
        assert expected in text, expected


def test_plain_lines_come_once_per_look_and_decision() -> None:
    lines: list[str] = []
    log = PlainLog(lines.append)
    log(frame("Progressing"))
    log(frame("Progressing"))  # nothing new
    assert len(lines) == 2
    assert lines[0].startswith("[   1.0s] decision: Pending -> Progressing (step 1): started")
    assert "v2 100% 100 req 7 err" in lines[1] and "errors PASS" in lines[1]


def test_a_ratio_of_two_zero_rates_prints_as_no_number() -> None:
    lines: list[str] = []
    f = frame("Progressing")
    f.experiment["judgment"]["metrics"][0].update(  # type: ignore[index]
        estimate=float("nan"), interval=[0.0, float("inf")])
    PlainLog(lines.append)(f)
    assert "nan" not in lines[1] and "ratio - [0, inf]" in lines[1]

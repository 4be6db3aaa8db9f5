"""``sluice demo --fast`` end to end, as CI runs it: the outcome, the report, a clean stop.

Each run is a child process with its own work directory, on free ports: real
Envoy, simulated pods, Sluice in the demo's process, bounded load.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.integration.harness import envoy_binary
from tests.unit.demo.test_report import Page

pytestmark = pytest.mark.skipif(envoy_binary() is None, reason="envoy binary not installed")

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 240


def demo_argv(tmp_path: Path, scenario: str) -> list[str]:
    return [sys.executable, "-m", "controlplane.cli", "demo", "--fast", "--plain",
            "--scenario", scenario, "--seed", "7", "--admin-address", "127.0.0.1:0",
            "--gateway-port", "0", "--workdir", str(tmp_path / "work"),
            "--report", str(tmp_path / "report.html")]


async def run_demo(tmp_path: Path, scenario: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *demo_argv(tmp_path, scenario), cwd=ROOT, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return int(proc.returncode or 0), out.decode(errors="replace")


def processes_under(workdir: Path) -> list[str]:
    """Command lines of live processes that mention ``workdir`` (Envoy's bootstrap path)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if str(workdir).encode() in cmdline:
            found.append(f"{pid}: {cmdline.decode(errors='replace')}")
    return found


def check_report(path: Path, outcome: str) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    assert page.outcome == outcome
    assert page.tags.get("svg", 0) >= 5  # weights; errors and latency: ratio, values, evidence
    assert any("Traffic weights" in c for c in page.captions)
    assert page.decision_rows >= 3  # start ... done
    assert page.external == [] and page.tags.get("script", 0) == 0
    return page


async def test_a_healthy_candidate_is_promoted(tmp_path: Path) -> None:
    code, out = await run_demo(tmp_path, "healthy")
    assert code == 0, out[-4000:]
    assert "outcome: PROMOTED: v2 now takes 100 % of the traffic." in out, out[-4000:]
    assert "decision: Progressing -> Promoting" in out
    assert f"report: {tmp_path / 'report.html'}" in out
    check_report(tmp_path / "report.html", "Promoted")
    assert processes_under(tmp_path / "work") == []


async def test_a_candidate_with_errors_is_rolled_back_with_the_evidence(tmp_path: Path) -> None:
    code, out = await run_demo(tmp_path, "errors")
    assert code == 0, out[-4000:]
    assert "outcome: ROLLED BACK: v1 has 100 % of the traffic again." in out, out[-4000:]
    evidence = out[out.index("outcome: ROLLED BACK"):]
    assert "metric errors:" in evidence and "e=" in evidence and "rollback at" in evidence
    assert "harm beyond" in evidence
    check_report(tmp_path / "report.html", "Rolled back")
    assert processes_under(tmp_path / "work") == []


async def test_sigint_stops_everything_the_demo_started(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    proc = await asyncio.create_subprocess_exec(
        *demo_argv(tmp_path, "healthy"), cwd=ROOT, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(90):
            while not any("experiment chat-canary written" in line for line in lines):
                line = await proc.stdout.readline()
                assert line, "demo exited early:\n" + "".join(lines)
                lines.append(line.decode(errors="replace"))
        running = processes_under(workdir)
        assert any("envoy" in p for p in running), running  # the gateway is up
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(40):
            rest = await proc.stdout.read()
            code = await proc.wait()
        output = "".join(lines) + rest.decode(errors="replace")
        assert code == 130, output[-3000:]
        assert "interrupted: stopping everything the demo started" in output
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert processes_under(workdir) == []

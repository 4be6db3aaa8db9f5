"""``GET /api/v1/experiments/NAME/looks`` (what ``sluice report`` reads) and the status page."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from controlplane import statuspage
from controlplane.api_experiments import ExperimentsApi
from controlplane.report import build_report
from tests.unit.demo.test_report import Page
from tests.unit.rollout.fakes import experiment, load, manager, until


async def test_looks_carry_time_step_traffic_and_evidence_without_histograms() -> None:
    mgr, store, _ = manager()
    stop = asyncio.Event()
    load(store, mgr, experiment(steps=[10, 20, 30, 40, 50], stallBudget="1h"))
    task = asyncio.get_running_loop().create_task(mgr.run(stop))
    app = web.Application()
    ExperimentsApi(mgr, None).routes(app)
    try:
        async with TestClient(TestServer(app)) as client:
            await until(lambda: any(x.get("judgment") for x in mgr.looks("canary")))
            body = await (await client.get("/api/v1/experiments/canary/looks")).json()
            view = await (await client.get("/api/v1/experiments/canary")).json()
            assert (await client.get("/api/v1/experiments/nope/looks")).status == 404
    finally:
        stop.set()
        await task
    assert body["run"] == view["run"]
    look = next(x for x in body["looks"] if x["judgment"])
    assert {"t", "step", "decision", "reason", "counted", "windows"} <= set(look)
    assert {w["version"] for w in look["windows"]} <= {"v1", "v2"}
    assert all(set(w) == {"version", "requests", "errors", "weight"} for w in look["windows"])
    metric = look["judgment"]["metrics"][0]
    assert {"name", "verdict", "estimate", "interval", "evalue", "pvalue", "alpha"} <= set(metric)
    page = Page()
    page.feed(build_report(view, body["looks"]))
    assert page.tags["svg"] >= 2 and page.decision_rows >= 1


async def test_the_status_page_and_its_assets_are_served_and_nothing_else() -> None:
    app = web.Application()
    statuspage.register(app)
    async with TestClient(TestServer(app)) as client:
        r = await client.get("/")
        html = await r.text()
        assert r.status == 200 and r.content_type == "text/html"
        assert '<script src="/ui/status.js">' in html and "http" not in html.split("<body>")[1]
        js = await client.get("/ui/status.js")
        script = await js.text()
        # The page only reads: no write method, and a token only for a read-protected API.
        assert js.status == 200 and "method" not in script and "POST" not in script
        assert (await client.get("/ui/status.css")).status == 200
        assert (await client.get("/ui/..%2Fstatuspage.py")).status == 404
        assert (await client.get("/ui/nope.js")).status == 404


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_the_status_script_parses() -> None:
    script = Path(statuspage.__file__).parent / "static" / "status.js"
    done = subprocess.run(["node", "--check", str(script)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr

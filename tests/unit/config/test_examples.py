"""Every example a user may copy validates, with the services it refers to."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.validate import main

ROOT = Path(__file__).resolve().parents[3]
STRATEGIES = sorted((ROOT / "examples" / "strategies").glob("*.yaml"))


def test_there_is_an_example_per_strategy() -> None:
    assert {p.stem for p in STRATEGIES} >= {"abtest", "bluegreen", "rolling", "synchronized"}


@pytest.mark.parametrize("path", [*STRATEGIES, ROOT / "examples" / "experiments" / "canary.yaml"],
                         ids=lambda p: p.stem)
def test_each_experiment_example_validates(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--offline", str(ROOT / "examples" / "services"), str(path)]) == 0
    assert "1 experiment" in capsys.readouterr().out

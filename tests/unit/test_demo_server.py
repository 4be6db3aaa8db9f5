"""The fake model server: listen-spec parsing, endpoints, metrics, health, SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from controlplane.demo_server import (
    DemoServers,
    UpstreamSpec,
    parse_listen,
    start_servers,
)


def test_parse_listen_full() -> None:
    spec = parse_listen("127.0.0.1:18082=chat/v2,latency-ms=40,error-rate=0.25,healthy=false")
    assert spec == UpstreamSpec(
        host="127.0.0.1",
        port=18082,
        service="chat",
        version="v2",
        latency_ms=40,
        error_rate=0.25,
        healthy=False,
    )
    assert spec.pod == "127.0.0.1:18082"


def test_parse_listen_defaults() -> None:
    spec = parse_listen("127.0.0.1:1=v1", latency_ms=5, error_rate=0.5)
    assert (spec.service, spec.version, spec.latency_ms, spec.error_rate) == ("demo", "v1", 5, 0.5)


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:18081",
        "127.0.0.1=chat/v1",
        ":18081=chat/v1",
        "127.0.0.1:99999=chat/v1",
        "127.0.0.1:1=chat/",
        "127.0.0.1:1=chat/v1,latency-ms=abc",
        "127.0.0.1:1=chat/v1,error-rate=2",
        "127.0.0.1:1=chat/v1,colour=blue",
    ],
)
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_listen(text)


@pytest.fixture
async def servers() -> AsyncIterator[DemoServers]:
    specs = [
        UpstreamSpec("127.0.0.1", 0, "chat", "v1"),
        UpstreamSpec("127.0.0.1", 0, "chat", "v2", error_rate=1.0),
    ]
    handle = await start_servers(specs, seed=1)
    try:
        yield handle
    finally:
        await handle.close()


async def test_chat_completion_identity_and_metrics(servers: DemoServers) -> None:
    v1 = servers.specs[0]
    assert v1.port != 0
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.post(
                f"http://{v1.pod}/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "two words"}]},
            ) as r:
                assert r.status == 200
                assert r.headers["x-sluice-version"] == "v1"
                assert r.headers["x-sluice-pod"] == v1.pod
                body = await r.json()
        assert body["model"] == "v1"
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["usage"]["prompt_tokens"] == 2
        async with http.post(f"http://{v1.pod}/v1/completions", json={"prompt": "x"}) as r:
            assert (await r.json())["object"] == "text_completion"
        async with http.get(f"http://{v1.pod}/") as r:
            assert await r.json() == {
                "service": "chat",
                "version": "v1",
                "pod": v1.pod,
                "healthy": True,
            }
        async with http.get(f"http://{v1.pod}/metrics") as r:
            metrics = await r.text()
    label = 'model_name="chat/v1"'
    assert f'vllm:request_success_total{{{label},finished_reason="stop"}} 4' in metrics
    assert f"vllm:e2e_request_latency_seconds_count{{{label}}} 4" in metrics
    assert f'vllm:e2e_request_latency_seconds_bucket{{{label},le="+Inf"}} 4' in metrics
    assert f"vllm:num_requests_running{{{label}}} 0" in metrics
    assert f'sluice_demo_responses_total{{{label},code="200"}} 4' in metrics


async def test_streaming_sends_chunks_then_done(servers: DemoServers) -> None:
    v1 = servers.specs[0]
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://{v1.pod}/v1/chat/completions", json={"messages": [], "stream": True}
        ) as r,
    ):
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-sluice-version"] == "v1"
        text = await r.text()
    events = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) >= 2
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "v1" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    content = "".join(c["choices"][0]["delta"]["content"] for c in chunks)
    assert "chat" in content and "v1" in content


async def test_error_rate_and_bad_request(servers: DemoServers) -> None:
    v2 = servers.specs[1]
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://{v2.pod}/v1/chat/completions", json={}) as r:
            assert r.status == 500
            assert r.headers["x-sluice-version"] == "v2"
        async with http.post(f"http://{v2.pod}/v1/chat/completions", data=b"{nope") as r:
            assert r.status == 400
        async with http.get(f"http://{v2.pod}/metrics") as r:
            metrics = await r.text()
    assert 'sluice_demo_responses_total{model_name="chat/v2",code="500"} 1' in metrics
    assert 'sluice_demo_responses_total{model_name="chat/v2",code="400"} 1' in metrics
    assert 'vllm:request_success_total{model_name="chat/v2",finished_reason="stop"} 0' in metrics


async def test_health_toggle(servers: DemoServers) -> None:
    v1 = servers.specs[0]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{v1.pod}/health") as r:
            assert (r.status, await r.text()) == (200, "ok")
        async with http.post(f"http://{v1.pod}/admin/health", json={"healthy": False}) as r:
            assert r.status == 200
        async with http.get(f"http://{v1.pod}/health") as r:
            assert r.status == 503
        async with http.post(f"http://{v1.pod}/admin/health", json={"healthy": "no"}) as r:
            assert r.status == 400
        async with http.post(f"http://{v1.pod}/admin/health", json={"healthy": True}) as r:
            assert r.status == 200
        async with http.get(f"http://{v1.pod}/health") as r:
            assert r.status == 200
    assert servers.state("v1", "chat")[0].healthy is True


async def test_port_in_use_closes_what_was_started() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            await start_servers(
                [
                    UpstreamSpec("127.0.0.1", 0, "chat", "v1"),
                    UpstreamSpec("127.0.0.1", port, "chat", "v2"),
                ]
            )


def test_cli_serves_and_exits_cleanly_on_sigterm() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "controlplane.demo_server", "--listen", f"127.0.0.1:{port}=chat/v9"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"chat/v9 on http://127.0.0.1:{port}" in line
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert rc == 0, proc.stderr.read() if proc.stderr else ""

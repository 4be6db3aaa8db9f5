"""Simulated pods over HTTP, in-process: completions (plain and streamed), headers,
ORCA, metrics, run-time faults, version change, crash and restart, control listener,
and the command line."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controlplane.podsim import Faults, Pods, PodSpec, RequestSpec, start_control, start_pods
from controlplane.podsim.profiles import PROFILES, EngineConfig

CHAT = {"messages": [{"role": "user", "content": "two words"}], "max_tokens": 4}


@pytest.fixture
async def pods() -> AsyncIterator[Pods]:
    specs = [
        PodSpec(service="chat", version="v1", gpu="h100", seed=1),
        PodSpec(service="chat", version="v2", gpu="a100", seed=2),
    ]
    async with start_pods(specs) as running:
        yield running


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sse(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


async def test_completions_headers_orca_and_metrics(pods: Pods) -> None:
    v1, v2 = pods
    assert v1.spec.port != 0 and v2.spec.port != 0 and v1.pod != v2.pod
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"http://{v1.pod}/v1/chat/completions",
            json=CHAT,
            headers={"endpoint-load-metrics-format": "TEXT"},
        ) as r:
            assert r.status == 200
            assert (r.headers["x-sluice-version"], r.headers["x-sluice-pod"]) == ("v1", v1.pod)
            orca = r.headers["endpoint-load-metrics"]
            body = await r.json()
        assert orca.startswith("TEXT ") and "named_metrics.kv_cache_utilization=" in orca
        assert "application_utilization=" in orca and "rps_fractional=" in orca
        assert body["object"] == "chat.completion" and body["model"] == "v1"
        assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}
        assert body["choices"][0]["finish_reason"] == "length"
        async with http.post(
            f"http://{v2.pod}/v1/completions",
            json={"prompt": "hi", "stream": True, "sluice_output_tokens": 3},
            headers={"endpoint-load-metrics-format": "JSON"},
        ) as r:
            assert r.status == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["x-sluice-version"] == "v2"
            assert json.loads(r.headers["endpoint-load-metrics"][5:])["named_metrics"]
            events = sse(await r.text())
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]
        assert "".join(c["choices"][0]["text"] for c in chunks) == "Hello from chat"
        async with http.post(f"http://{v1.pod}/v1/completions", data=b"{nope") as r:
            assert r.status == 400 and r.headers["x-sluice-version"] == "v1"
        async with http.get(f"http://{v1.pod}/") as r:
            assert await r.json() == {
                "service": "chat",
                "version": "v1",
                "pod": v1.pod,
                "gpu": "h100",
                "healthy": True,
                "state": "serving",
            }
        async with http.get(f"http://{v1.pod}/health") as r:
            assert (r.status, await r.text()) == (200, "ok")
        async with http.get(f"http://{v1.pod}/metrics") as r:
            assert r.headers["x-sluice-pod"] == v1.pod
            got = samples(await r.text())
    lab = (("model_name", "chat/v1"), ("version", "v1"))
    assert got[("vllm:request_success_total", (("finished_reason", "length"), *lab))] == 1
    assert got[("vllm:num_requests_running", lab)] == 0
    assert got[("vllm:prompt_tokens_total", lab)] == 4
    assert got[("vllm:generation_tokens_total", lab)] == 4
    assert got[("vllm:time_to_first_token_seconds_count", lab)] == 1
    # The model's time, not the wall clock: overhead + prefill step + three decode steps.
    g, cfg = PROFILES["h100"], EngineConfig()
    steps = [g.step_floor_s + 4 / g.prefill_tokens_per_s + g.kv_time_per_token_s * 4]
    steps += [g.step_floor_s + g.kv_time_per_token_s * (4 + i) + g.per_seq_s for i in (1, 2, 3)]
    e2e = got[("vllm:e2e_request_latency_seconds_sum", lab)]
    assert e2e == pytest.approx(cfg.api_overhead_s + sum(steps), rel=1e-6)
    assert got[("sluice_podsim_responses_total", (("code", "200"), *lab))] == 1
    assert got[("sluice_podsim_responses_total", (("code", "400"), *lab))] == 1


async def test_run_time_error_rate_and_stall(pods: Pods) -> None:
    v1 = pods[0]
    url = f"http://{v1.pod}"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/admin/faults", json={"errorRate": 1.0}) as r:
            assert r.status == 200 and (await r.json())["faults"]["errorRate"] == 1.0
        for stream in (False, True):
            async with http.post(
                f"{url}/v1/chat/completions", json={**CHAT, "stream": stream}
            ) as r:
                assert r.status == 500 and r.headers["x-sluice-version"] == "v1"
        async with http.post(f"{url}/admin/faults", json={"errorLatencyMs": 1}) as r:
            assert r.status == 200
        async with http.post(f"{url}/v1/chat/completions", json=CHAT) as r:
            assert r.status == 500
        async with http.post(f"{url}/admin/faults", json={"errorRate": 0, "colour": 1}) as r:
            assert r.status == 400
        async with http.post(f"{url}/admin/faults", json={"errorRate": 0}) as r:
            assert r.status == 200
        async with http.post(f"{url}/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200
        async with http.get(f"{url}/metrics") as r:
            got = samples(await r.text())
        async with http.post(f"{url}/admin/faults", json={"stallMs": 60_000}) as r:
            assert r.status == 200
    lab = (("model_name", "chat/v1"), ("version", "v1"))
    assert got[("sluice_podsim_responses_total", (("code", "500"), *lab))] == 3
    assert got[("sluice_podsim_responses_total", (("code", "200"), *lab))] == 1
    assert got[("vllm:e2e_request_latency_seconds_count", lab)] == 1  # errors are not counted
    assert v1.engine.next_event() is None  # idle; a request now waits out the stall:
    v1.submit(RequestSpec("probe", 10, 1), streaming=False)
    nxt = v1.engine.next_event()
    assert nxt is not None and nxt > v1.now() + 50


async def test_version_change_drains_then_cold_starts(pods: Pods) -> None:
    v1 = pods[0]
    url = f"http://{v1.pod}"
    async with aiohttp.ClientSession() as http:

        async def long_request() -> tuple[int, str]:
            body = {"prompt": "x", "max_tokens": 30}
            async with http.post(f"{url}/v1/completions", json=body) as r:
                await r.read()
                return r.status, r.headers["x-sluice-version"]

        inflight = asyncio.ensure_future(long_request())
        while v1.engine.running == 0:
            await asyncio.sleep(0.005)
        body = {"version": "v2", "coldStartMs": 150}
        async with http.post(f"{url}/admin/version", json=body) as r:
            assert r.status == 202 and (await r.json())["state"] == "draining"
        async with http.post(f"{url}/admin/version", json=body) as r:
            assert r.status == 409
        async with http.post(f"{url}/v1/chat/completions", json=CHAT) as r:
            assert r.status == 503 and r.headers["x-sluice-version"] == "v1"
        async with http.get(f"{url}/health") as r:
            assert r.status == 503
        assert await inflight == (200, "v1")  # in-flight requests finish first
        while v1.state == "draining":
            await asyncio.sleep(0.005)
        assert (v1.state, v1.version) == ("loading", "v2")
        async with http.get(f"{url}/health") as r:
            assert (r.status, await r.text()) == (503, "loading")
        await v1.wait_serving()
        async with http.post(f"{url}/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200 and r.headers["x-sluice-version"] == "v2"
            assert (await r.json())["model"] == "v2"
        async with http.get(f"{url}/metrics") as r:
            got = samples(await r.text())
        async with http.post(f"{url}/admin/health", json={"healthy": False}) as r:
            assert r.status == 200
        async with http.get(f"{url}/health") as r:
            assert (r.status, await r.text()) == (503, "unhealthy")
    lab = (("model_name", "chat/v2"), ("version", "v2"))
    assert got[("vllm:e2e_request_latency_seconds_count", lab)] == 1  # a fresh process


async def test_crash_resets_and_restart_comes_back(pods: Pods) -> None:
    v1 = pods[0]
    url = f"http://{v1.pod}"
    v1.set_faults(cold_start_ms=100)
    async with aiohttp.ClientSession() as http:

        async def streamed() -> None:
            body = {"prompt": "x", "max_tokens": 500, "stream": True}
            async with http.post(f"{url}/v1/completions", json=body) as r:
                await r.read()

        inflight = asyncio.ensure_future(streamed())
        while v1.engine.running == 0:
            await asyncio.sleep(0.005)
        async with http.post(f"{url}/admin/faults", json={"crash": True}) as r:
            assert r.status == 200 and (await r.json())["state"] == "crashed"
        with pytest.raises(aiohttp.ClientError):
            await inflight  # reset mid-stream
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(f"{url}/health"):
                pass
        await v1.restart()
        assert v1.state == "loading"
        async with http.get(f"{url}/health") as r:
            assert r.status == 503
        await v1.wait_serving()
        async with http.post(f"{url}/v1/chat/completions", json=CHAT) as r:
            assert r.status == 200


async def test_control_listener_reaches_a_crashed_pod(pods: Pods) -> None:
    runner, port = await start_control(pods, "127.0.0.1", 0)
    ctl = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{ctl}/pods/1/crash", json={"restartAfterMs": 50}) as r:
                assert r.status == 200 and (await r.json())["state"] == "crashed"
            async with http.get(f"{ctl}/pods") as r:
                listed = await r.json()
            assert [p["index"] for p in listed] == [0, 1] and listed[1]["state"] == "crashed"
            await pods[1].wait_serving()  # came back by itself
            async with http.post(f"{ctl}/pods/{pods[0].pod}/crash") as r:
                assert r.status == 200
            async with http.post(f"{ctl}/pods/{pods[0].pod}/restart", json={"version": "v9"}) as r:
                assert r.status == 200 and (await r.json())["version"] == "v9"
            async with http.post(f"{ctl}/pods/7/restart") as r:
                assert r.status == 404
            async with http.post(f"{ctl}/pods/0/faults", json={"errorRate": 2}) as r:
                assert r.status == 400
    finally:
        await runner.cleanup()


async def test_start_at_a_cold_start_with_faults() -> None:
    spec = PodSpec(version="v1", faults=Faults(cold_start_ms=60_000))
    pods = await start_pods([spec])
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{pods[0].pod}/health") as r:
                assert (r.status, await r.text()) == (503, "loading")
            async with http.post(f"http://{pods[0].pod}/v1/completions", json={}) as r:
                assert r.status == 503
    finally:
        await pods.close()


def test_cli_prints_each_pod_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controlplane.podsim",
            "--pod",
            "127.0.0.1:0=chat/v1,gpu=l4",
            "--pod",
            "127.0.0.1:0=chat/v2,error-rate=0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    try:
        assert proc.stdout is not None
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert "podsim chat/v1 on http://127.0.0.1:" in first and "(gpu l4)" in first
        assert "podsim chat/v2 on http://127.0.0.1:" in second
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert rc == 0, proc.stderr.read() if proc.stderr else ""

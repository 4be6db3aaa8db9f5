"""A tiny fake model server for demos and integration tests.

One process serves several listeners, each pretending to be one replica of one
model version::

    python -m controlplane.demo_server \\
        --listen 127.0.0.1:18081=chat/v1 \\
        --listen '127.0.0.1:18082=chat/v2,latency-ms=40,error-rate=0.05'

Each listener answers OpenAI-shaped ``POST /v1/chat/completions`` and
``POST /v1/completions`` (``"stream": true`` gives SSE chunks and ``data: [DONE]``),
``GET /health`` (toggle with ``POST /admin/health {"healthy": false}``), ``GET /``
(its identity as JSON) and ``GET /metrics`` (vLLM-style metrics that count what it
really served). Every response carries ``x-sluice-version`` and ``x-sluice-pod``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from aiohttp import web

from controlplane.podsim.spec import split_pod

__all__ = [
    "DemoServers",
    "UpstreamSpec",
    "UpstreamState",
    "main",
    "parse_listen",
    "start_servers",
]

VERSION_HEADER = "x-sluice-version"
POD_HEADER = "x-sluice-pod"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STREAM_CHUNKS = ("Hello", " from", " {service}", " {version}", ".")
STREAM_CHUNK_DELAY_S = 0.01


@dataclass(frozen=True)
class UpstreamSpec:
    """One listener: where it binds and which model version it pretends to be."""

    host: str
    port: int  # 0: pick a free port (see ``DemoServers.specs`` for the bound one)
    service: str
    version: str
    latency_ms: int = 0
    error_rate: float = 0.0  # fraction of completions answered with HTTP 500
    healthy: bool = True

    @property
    def pod(self) -> str:
        return f"{self.host}:{self.port}"


def parse_listen(text: str, *, latency_ms: int = 0, error_rate: float = 0.0) -> UpstreamSpec:
    """Parse ``HOST:PORT=SERVICE/VERSION[,latency-ms=N][,error-rate=F][,healthy=false]``.

    ``latency_ms`` and ``error_rate`` are the defaults for options not given.
    """
    host, port, service, version, options = split_pod(text)
    spec = UpstreamSpec(
        host=host,
        port=port,
        service=service,
        version=version,
        latency_ms=latency_ms,
        error_rate=error_rate,
    )
    for option in options:
        key, eq, value = option.partition("=")
        try:
            if key == "latency-ms" and eq:
                spec = replace(spec, latency_ms=int(value))
            elif key == "error-rate" and eq:
                spec = replace(spec, error_rate=float(value))
            elif key == "healthy" and value in ("true", "false"):
                spec = replace(spec, healthy=value == "true")
            else:
                raise ValueError(option)
        except ValueError:
            raise ValueError(
                f"{text!r}: bad option {option!r} (latency-ms=INT, error-rate=FLOAT,"
                " healthy=true|false)"
            ) from None
    if spec.latency_ms < 0 or not 0.0 <= spec.error_rate <= 1.0:
        raise ValueError(f"{text!r}: latency-ms must be >= 0 and error-rate in [0, 1]")
    return spec


@dataclass
class _Histogram:
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1


@dataclass
class UpstreamState:
    """The mutable side of one listener: health toggle and what it served."""

    spec: UpstreamSpec
    healthy: bool = True
    running: int = 0
    responses: dict[int, int] = field(default_factory=dict)  # HTTP status -> count
    success: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    latency: _Histogram = field(default_factory=_Histogram)
    rng: random.Random = field(default_factory=random.Random)

    def identity(self) -> dict[str, object]:
        s = self.spec
        return {"service": s.service, "version": s.version, "pod": s.pod, "healthy": self.healthy}

    def headers(self) -> dict[str, str]:
        return {VERSION_HEADER: self.spec.version, POD_HEADER: self.spec.pod}

    def count(self, status: int) -> None:
        self.responses[status] = self.responses.get(status, 0) + 1

    def metrics_text(self) -> str:
        label = f'model_name="{self.spec.service}/{self.spec.version}"'
        lines = [
            "# HELP vllm:num_requests_running Requests being generated right now.",
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{label}}} {self.running}",
            "# HELP vllm:num_requests_waiting Requests queued (always 0 here).",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{label}}} 0",
            "# HELP vllm:request_success_total Completions finished successfully.",
            "# TYPE vllm:request_success_total counter",
            f'vllm:request_success_total{{{label},finished_reason="stop"}} {self.success}',
            "# HELP vllm:prompt_tokens_total Prompt tokens processed.",
            "# TYPE vllm:prompt_tokens_total counter",
            f"vllm:prompt_tokens_total{{{label}}} {self.prompt_tokens}",
            "# HELP vllm:generation_tokens_total Tokens generated.",
            "# TYPE vllm:generation_tokens_total counter",
            f"vllm:generation_tokens_total{{{label}}} {self.generation_tokens}",
            "# HELP vllm:e2e_request_latency_seconds End-to-end completion latency.",
            "# TYPE vllm:e2e_request_latency_seconds histogram",
        ]
        h = self.latency
        for bound, n in zip(h.buckets, h.counts, strict=True):
            lines.append(f'vllm:e2e_request_latency_seconds_bucket{{{label},le="{bound}"}} {n}')
        lines += [
            f'vllm:e2e_request_latency_seconds_bucket{{{label},le="+Inf"}} {h.count}',
            f"vllm:e2e_request_latency_seconds_sum{{{label}}} {h.total:.6f}",
            f"vllm:e2e_request_latency_seconds_count{{{label}}} {h.count}",
            "# HELP sluice_demo_responses_total Completion responses by HTTP status.",
            "# TYPE sluice_demo_responses_total counter",
        ]
        for status in sorted(self.responses):
            lines.append(
                f'sluice_demo_responses_total{{{label},code="{status}"}} {self.responses[status]}'
            )
        return "\n".join(lines) + "\n"


def _completion_body(state: UpstreamState, chat: bool, text: str, prompt_tokens: int) -> object:
    s = state.spec
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(STREAM_CHUNKS),
        "total_tokens": prompt_tokens + len(STREAM_CHUNKS),
    }
    base = {"id": f"cmpl-{uuid.uuid4().hex[:12]}", "created": int(time.time()), "model": s.version}
    if chat:
        choice: dict[str, object] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }
        return {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
    choice = {"index": 0, "text": text, "finish_reason": "stop"}
    return {**base, "object": "text_completion", "choices": [choice], "usage": usage}


def _chunk(state: UpstreamState, chat: bool, piece: str, cid: str, last: bool) -> bytes:
    reason = "stop" if last else None
    if chat:
        choice: dict[str, object] = {
            "index": 0,
            "delta": {"content": piece},
            "finish_reason": reason,
        }
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": piece, "finish_reason": reason}
        obj = "text_completion"
    body = {"id": cid, "object": obj, "model": state.spec.version, "choices": [choice]}
    return f"data: {json.dumps(body)}\n\n".encode()


def _prompt_tokens(payload: dict[str, object]) -> int:
    messages = payload.get("messages")
    if isinstance(messages, list):
        text = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    else:
        text = str(payload.get("prompt", ""))
    return len(text.split())


def _make_app(state: UpstreamState) -> web.Application:
    async def health(_: web.Request) -> web.Response:
        if state.healthy:
            return web.Response(text="ok", headers=state.headers())
        return web.Response(status=503, text="unhealthy", headers=state.headers())

    async def set_health(request: web.Request) -> web.Response:
        try:
            payload = await request.json()
            healthy = payload["healthy"]
            if not isinstance(healthy, bool):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'expected {"healthy": true|false}'}, status=400)
        state.healthy = healthy
        return web.json_response(state.identity(), headers=state.headers())

    async def identity(_: web.Request) -> web.Response:
        return web.json_response(state.identity(), headers=state.headers())

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=state.metrics_text(), content_type="text/plain")

    async def completion(request: web.Request, chat: bool) -> web.StreamResponse:
        started = time.monotonic()
        try:
            payload = await request.json()
            if not isinstance(payload, dict):
                raise ValueError
        except ValueError:
            state.count(400)
            return web.json_response(
                {"error": {"message": "request body must be a JSON object"}},
                status=400,
                headers=state.headers(),
            )
        state.running += 1
        try:
            if state.spec.latency_ms:
                await asyncio.sleep(state.spec.latency_ms / 1000)
            if state.rng.random() < state.spec.error_rate:
                state.count(500)
                return web.json_response(
                    {"error": {"message": f"injected error from {state.spec.pod}"}},
                    status=500,
                    headers=state.headers(),
                )
            prompt_tokens = _prompt_tokens(payload)
            pieces = [
                p.format(service=state.spec.service, version=state.spec.version)
                for p in STREAM_CHUNKS
            ]
            if payload.get("stream") is True:
                response = web.StreamResponse(
                    headers={**state.headers(), "content-type": "text/event-stream"}
                )
                await response.prepare(request)
                cid = f"cmpl-{uuid.uuid4().hex[:12]}"
                for i, piece in enumerate(pieces):
                    await response.write(_chunk(state, chat, piece, cid, i == len(pieces) - 1))
                    await asyncio.sleep(STREAM_CHUNK_DELAY_S)
                await response.write(b"data: [DONE]\n\n")
                await response.write_eof()
            else:
                body = _completion_body(state, chat, "".join(pieces), prompt_tokens)
                response = web.json_response(body, headers=state.headers())
            state.count(200)
            state.success += 1
            state.prompt_tokens += prompt_tokens
            state.generation_tokens += len(pieces)
            state.latency.observe(time.monotonic() - started)
            return response
        finally:
            state.running -= 1

    async def chat_completions(request: web.Request) -> web.StreamResponse:
        return await completion(request, chat=True)

    async def completions(request: web.Request) -> web.StreamResponse:
        return await completion(request, chat=False)

    app = web.Application()
    app.router.add_get("/", identity)
    app.router.add_get("/health", health)
    app.router.add_post("/admin/health", set_health)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    return app


class DemoServers:
    """Running listeners; ``close()`` stops them all."""

    def __init__(self, runners: list[web.AppRunner], states: list[UpstreamState]) -> None:
        self._runners = runners
        self.states = states

    @property
    def specs(self) -> list[UpstreamSpec]:
        """The specs with the ports actually bound."""
        return [s.spec for s in self.states]

    def state(self, version: str, service: str | None = None) -> list[UpstreamState]:
        return [
            s
            for s in self.states
            if s.spec.version == version and (service is None or s.spec.service == service)
        ]

    async def close(self) -> None:
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()

    async def __aenter__(self) -> DemoServers:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_servers(specs: Sequence[UpstreamSpec], *, seed: int | None = None) -> DemoServers:
    """Bind every listener (all or nothing) and return a handle to close them."""
    servers = DemoServers([], [])
    try:
        for i, spec in enumerate(specs):
            rng = random.Random(None if seed is None else seed + i)
            state = UpstreamState(spec=spec, healthy=spec.healthy, rng=rng)
            runner = web.AppRunner(_make_app(state), access_log=None, handle_signals=False)
            await runner.setup()
            servers._runners.append(runner)
            site = web.TCPSite(runner, spec.host, spec.port, reuse_address=True)
            await site.start()
            if spec.port == 0:
                bound = runner.addresses[0]
                state.spec = replace(spec, port=int(bound[1]))
            servers.states.append(state)
    except BaseException:
        await servers.close()
        raise
    return servers


async def _serve(specs: Sequence[UpstreamSpec], seed: int | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with await start_servers(specs, seed=seed) as servers:
        for s in servers.specs:
            print(f"demo upstream {s.service}/{s.version} on http://{s.pod}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m controlplane.demo_server", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--listen",
        action="append",
        required=True,
        metavar="HOST:PORT=SERVICE/VERSION[,latency-ms=N][,error-rate=F][,healthy=false]",
        help="a listener to serve (repeatable)",
    )
    parser.add_argument("--latency-ms", type=int, default=0, help="default added latency")
    parser.add_argument("--error-rate", type=float, default=0.0, help="default error fraction")
    parser.add_argument("--seed", type=int, default=None, help="seed for injected errors")
    parser.add_argument("--unhealthy", action="store_true", help="start with /health failing (503)")
    args = parser.parse_args(argv)
    try:
        specs = [
            parse_listen(t, latency_ms=args.latency_ms, error_rate=args.error_rate)
            for t in args.listen
        ]
        if args.unhealthy:
            specs = [replace(spec, healthy=False) for spec in specs]
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(_serve(specs, args.seed))
    except OSError as exc:
        print(f"demo_server: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""HTTP for simulated pods (aiohttp): one listener per pod, all in one event loop.

Per pod: ``POST /v1/completions``, ``POST /v1/chat/completions`` (OpenAI shape,
``"stream": true`` for SSE), ``GET /health``, ``GET /`` (identity), ``GET /metrics``
(vLLM names), ``POST /admin/faults``, ``POST /admin/health``, ``POST /admin/version``,
``POST /admin/restart``. Every response carries ``x-sluice-version`` and
``x-sluice-pod``; a completion asked with ``endpoint-load-metrics-format: TEXT`` (or
``JSON``) answers with an ORCA ``endpoint-load-metrics`` header.

The control listener (``admin.start_control``) reaches pods that cannot answer
themselves (crashed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from typing import Any, overload

from aiohttp import web

from controlplane.podsim.admin import admin_response
from controlplane.podsim.engine import RequestSpec
from controlplane.podsim.metrics import orca_header
from controlplane.podsim.openai_api import (
    Completion,
    chunk,
    completion_body,
    final_usage_chunk,
    parse_completion,
    words,
)
from controlplane.podsim.pod import VERSION_HEADER, Pod, Waiter
from controlplane.podsim.spec import PodSpec

__all__ = ["Pods", "start_pods"]

ORCA_REQUEST_HEADER = "endpoint-load-metrics-format"
ORCA_RESPONSE_HEADER = "endpoint-load-metrics"


class _Listener:
    """A pod's socket: bind (again on the same port after a crash), stop, reset all."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self._host = host
        self._port = port
        self._site: web.TCPSite | None = None

    async def start(self) -> int:
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        self._site = site
        if self._port == 0:
            server = site._server
            assert isinstance(server, asyncio.base_events.Server)
            self._port = int(server.sockets[0].getsockname()[1])
        return self._port

    async def stop(self) -> None:
        site, self._site = self._site, None
        if site is not None:
            await site.stop()

    def abort_connections(self) -> None:
        server = self._runner.server
        for handler in server.connections if server is not None else ():
            if handler.transport is not None:
                handler.transport.abort()


def _error(pod: Pod, status: int, message: str, headers: dict[str, str]) -> web.Response:
    pod.count(status)
    kind = {400: "BadRequestError", 503: "ServiceUnavailableError"}.get(status, "InternalError")
    body = {"error": {"message": message, "type": kind, "code": status}}
    return web.json_response(body, status=status, headers=headers)


def _reset(request: web.Request) -> web.Response:
    """The pod lost this request: reset the connection (the response never leaves)."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=503)


CLASS_HEADER = "x-sluice-class"


def _priority(request: web.Request, payload: object) -> int:
    """vLLM's ``priority`` body field (lower first), or 1 for Sluice's batch class."""
    value = payload.get("priority") if isinstance(payload, dict) else None
    priority = value if isinstance(value, int) and not isinstance(value, bool) else 0
    if request.headers.get(CLASS_HEADER, "").lower() == "batch":
        priority = max(priority, 1)
    return priority


def _orca(pod: Pod, request: web.Request) -> dict[str, str]:
    fmt = request.headers.get(ORCA_REQUEST_HEADER)
    value = orca_header(fmt, pod.load()) if fmt else None
    return {ORCA_RESPONSE_HEADER: value} if value else {}


async def _stream(
    request: web.Request,
    pod: Pod,
    c: Completion,
    waiter: Waiter,
    headers: dict[str, str],
    cid: str,
) -> web.StreamResponse:
    while not (waiter.emitted or waiter.reset):
        await waiter.wait()
    if waiter.reset:
        return _reset(request)
    response = web.StreamResponse(
        headers={
            **headers,
            **_orca(pod, request),
            "content-type": "text/event-stream",
            "cache-control": "no-cache",
        }
    )
    await response.prepare(request)
    pieces = words(pod.spec.service, headers[VERSION_HEADER])
    model, interval, written = headers[VERSION_HEADER], pod.spec.stream_interval, 0
    while True:
        if waiter.reset:
            return _reset(request)
        n = waiter.emitted
        if n - written >= interval or (waiter.finished and n > written):
            await response.write(chunk(c, cid, model, pieces, written, n))
            written = n
        if waiter.finished and written == n:
            break
        await waiter.wait()
    if c.include_usage:
        await response.write(final_usage_chunk(c, cid, model))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    pod.count(200)
    return response


async def _completion(request: web.Request, pod: Pod, chat: bool) -> web.StreamResponse:
    headers = pod.headers()  # the version that takes the request answers it
    if pod.state != "serving":
        return _error(pod, 503, f"pod is {pod.state}", headers)
    try:
        payload = await request.json()
    except ValueError:
        return _error(pod, 400, "request body must be JSON", headers)
    rid = pod.new_request_id()
    try:
        c = parse_completion(
            payload,
            chat=chat,
            block_size=pod.engine.config.block_size,
            default_max_tokens=pod.spec.default_max_tokens,
            unique=hash(rid),
        )
    except ValueError as exc:
        return _error(pod, 400, str(exc), headers)
    faults, epoch = pod.faults, pod.epoch
    fail = faults.error_rate > 0 and pod.rng.random() < faults.error_rate
    pod.begin()
    try:
        if fail and faults.error_latency_ms is not None:
            await asyncio.sleep((faults.error_latency_ms + faults.extra_latency_ms) / 1000)
            if pod.epoch != epoch:
                return _reset(request)
            return _error(pod, 500, f"injected error from {pod.pod}", headers)
        spec = RequestSpec(
            id=rid,
            prompt_tokens=c.prompt_tokens,
            output_tokens=c.output_tokens,
            block_hashes=c.block_hashes,
            delay=faults.extra_latency_ms / 1000,
            finish_reason=c.finish_reason,
            counted=not fail,
            priority=_priority(request, payload),
        )
        try:
            waiter = pod.submit(spec, streaming=c.stream and not fail)
        except ValueError as exc:
            return _error(pod, 400, str(exc), headers)
        try:
            if c.stream and not fail:
                return await _stream(request, pod, c, waiter, headers, f"cmpl-{rid}")
            while not (waiter.finished or waiter.reset):
                await waiter.wait()
            if waiter.reset:
                return _reset(request)
            if fail:
                return _error(pod, 500, f"injected error from {pod.pod}", headers)
            version = headers[VERSION_HEADER]
            body = completion_body(c, f"cmpl-{rid}", version, words(pod.spec.service, version))
            pod.count(200)
            return web.json_response(body, headers={**headers, **_orca(pod, request)})
        finally:
            if not waiter.finished:
                pod.cancel(rid)
    finally:
        pod.end()


def _pod_app(pod: Pod) -> web.Application:
    async def stamp(_: web.Request, response: web.StreamResponse) -> None:
        for key, value in pod.headers().items():
            response.headers.setdefault(key, value)

    async def health(_: web.Request) -> web.Response:
        if pod.ready:
            return web.Response(text="ok")
        return web.Response(status=503, text="unhealthy" if pod.state == "serving" else pod.state)

    async def identity(_: web.Request) -> web.Response:
        return web.json_response(pod.identity())

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=pod.metrics_text(), content_type="text/plain")

    async def admin(request: web.Request) -> web.Response:
        return await admin_response(request, pod, own=True)

    def completions(chat: bool) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await _completion(request, pod, chat)

        return handler

    app = web.Application()
    app.on_response_prepare.append(stamp)
    app.router.add_get("/", identity)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/admin/{action:faults|health|version|restart}", admin)
    app.router.add_post("/v1/completions", completions(False))
    app.router.add_post("/v1/chat/completions", completions(True))
    return app


class Pods(Sequence[Pod]):
    """Running pods (index like a list); ``close()`` stops them all."""

    def __init__(self) -> None:
        self._pods: list[Pod] = []
        self._runners: list[web.AppRunner] = []

    @overload
    def __getitem__(self, i: int) -> Pod: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[Pod]: ...

    def __getitem__(self, i: int | slice) -> Pod | Sequence[Pod]:
        return self._pods[i]

    def __len__(self) -> int:
        return len(self._pods)

    def __iter__(self) -> Iterator[Pod]:
        return iter(self._pods)

    @property
    def specs(self) -> list[PodSpec]:
        """The specs with the ports actually bound."""
        return [p.spec for p in self._pods]

    def find(self, key: str) -> Pod:
        """A pod by index or ``HOST:PORT``; KeyError if none."""
        if key.isdigit() and int(key) < len(self._pods):
            return self._pods[int(key)]
        for pod in self._pods:
            if pod.pod == key:
                return pod
        raise KeyError(key)

    async def close(self) -> None:
        pods, self._pods = self._pods, []
        runners, self._runners = self._runners, []
        for pod in pods:
            await pod.close()
        for runner in runners:
            await runner.cleanup()

    async def __aenter__(self) -> Pods:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _Started:
    """``start_pods(...)`` is both awaitable and an async context manager."""

    def __init__(self, specs: Sequence[PodSpec]) -> None:
        self._specs = specs
        self._pods: Pods | None = None

    def __await__(self) -> Generator[Any, None, Pods]:
        return self._start().__await__()

    async def _start(self) -> Pods:
        pods = Pods()
        try:
            for spec in self._specs:
                pod = Pod(spec)
                runner = web.AppRunner(
                    _pod_app(pod), access_log=None, handle_signals=False, handler_cancellation=True
                )
                pods._runners.append(runner)
                await runner.setup()
                pod.listener = _Listener(runner, spec.host, spec.port)
                pods._pods.append(pod)
                await pod.start()
        except BaseException:
            await pods.close()
            raise
        self._pods = pods
        return pods

    async def __aenter__(self) -> Pods:
        return await self._start()

    async def __aexit__(self, *exc: object) -> None:
        if self._pods is not None:
            await self._pods.close()


def start_pods(specs: Sequence[PodSpec]) -> _Started:
    """Bind every pod (all or nothing): ``async with start_pods([...]) as pods`` or
    ``pods = await start_pods([...])`` then ``await pods.close()``."""
    return _Started(specs)

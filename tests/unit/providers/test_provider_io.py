"""The providers' I/O edges against small in-process HTTP servers on 127.0.0.1.

The real Envoy and the real Prometheus: tests/integration/test_providers.py.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from analysis.providers import ProviderError, Target
from analysis.providers.envoy import EnvoyStatsProvider
from analysis.providers.prometheus import PrometheusProvider

TARGET = Target("a", ("v1", "v2"), {"v1": "a/v1", "v2": "a/v2"}, (), 60.0)
STATS = """\
envoy_cluster_upstream_rq_completed{envoy_cluster_name="a/v1"} 10
envoy_cluster_upstream_rq_completed{envoy_cluster_name="a/v2"} 3
"""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def text(body: str, status: int = 200, delay: float = 0.0) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        return web.Response(text=body, status=status)

    return handler


async def test_envoy_reads_every_url_and_leaves_out_failures(
    serve: Callable[[Handler], Awaitable[str]], caplog: pytest.LogCaptureFixture
) -> None:
    good = await serve(text(STATS))
    broken = await serve(text("oops", status=503))
    slow = await serve(text(STATS, delay=1.5))
    garbled = await serve(text("<html>not stats</html>"))
    urls = [good + "/", broken, slow, garbled, closed_port_url()]
    provider = EnvoyStatsProvider(lambda: urls, timeout_s=0.5)
    try:
        reading = await provider.read(TARGET, 42.0)
    finally:
        await provider.close()
    assert reading.t == 42.0
    assert set(reading.origins) == {good}
    assert reading.origins[good]["v1"].requests == 10
    assert len([r for r in caplog.records if r.name == "analysis.providers.envoy"]) == 4
    assert "HTTP 503" in caplog.text
    assert "expected a metric name" in caplog.text


async def test_envoy_asks_only_for_the_target_clusters(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    seen: dict[str, str] = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(request.query)
        seen["path"] = request.path
        return web.Response(text=STATS)

    url = await serve(handler)
    provider = EnvoyStatsProvider([url])
    try:
        await provider.read(TARGET, 1.0)
    finally:
        await provider.close()
    assert seen["path"] == "/stats/prometheus"
    assert seen["filter"] == r"^cluster\.(a/v1|a/v2)(/affinity)?\."


async def test_envoy_all_failing_is_provider_error() -> None:
    provider = EnvoyStatsProvider([closed_port_url(), closed_port_url()], timeout_s=1.0)
    try:
        with pytest.raises(ProviderError, match=r"no Envoy answered \(2 tried\)"):
            await provider.read(TARGET, 1.0)
    finally:
        await provider.close()


async def test_envoy_no_urls_or_no_cluster_is_provider_error(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    with pytest.raises(ProviderError, match="no Envoy admin address"):
        await EnvoyStatsProvider(list).read(TARGET, 1.0)
    url = await serve(text(STATS.splitlines()[0]))
    provider = EnvoyStatsProvider([url])
    try:
        with pytest.raises(ProviderError, match="no Envoy has stats for cluster a/v2"):
            await provider.read(TARGET, 1.0)
    finally:
        await provider.close()


def prom_handler(
    answer: Any, status: int = 200, delay: float = 0.0, seen: list[dict[str, str]] | None = None
) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        if seen is not None:
            seen.append(dict(request.query))
        await asyncio.sleep(delay)
        if status != 200:
            return web.json_response({"status": "error", "error": "bad"}, status=status)
        return web.json_response(
            {"status": "success", "data": {"resultType": "vector", "result": answer}}
        )

    return handler


REQUESTS = [
    {"metric": {"instance": "e:1", "envoy_cluster_name": "a/v1"}, "value": [1.0, "10"]},
    {"metric": {"instance": "e:1", "envoy_cluster_name": "a/v2"}, "value": [1.0, "3"]},
]


async def test_prometheus_queries_at_t(serve: Callable[[Handler], Awaitable[str]]) -> None:
    seen: list[dict[str, str]] = []
    url = await serve(prom_handler(REQUESTS, seen=seen))
    provider = PrometheusProvider(url + "/", timeout_s=2.0)
    try:
        reading = await provider.read(TARGET, 1700000000.25)
    finally:
        await provider.close()
    assert provider.name == f"prometheus {url}"
    assert seen == [
        {
            "query": 'envoy_cluster_upstream_rq_completed{envoy_cluster_name=~"a/v1|a/v2"}',
            "time": "1700000000.250",
        }
    ]
    assert reading.origins["instance=e:1"]["v2"].requests == 3


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (prom_handler(REQUESTS, status=400), "HTTP Status Code 400"),
        (prom_handler(REQUESTS, delay=1.5), "timed out after 0.5s"),
        (prom_handler([]), "no data for cluster a/v1"),
        (text("not json"), "malformed answer"),
    ],
)
async def test_prometheus_failures_are_provider_errors(
    serve: Callable[[Handler], Awaitable[str]], handler: Handler, message: str
) -> None:
    url = await serve(handler)
    provider = PrometheusProvider(url, timeout_s=0.5)
    try:
        with pytest.raises(ProviderError, match=message):
            await provider.read(TARGET, 1.0)
    finally:
        await provider.close()


async def test_prometheus_down_is_provider_error() -> None:
    provider = PrometheusProvider(closed_port_url(), timeout_s=5.0)
    try:
        with pytest.raises(ProviderError, match="ConnectionError"):
            await provider.read(TARGET, 1.0)
    finally:
        await provider.close()


async def test_prometheus_is_not_retried(serve: Callable[[Handler], Awaitable[str]]) -> None:
    """The library retries a 503 three times with back-off by default; the next look retries."""
    seen: list[dict[str, str]] = []
    url = await serve(prom_handler(REQUESTS, status=503, seen=seen))
    provider = PrometheusProvider(url, timeout_s=5.0)
    try:
        with pytest.raises(ProviderError):
            await provider.read(TARGET, 1.0)
    finally:
        await provider.close()
    assert len(seen) == 1

"""Metrics providers against a real Envoy and a real Prometheus.

Envoys run a static bootstrap with ``sluice bootstrap``'s stats settings (the
request-time bucket layout, 1 s stats flush) and two clusters, ``chat/v1``
and ``chat/v2``, in front of demo pods (``chat/v2`` answers about a quarter
of its requests with HTTP 500). What the clients saw is the reference:

- ``EnvoyStatsProvider`` readings of two Envoys, turned into windows, give
  exactly the requests and 5xx each version served between the reads, and
  the flushed ``upstream_rq_time`` histogram holds every one of them; an
  Envoy that restarted makes the next look a counter-reset exclusion;
- ``PrometheusProvider`` on a real Prometheus scraping that Envoy and the
  pods gives the same counts once the scrape has caught up, pod histograms
  by the pod selector, a custom query per version; a stopped Prometheus is
  a ProviderError.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from analysis.providers import ProviderError, Reading, Target
from analysis.providers.envoy import EnvoyStatsProvider
from analysis.providers.prometheus import PrometheusProvider
from analysis.providers.windows import windows_between
from analysis.samples import Window
from analysis.spec import MetricKind, MetricSpec
from controlplane.demo_server import UpstreamSpec
from tests.integration.conftest import EnvoyFactory
from tests.integration.harness import (
    LOCALHOST,
    DemoUpstreams,
    Reply,
    async_wait_for,
    free_port,
    send_requests,
)
from tests.integration.prometheus import PrometheusProcess, ScrapeJob, prometheus_binary
from xds.bootstrap import UPSTREAM_RQ_TIME_BUCKETS_MS, stats_settings

pytestmark = pytest.mark.integration

WEIGHTS = {"v1": 60, "v2": 40}
V2_ERROR_RATE = 0.25
ROUTER = "envoy.extensions.filters.http.router.v3.Router"
HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def target(*metrics: MetricSpec) -> Target:
    return Target("chat", ("v1", "v2"), {"v1": "chat/v1", "v2": "chat/v2"}, metrics, 60.0)


def static_bootstrap(node: str, admin_port: int, listen_port: int, pods: Mapping[str, int]) -> str:
    """Two static clusters behind one listener split by WEIGHTS, with Sluice's stats settings."""

    def cluster(version: str) -> dict[str, Any]:
        name = f"chat/{version}"
        address = {"socket_address": {"address": LOCALHOST, "port_value": pods[version]}}
        return {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
            },
        }

    weighted = [{"name": f"chat/{v}", "weight": w} for v, w in WEIGHTS.items()]
    hcm = {
        "@type": f"type.googleapis.com/{HCM}",
        "stat_prefix": "chat",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "chat",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "route": {"weighted_clusters": {"clusters": weighted}},
                        }
                    ],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": f"type.googleapis.com/{ROUTER}"},
            }
        ],
    }
    config = {
        "node": {"id": node, "cluster": "sluice"},
        "admin": {"address": {"socket_address": {"address": LOCALHOST, "port_value": admin_port}}},
        **stats_settings(),
        "static_resources": {
            "clusters": [cluster(v) for v in WEIGHTS],
            "listeners": [
                {
                    "name": "chat",
                    "address": {
                        "socket_address": {"address": LOCALHOST, "port_value": listen_port}
                    },
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
        },
    }
    return yaml.safe_dump(config, sort_keys=False)


async def start_pods(upstreams: DemoUpstreams) -> dict[str, int]:
    servers = await upstreams.start(
        UpstreamSpec(LOCALHOST, 0, "chat", "v1"),
        UpstreamSpec(LOCALHOST, 0, "chat", "v2", error_rate=V2_ERROR_RATE),
    )
    return {s.version: s.port for s in servers.specs}


def chat(port: int) -> str:
    return f"http://{LOCALHOST}:{port}/v1/chat/completions"


def observed(replies: list[Reply]) -> tuple[dict[str, int], dict[str, int]]:
    """Requests and HTTP 500s per version, as the clients saw them."""
    assert [r for r in replies if r.status not in (200, 500) or r.version is None] == []
    requests = {v: sum(r.version == v for r in replies) for v in WEIGHTS}
    errors = {v: sum(r.version == v and r.status == 500 for r in replies) for v in WEIGHTS}
    assert requests["v1"] > 0 and requests["v2"] > 0 and errors["v2"] > 0
    return requests, errors


def window_pair(prev: Reading, cur: Reading, t: Target) -> dict[str, Window]:
    windows, reason = windows_between(prev, cur, t, {v: float(w) for v, w in WEIGHTS.items()})
    assert reason is None
    return windows


async def test_envoy_stats_windows_match_what_clients_saw(
    envoy_factory: EnvoyFactory, demo_upstreams: DemoUpstreams
) -> None:
    pods = await start_pods(demo_upstreams)
    listen = {"a": free_port(), "b": free_port()}
    boots = {n: static_bootstrap(n, free_port(), listen[n], pods) for n in listen}
    envoys = {n: envoy_factory(boots[n]) for n in listen}
    dead = f"http://{LOCALHOST}:{free_port()}"  # an announced Envoy that is gone: left out
    urls = [envoys["a"].admin_url, envoys["b"].admin_url, dead]
    provider = EnvoyStatsProvider(lambda: urls, timeout_s=2.0)
    t = target()
    try:
        r0 = await provider.read(t, 1.0)
        assert set(r0.origins) == {envoys["a"].admin_url, envoys["b"].admin_url}
        replies = [
            r
            for batch in await asyncio.gather(
                send_requests(chat(listen["a"]), 180, concurrency=6),
                send_requests(chat(listen["b"]), 120, concurrency=6),
            )
            for r in batch
        ]
        requests, errors = observed(replies)

        async def flushed() -> dict[str, Window] | None:
            windows = window_pair(r0, await provider.read(t, 2.0), t)
            done = all(
                windows[v].histograms.get("latency") is not None
                and windows[v].histograms["latency"].count == requests[v]
                for v in WEIGHTS
            )
            return windows if done else None

        # counters are live; histograms appear at Envoy's next stats flush (1 s)
        windows = await async_wait_for(flushed, 10.0, interval=0.2, what="a stats flush")
        r1 = await provider.read(t, 3.0)
        for v in WEIGHTS:
            w = windows[v]
            assert (w.requests, w.errors, w.error_classes["5xx"]) == (
                requests[v],
                errors[v],
                errors[v],
            )
            assert w.error_classes["timeout"] == w.error_classes["connect_fail"] == 0
            assert w.weight == WEIGHTS[v]
            h = w.histograms["latency"]
            assert h.bounds == (*(b / 1000 for b in UPSTREAM_RQ_TIME_BUCKETS_MS), math.inf)
            assert w.means["latency"].count == requests[v]

        # Envoy b restarts: its counters start again from zero, and the look is excluded
        envoys["b"].stop()
        envoys["b"] = envoy_factory(boots["b"])
        await send_requests(chat(listen["b"]), 10, concurrency=2)
        r2 = await provider.read(t, 4.0)
        windows2, reason = windows_between(r1, r2, t)
        assert windows2 == {}
        assert reason is not None
        assert reason.startswith(f"counter reset in {envoys['b'].admin_url}")
    finally:
        await provider.close()


requires_prometheus = pytest.mark.skipif(
    prometheus_binary() is None, reason="prometheus not installed (make prometheus)"
)

POD_500S = (
    'sum(max_over_time(sluice_demo_responses_total{service="{{service}}",'
    'version="{{version}}",code="500"}[{{interval}}])) or vector(0)'
)


@requires_prometheus
async def test_prometheus_provider_matches_what_clients_saw(
    envoy_factory: EnvoyFactory, demo_upstreams: DemoUpstreams
) -> None:
    pods = await start_pods(demo_upstreams)
    listen, admin = free_port(), free_port()
    envoy = envoy_factory(static_bootstrap("gw", admin, listen, pods))
    jobs = [
        ScrapeJob("envoy", [f"{LOCALHOST}:{admin}"], "/stats/prometheus"),
        *(
            ScrapeJob(
                f"pods-{v}", [f"{LOCALHOST}:{port}"], labels={"service": "chat", "version": v}
            )
            for v, port in pods.items()
        ),
    ]
    t = target(
        MetricSpec("errors", MetricKind.ERROR_RATE, 0.1, 0.05),
        MetricSpec("e2e", MetricKind.LATENCY, 0.1, 0.05, source="e2e"),
        # the cumulative count since the pods started (no request before the load)
        MetricSpec("pod 500s", MetricKind.ERROR_RATE, 0.1, 0.05, source="pod_500", query=POD_500S),
    )
    prometheus = PrometheusProcess(jobs).start()
    provider = PrometheusProvider(prometheus.url, timeout_s=5.0)
    try:
        await prometheus.wait_scraped_after(time.time())
        # Prometheus stamps samples with wall-clock time: t is Unix seconds
        r0 = await provider.read(t, time.time())
        assert set(r0.origins) == {
            f"job=envoy,instance={LOCALHOST}:{admin}",
            *(f"job=pods-{v},instance={LOCALHOST}:{p}" for v, p in pods.items()),
        }
        replies = await send_requests(chat(listen), 240, concurrency=6)
        requests, errors = observed(replies)
        await prometheus.wait_scraped_after(time.time())
        r1 = await provider.read(t, time.time())
        windows = window_pair(r0, r1, t)
        admin_counts = envoy.stats()
        for v in WEIGHTS:
            w = windows[v]
            assert (w.requests, w.errors) == (requests[v], errors[v])
            assert admin_counts[f"cluster.chat/{v}.upstream_rq_completed"] == requests[v]
            # the pods' own histogram counts the completions they answered with 200
            assert w.histograms["e2e"].count == requests[v] - errors[v]
            assert w.error_classes["pod_500"] == errors[v]
        assert r1.increments["v2"].error_classes["pod_500"] == errors["v2"]

        prometheus.stop()
        with pytest.raises(ProviderError, match="ConnectionError"):
            await provider.read(t, time.time())
    finally:
        await provider.close()
        prometheus.stop()

"""Smoke test of the harness: demo upstreams behind a statically configured Envoy."""

from __future__ import annotations

import pytest

from tests.integration.conftest import EnvoyFactory
from tests.integration.harness import (
    DemoUpstreams,
    WaitTimeout,
    free_port,
    send_requests,
    version_counts,
)

pytestmark = pytest.mark.integration

HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
    ".HttpConnectionManager"
)

STATIC_BOOTSTRAP = """
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: chat
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {hcm}
          stat_prefix: chat
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: chat
              domains: ["*"]
              routes:
              - match: {{prefix: "/", headers: [{{name: x-version, string_match: {{exact: v2}}}}]}}
                route: {{cluster: chat/v2}}
              - match: {{prefix: "/"}}
                route:
                  weighted_clusters:
                    clusters:
                    - {{name: chat/v1, weight: 50}}
                    - {{name: chat/v2, weight: 50}}
  clusters:
  - name: chat/v1
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: chat/v1
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {v1}}}}}}}
  - name: chat/v2
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: chat/v2
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {v2}}}}}}}
"""


async def test_requests_through_envoy_reach_the_right_upstream(
    envoy_factory: EnvoyFactory, demo_upstreams: DemoUpstreams
) -> None:
    upstreams = await demo_upstreams.start("v1", "v2")
    v1, v2 = upstreams.specs
    listen = free_port()
    envoy = envoy_factory(
        STATIC_BOOTSTRAP.format(hcm=HCM, admin=free_port(), listen=listen, v1=v1.port, v2=v2.port),
        start=False,
    )
    await envoy.await_ready()
    url = f"http://127.0.0.1:{listen}/v1/chat/completions"

    pinned = await send_requests(url, 20, lambda i: {"x-version": "v2"}, concurrency=4)
    assert {(r.status, r.version, r.pod) for r in pinned} == {(200, "v2", v2.pod)}

    split = await send_requests(url, 200, concurrency=8)
    counts = version_counts(split)
    assert sum(counts.values()) == 200
    assert set(counts) == {"v1", "v2"}  # 50/50: each missing has probability 2**-200
    assert {r.pod for r in split if r.version == "v1"} == {v1.pod}

    # The admin helpers see the same traffic and topology.
    clusters = envoy.clusters()
    assert {"chat/v1", "chat/v2"} <= set(clusters)
    assert [(h.address, h.port) for h in clusters["chat/v1"].hosts] == [("127.0.0.1", v1.port)]
    assert clusters["chat/v1"].hosts[0].healthy
    assert not clusters["chat/v1"].added_via_api
    stats = envoy.stats()
    assert stats["cluster.chat/v2.upstream_rq_200"] == 20 + counts["v2"]
    assert stats["http.chat.downstream_rq_2xx"] == 220
    dump = envoy.config_dump(resource="static_clusters")
    names = {c["cluster"]["name"] for c in dump["configs"]}
    assert names == {"chat/v1", "chat/v2"}
    served = sum(s.success for s in upstreams.states)
    assert served == 220


async def test_upstream_down_gives_errors_not_hangs(
    envoy_factory: EnvoyFactory, demo_upstreams: DemoUpstreams
) -> None:
    upstreams = await demo_upstreams.start("v1")
    v1 = upstreams.specs[0]
    listen = free_port()
    envoy = envoy_factory(
        STATIC_BOOTSTRAP.format(
            hcm=HCM, admin=free_port(), listen=listen, v1=v1.port, v2=free_port()
        ),
        start=False,
    )
    await envoy.await_ready()
    replies = await send_requests(
        f"http://127.0.0.1:{listen}/", 5, lambda i: {"x-version": "v2"}, method="GET"
    )
    assert [r.status for r in replies] == [503] * 5
    assert envoy.wait_for(lambda: envoy.stat("cluster.chat/v2.upstream_cx_connect_fail") >= 5, 5)


def test_bad_bootstrap_fails_fast_with_the_log(envoy_factory: EnvoyFactory) -> None:
    bootstrap = f"""
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {free_port()}}}}}
static_resources:
  clusters:
  - name: broken
    type: NOT_A_TYPE
"""
    with pytest.raises(RuntimeError, match="envoy exited with") as info:
        envoy_factory(bootstrap)
    assert "NOT_A_TYPE" in str(info.value)


def test_wait_for_reports_what_it_waited_for() -> None:
    from tests.integration.harness import wait_for

    with pytest.raises(WaitTimeout, match="the impossible; last value: 0"):
        wait_for(lambda: 0, 0.1, what="the impossible")

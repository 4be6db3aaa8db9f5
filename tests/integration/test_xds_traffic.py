"""Traffic through a real Envoy fed by Sluice, over SotW and Delta ADS.

- the observed split matches the weights (binomial 99.9 % interval);
- with a hash key, a key always reaches the same pod, and a key on the canary
  stays there while the canary weight grows (monotone version choice);
- endpoints join and leave ``ring_hash`` and ``maglev`` clusters under
  traffic with no failed request (envoy #45212: stale rings after EDS
  membership changes on hashed clusters).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from scipy.stats import binom

from tests.integration.conftest import EnvoyFactory
from tests.integration.harness import DemoUpstreams, free_port, send_requests
from tests.integration.xds_env import (
    MODES,
    ConfigDir,
    Ep,
    InProcessControlPlane,
    TrafficLoop,
    chat_url,
    cluster_hosts,
    route_weights,
    service_doc,
    start_envoy,
    start_one_per_port,
    traffic,
    ver,
    wait_serving,
    wanted_weights,
    xds_trouble,
)

pytestmark = pytest.mark.integration

SPLIT_REQUESTS = 600
CONFIDENCE = 0.999


def binomial_interval(n: int, p: float) -> tuple[float, float]:
    lo, hi = binom.interval(CONFIDENCE, n, p)
    return float(lo), float(hi)


@MODES
async def test_traffic_split_matches_weights(
    delta: bool, tmp_path: Path, envoy_factory: EnvoyFactory, demo_upstreams: DemoUpstreams
) -> None:
    v1, v2 = (await demo_upstreams.start("v1", "v2")).specs
    listen = free_port()
    config = ConfigDir(tmp_path / "conf")
    config.write(service_doc("chat", listen, [ver("v1", 80, v1.port), ver("v2", 20, v2.port)]))
    async with InProcessControlPlane(config) as cp:
        envoy = await start_envoy(envoy_factory, "split", cp.xds_port, delta=delta)
        await wait_serving(chat_url(listen))
        await cp.wait_synced("split")

        replies = await send_requests(chat_url(listen), SPLIT_REQUESTS, concurrency=8)
        assert xds_trouble(envoy) == {}

    assert [r for r in replies if r.status != 200] == []
    canary = sum(r.version == "v2" for r in replies)
    assert canary + sum(r.version == "v1" for r in replies) == SPLIT_REQUESTS
    lo, hi = binomial_interval(SPLIT_REQUESTS, 0.20)
    print(f"{canary}/{SPLIT_REQUESTS} on the 20 % canary; 99.9 % interval [{lo:.0f}, {hi:.0f}]")
    assert lo <= canary <= hi, f"{canary}/{SPLIT_REQUESTS} on the 20 % canary"
    # The check has power: a clearly wrong split (10 % or 50 %) has a disjoint
    # interval, so Envoy running the wrong weights would have failed it.
    for wrong in (0.10, 0.50):
        wlo, whi = binomial_interval(SPLIT_REQUESTS, wrong)
        assert whi < lo or wlo > hi
        assert not wlo <= canary <= whi


@MODES
async def test_hash_key_is_sticky_and_canary_growth_is_monotone(
    delta: bool, tmp_path: Path, envoy_factory: EnvoyFactory, demo_upstreams: DemoUpstreams
) -> None:
    base = [s.port for s in (await demo_upstreams.start("base", "base")).specs]
    canary = [s.port for s in (await demo_upstreams.start("canary", "canary")).specs]
    listen = free_port()
    url = chat_url(listen)
    config = ConfigDir(tmp_path / "conf")

    def write(canary_weight: int) -> None:
        # The weight total stays 100 and the version order stays fixed, so
        # the canary's share of the hash space only grows.
        versions = [ver("base", 100 - canary_weight, *base), ver("canary", canary_weight, *canary)]
        config.write(
            service_doc("chat", listen, versions, policy="maglev", hash_header="x-session-id")
        )

    keys = [f"session-{i}" for i in range(200)]

    async def pods_per_key(rounds: int) -> dict[str, set[tuple[str | None, str | None]]]:
        replies = await send_requests(
            url, rounds * len(keys), lambda i: {"x-session-id": keys[i % len(keys)]}, concurrency=8
        )
        assert [r for r in replies if r.status != 200] == []
        seen: dict[str, set[tuple[str | None, str | None]]] = {k: set() for k in keys}
        for i, r in enumerate(replies):
            seen[keys[i % len(keys)]].add((r.version, r.pod))
        return seen

    write(20)
    async with InProcessControlPlane(config) as cp:
        envoy = await start_envoy(envoy_factory, "sticky", cp.xds_port, delta=delta)
        await wait_serving(url)
        await cp.wait_synced("sticky")

        before = await pods_per_key(3)
        # The same key always reaches the same pod (so the same version).
        assert {k: s for k, s in before.items() if len(s) != 1} == {}
        first = {k: next(iter(s)) for k, s in before.items()}
        assert {pod for _, pod in first.values()} == {f"127.0.0.1:{p}" for p in base + canary}

        write(50)
        want = wanted_weights("chat", {"base": 50, "canary": 50})
        await envoy.async_wait_for(lambda: route_weights(envoy, "chat") == want, 10, what="50/50")
        await cp.wait_synced("sticky")

        after = await pods_per_key(2)
        assert xds_trouble(envoy) == {}

    assert {k: s for k, s in after.items() if len(s) != 1} == {}
    second = {k: next(iter(s)) for k, s in after.items()}
    back = [k for k in keys if first[k][0] == "canary" and second[k][0] == "base"]
    moved = [k for k in keys if first[k][0] == "base" and second[k][0] == "canary"]
    on_canary = sum(v == "canary" for v, _ in first.values())
    print(f"{on_canary}/{len(keys)} keys on the canary at 20 %, {len(moved)} moved to it at 50 %")
    assert back == [], f"{len(back)} keys moved from the canary back to the baseline"
    assert moved, "no key moved to the canary when its weight went from 20 to 50"
    # Keys whose version did not change keep their pod (the clusters did not change).
    assert [k for k in keys if first[k][0] == second[k][0] and first[k] != second[k]] == []


@MODES
@pytest.mark.parametrize("policy", ["ring_hash", "maglev"])
async def test_endpoints_join_and_leave_hashed_cluster_under_traffic(
    policy: str,
    delta: bool,
    tmp_path: Path,
    envoy_factory: EnvoyFactory,
    demo_upstreams: DemoUpstreams,
) -> None:
    """Join, join, drain, remove (then stop the pod), remove (then stop): zero failures.

    Make-before-break on the way out: the pod is stopped only once Envoy no
    longer lists it, as a terminating Kubernetes pod would be after its
    endpoint is removed. Both plain removal and drain-then-remove are exercised.
    The pool goes 2 → 3 → 4 → 3 → 2 pods, so the pool-size bucket (and with it
    the Cluster resource: ring / table size) changes twice under traffic.
    """
    pods = await start_one_per_port(demo_upstreams, "v1", 4)
    ports = [p.specs[0].port for p in pods]
    listen = free_port()
    url = chat_url(listen)
    config = ConfigDir(tmp_path / "conf")

    def write(*endpoints: int | Ep) -> None:
        config.write(
            service_doc(
                "chat",
                listen,
                [ver("v1", 100, *endpoints)],
                policy=policy,
                hash_header="x-session-id",
            )
        )

    write(ports[0], ports[1])
    async with InProcessControlPlane(config) as cp:
        envoy = await start_envoy(envoy_factory, "members", cp.xds_port, delta=delta)
        await wait_serving(url)
        await cp.wait_synced("members")

        async def hosts_become(expected: set[int], what: str) -> float:
            await envoy.async_wait_for(
                lambda: cluster_hosts(envoy, "chat", "v1") == expected, 10, what=what
            )
            return time.monotonic()

        def draining(port: int) -> bool:
            cluster = envoy.clusters()["chat/v1"]
            return any(
                h.port == port and h.health.get("eds_health_status") == "DRAINING"
                for h in cluster.hosts
            )

        async def gets_traffic(port: int, since: float) -> None:
            pod = f"127.0.0.1:{port}"
            await envoy.async_wait_for(
                lambda: any(r.pod == pod for r in loop.since(since)), 5, what=f"traffic on {pod}"
            )

        def no_traffic(port: int, since: float) -> None:
            late = [r for r in loop.since(since + 0.3) if r.pod == f"127.0.0.1:{port}"]
            assert late == [], f"{len(late)} requests reached {port} after it left"

        loop = TrafficLoop(
            url,
            headers_fn=lambda i: {"x-session-id": f"user-{i}"},
            concurrency=4,
            rate=300,
            max_requests=3_000,
            max_seconds=15,
        )
        async with traffic(loop):
            await asyncio.sleep(0.3)
            write(*ports[:3])  # join (bucket 2 → 4: the Cluster changes too)
            t = await hosts_become(set(ports[:3]), "3 hosts")
            await gets_traffic(ports[2], t)

            write(*ports)  # join
            t = await hosts_become(set(ports), "4 hosts")
            await gets_traffic(ports[3], t)

            write(Ep(ports[0], "draining"), *ports[1:])  # drain, then remove
            await envoy.async_wait_for(lambda: draining(ports[0]), 10, what="draining")
            t_drained = time.monotonic()
            await asyncio.sleep(0.5)
            write(*ports[1:])
            t = await hosts_become(set(ports[1:]), "3 hosts after removal")
            await pods[0].close()
            await asyncio.sleep(0.5)
            no_traffic(ports[0], t_drained)

            write(*ports[2:])  # plain removal (bucket 4 → 2)
            t = await hosts_become(set(ports[2:]), "2 hosts")
            await pods[1].close()
            await asyncio.sleep(0.7)
            no_traffic(ports[1], t)
            last_change = t
        await cp.wait_synced("members")
        assert xds_trouble(envoy) == {}

    replies = [r for _, r in loop.replies]
    failures = loop.failures()
    print(f"{len(replies)} requests, {len(failures)} failed")
    assert failures == [], (
        f"{len(failures)} of {len(replies)} requests failed: "
        f"{sorted({(r.status, r.error) for r in failures}, key=str)[:5]}"
    )
    assert len(replies) >= 200, f"only {len(replies)} requests ran"
    # The traffic lasted past the last membership change (not cut short by a cap).
    assert len(loop.since(last_change)) >= 50
    assert loop.last_at > last_change + 0.5
    assert {r.pod for r in replies} == {f"127.0.0.1:{p}" for p in ports}

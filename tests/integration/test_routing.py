"""Routing policies against a real Envoy and simulated pods.

Each test asserts what Envoy does (the weights it runs, which pod answered,
status codes), never how fast; every wait is bounded.
"""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import EnvoyFactory
from tests.integration.harness import async_wait_for, send_requests
from tests.integration.routing_env import by_pod, pod, routing_world
from tests.integration.xds_env import TrafficLoop, traffic

FAST_HEALTH = {"healthCheck": {"interval": "500ms", "timeout": "400ms", "healthyThreshold": 1,
                               "unhealthyThreshold": 1}}


async def test_response_time_lowers_a_slowed_pod_and_restores_it(
        tmp_path: Path, envoy_factory: EnvoyFactory) -> None:
    spec = {"loadBalancing": {"policy": "response_time", "responseTime": {"interval": "500ms"}}}
    async with routing_world(tmp_path, envoy_factory, [pod(seed=i) for i in range(3)],
                             spec) as w:
        slow, others = w.port_of(0), [w.port_of(1), w.port_of(2)]
        async with traffic(TrafficLoop(w.url, concurrency=6, rate=60, max_seconds=60,
                                       max_requests=10_000)):
            w.pods[0].set_faults(extra_latency_ms=150)

            def lowered() -> dict[int, int] | None:
                weights = w.weights()
                low = all(weights.get(slow, 0) * 3 < weights.get(p, 0) for p in others)
                return weights if low else None

            await w.envoy.async_wait_for(lowered, 20, what="the slowed pod's weight lowered")
            states = w.sluice.app.routing.states["chat"]
            assert {states[f"127.0.0.1:{p}"].value for p in others} == {"ok"}
            w.pods[0].set_faults(extra_latency_ms=0)

            def restored() -> dict[int, int] | None:
                weights = w.weights()
                mean = sum(weights[p] for p in others) / 2
                return weights if weights.get(slow, 0) >= 0.6 * mean else None

            await w.envoy.async_wait_for(restored, 40, what="the pod's weight restored")
        assert await w.sluice.metric("sluice_routing_endpoint_weight") > 0


async def test_load_report_moves_traffic_away_from_a_highly_utilized_pod(
        tmp_path: Path, envoy_factory: EnvoyFactory) -> None:
    spec = {"loadBalancing": {"policy": "load_report",
                              "loadReport": {"blackoutPeriod": "0s",
                                             "weightUpdatePeriod": "200ms"}}}
    async with routing_world(tmp_path, envoy_factory, [pod(seed=1), pod(seed=2)], spec) as w:
        busy = f"127.0.0.1:{w.port_of(0)}"
        # Requests wait 200 ms on one pod: its in-flight count, so the utilization its
        # ORCA reports carry, is several times the other's at the same request rate.
        w.pods[0].set_faults(extra_latency_ms=200)
        await send_requests(w.url, 60, concurrency=6)  # reports flow, weights settle
        replies = await send_requests(w.url, 240, concurrency=6, overall_timeout=60)
        counts = by_pod(replies)
        assert sum(counts.values()) == 240
        assert counts[busy] < 0.3 * 240, counts
        # Envoy consumed the reports; the client does not see them.
        assert all(r.status == 200 for r in replies)


async def test_hybrid_keeps_keyed_requests_on_their_pod_until_the_bound(
        tmp_path: Path, envoy_factory: EnvoyFactory) -> None:
    spec = {"loadBalancing": {"policy": "hybrid"}}  # keyed on x-session-id, bound 1.25
    async with routing_world(tmp_path, envoy_factory, [pod(seed=i) for i in range(4)],
                             spec) as w:
        homes = {}
        for user in ("alice", "bob", "carol"):
            replies = await send_requests(w.url, 12, lambda i, u=user: {"x-session-id": u},
                                          concurrency=1)
            pods = by_pod(replies)
            assert len(pods) == 1 and sum(pods.values()) == 12, pods
            homes[user] = next(iter(pods))
        # Unkeyed requests go by least request: every pod takes some.
        assert len(by_pod(await send_requests(w.url, 80, concurrency=4))) == 4
        # Many in flight with one key: the home pod takes its bounded share (125 % of
        # the mean in-flight count), the rest spill to other pods.
        for p in w.pods:
            p.set_faults(extra_latency_ms=300)
        loop = TrafficLoop(w.url, headers_fn=lambda i: {"x-session-id": "alice"},
                           concurrency=16, rate=40, max_seconds=3)
        async with traffic(loop):
            await async_wait_for(lambda: len(loop.replies) >= 60, 15, what="keyed requests")
        spread = by_pod([r for _, r in loop.replies])
        assert not loop.failures()
        assert spread.most_common(1)[0][0] == homes["alice"], spread
        assert spread[homes["alice"]] < 0.8 * sum(spread.values()) and len(spread) >= 3, spread


async def test_priority_failover_and_failback(tmp_path: Path,
                                              envoy_factory: EnvoyFactory) -> None:
    spec = {**FAST_HEALTH, "failover": {"overprovisioningFactor": 140}}
    priorities = [{"priority": 0}, {"priority": 0}, {"priority": 1}]
    async with routing_world(tmp_path, envoy_factory, [pod(seed=i) for i in range(3)], spec,
                             priorities) as w:
        backup = f"127.0.0.1:{w.port_of(2)}"
        assert backup not in by_pod(await send_requests(w.url, 30, concurrency=3))
        for p in w.pods[:2]:
            p.set_healthy(False)

        async def failed_over() -> bool:
            replies = await send_requests(w.url, 10, concurrency=2)
            return by_pod(replies) == {backup: 10}

        await async_wait_for(failed_over, 15, interval=0.2, what="all traffic on priority 1")
        for p in w.pods[:2]:
            p.set_healthy(True)

        async def failed_back() -> bool:
            return backup not in by_pod(await send_requests(w.url, 10, concurrency=2))

        await async_wait_for(failed_back, 15, interval=0.2, what="traffic back on priority 0")


async def test_a_crashed_pod_costs_at_most_its_requests_in_flight(
        tmp_path: Path, envoy_factory: EnvoyFactory) -> None:
    spec = {**FAST_HEALTH,
            "outlierDetection": {"consecutive5xx": 3, "interval": "1s",
                                 "baseEjectionTime": "30s", "maxEjectionPercent": 100},
            "retries": {"retryOn": ["connect-failure", "refused-stream", "reset"], "attempts": 2}}
    async with routing_world(tmp_path, envoy_factory, [pod(seed=i) for i in range(3)],
                             spec) as w:
        for p in w.pods:
            p.set_faults(extra_latency_ms=100)  # requests overlap the crash
        loop = TrafficLoop(w.url, concurrency=8, rate=80, max_seconds=30, max_requests=10_000)
        async with traffic(loop):
            await async_wait_for(lambda: len(loop.replies) > 40, 10, what="traffic flowing")
            in_flight = w.pods[0].engine.in_flight
            await w.pods[0].crash()
            start = len(loop.replies)
            await async_wait_for(lambda: len(loop.replies) > start + 150, 20,
                                 what="traffic after the crash")
        failed = loop.failures()
        assert len(failed) <= in_flight, (in_flight, failed[:5])
        crashed = f"127.0.0.1:{w.port_of(0)}"
        assert crashed not in {r.pod for r in loop.since(loop.last_at - 1.0)}


async def test_the_batch_cap_rises_and_falls_with_online_load(
        tmp_path: Path, envoy_factory: EnvoyFactory) -> None:
    spec = {"offline": {"header": {"name": "x-priority", "value": "batch"},
                        "concurrencyPerPod": 8, "interval": "500ms", "retryAfter": "3s"}}
    async with routing_world(tmp_path, envoy_factory, [pod(seed=1), pod(seed=2)], spec) as w:
        controller = w.sluice.app.routing

        def cap() -> int:
            return controller.caps.get("chat", (0, 0))[0]

        await async_wait_for(lambda: cap() == 16, 10, what="the idle fleet's cap")
        # Online requests that stay in flight (1 s each, ~12 at a time) take slots.
        for p in w.pods:
            p.set_faults(extra_latency_ms=1000)
        loop = TrafficLoop(w.url, concurrency=12, rate=12, max_seconds=40, max_requests=10_000)
        async with traffic(loop):
            await async_wait_for(lambda: cap() <= 8, 15, what="the cap falling under load")
            low = cap()

            def envoy_cap() -> bool:
                dump = w.envoy.config_dump(resource="dynamic_active_clusters")
                for c in dump.get("configs", []):
                    cluster = c.get("cluster", {})
                    if cluster.get("name") == "chat/v1/batch":
                        limits = cluster["circuit_breakers"]["thresholds"][0]
                        return int(limits.get("max_requests", 0)) == low
                return False

            await w.envoy.async_wait_for(envoy_cap, 10, what="Envoy running the lower cap")
            # Beyond the cap, batch requests are refused at once with Retry-After.
            replies = await send_requests(w.url, low + 10, lambda i: {"x-priority": "batch"},
                                          concurrency=low + 10, request_timeout=15,
                                          overall_timeout=30)
            refused = [r for r in replies if r.status == 503]
            assert len(refused) >= 10 - 1, [r.status for r in replies]
            assert {r.retry_after for r in refused} == {"3"}, refused
        await async_wait_for(lambda: cap() == 16, 15, what="the cap rising again")


async def test_each_version_has_the_batch_cap_of_its_own_pods(
        tmp_path: Path, envoy_factory: EnvoyFactory) -> None:
    """A stable version of two pods and a canary of one: Envoy runs each version's batch
    cluster with its own pods' cap, so the canary's pod never takes the fleet's."""
    spec = {"offline": {"header": {"name": "x-priority", "value": "batch"},
                        "concurrencyPerPod": 4, "interval": "500ms", "retryAfter": "2s"}}
    async with routing_world(tmp_path, envoy_factory, [pod(seed=i) for i in range(3)], spec,
                             versions=[("v1", 90, [0, 1]), ("v2", 10, [2])]) as w:
        store = w.sluice.app.store

        def caps() -> tuple[tuple[str, int], ...]:
            routing = store.routing("chat")
            return routing.batch_caps if routing is not None else ()

        await async_wait_for(lambda: caps() == (("v1", 8), ("v2", 4)), 10,
                             what="a cap per version")

        def envoy_caps() -> dict[str, int]:
            dump = w.envoy.config_dump(resource="dynamic_active_clusters")
            found = {}
            for c in dump.get("configs", []):
                cluster = c.get("cluster", {})
                if cluster.get("name", "").endswith("/batch"):
                    limits = cluster["circuit_breakers"]["thresholds"][0]
                    found[cluster["name"]] = int(limits.get("max_requests", 0))
            return found

        await w.envoy.async_wait_for(
            lambda: envoy_caps() == {"chat/v1/batch": 8, "chat/v2/batch": 4}, 10,
            what="Envoy running a cap per version")
        assert w.sluice.app.routing.caps["chat"] == (12, 12)

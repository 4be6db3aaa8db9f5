"""Two replicas, one leader: the leader cut off mid-canary, the follower takes over and the
experiment goes on at the same step with the same weights; status written and read back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from controlplane.kube.client import EXPERIMENTS, Kube
from controlplane.kube.replicas import config_map_name, fresh_counts
from controlplane.model import RoutingState
from tests.kube.apiserver import ApiServer
from tests.kube.env import NS, Replica, experiment, model_service
from tests.kube.test_informer import until
from tests.unit.rollout.fakes import FakeSource

STEPS = [{"weight": 10, "soak": "500ms"}, {"weight": 30, "soak": "5s"},
         {"weight": 60, "soak": "500ms"}]


def canary() -> dict[str, Any]:
    return experiment("canary", service="chat", baseline="v1", candidate="v2",
                      interval="200ms", steps=STEPS, stallBudget="5m", metrics=[
                          {"name": "errors", "kind": "error_rate", "harmMargin": 0.25,
                           "nonInferiorityMargin": 0.25, "minEffect": 0.02,
                           "minSamples": 100}])


def fake_metrics(replica: Replica) -> None:
    source = FakeSource(replica.app.store, per_read=4000)
    replica.app.rollouts.deps.provider_for = lambda e: source


def status_of(kube: Kube) -> dict[str, Any]:
    found = kube.get(EXPERIMENTS, NS, "canary")
    return dict((found or {}).get("status") or {})


def view(replica: Replica) -> dict[str, Any] | None:
    return replica.app.rollouts.view("canary")


async def test_the_follower_takes_over_mid_canary(apiserver: ApiServer) -> None:
    apiserver.put(model_service("chat", 10900, [
        {"name": "v1", "weight": 100, "endpoints": [{"address": "10.0.0.1", "port": 80}]},
        {"name": "v2", "weight": 0, "endpoints": [{"address": "10.0.0.2", "port": 80}]}]))
    a_url, b_url = apiserver.port(), apiserver.port()
    async with Replica(a_url, "a") as a:
        fake_metrics(a)
        await until(lambda: a.leading, 10)
        async with Replica(b_url, "b") as b:
            fake_metrics(b)
            apiserver.put(canary())
            await until(lambda: (v := view(a)) is not None and v["step"] == 1
                        and v["phase"] == "Progressing", 30)
            assert not b.leading and view(b) is None  # followers run no experiment ...
            # ... but serve the same traffic, with the same resource versions.
            await until(lambda: b.weights() == a.weights() == {"v1": 70, "v2": 30}, 10)
            await until(lambda: b.app.cache.snapshot.version == a.app.cache.snapshot.version,
                        10)
            before = view(a)
            assert before is not None
            apiserver.block(a_url)  # the leader is cut off from the API server
            await until(lambda: b.leading and view(b) is not None, 15)
            after = view(b)
            assert after is not None
            assert (after["run"], after["step"]) == (before["run"], 1)
            assert b.weights() == {"v1": 70, "v2": 30}
            await until(lambda: not a.leading, 5)  # it stood down, no rollback
            assert a.weights() == {"v1": 70, "v2": 30}
            await until(lambda: (v := view(b)) is not None and v["phase"] == "Succeeded", 40)
            assert b.weights() == {"v1": 0, "v2": 100}
            apiserver.block(a_url, False)
            await until(lambda: a.weights() == {"v1": 0, "v2": 100}, 10)  # it mirrors b

            kube = Kube.at(apiserver.url)  # read back as a client does
            await until(lambda: status_of(kube).get("phase") == "Succeeded", 10)
            kube.close()
            status = apiserver.get("experiments", NS, "canary")["status"]  # type: ignore[index]
            assert status["weightsSummary"] == "v1=0 v2=100"
            assert status["stepSummary"].startswith("3/3")
            assert status["lastDecision"]["to"] == "Succeeded"
            assert status["run"] == before["run"]
            conditions = {c["type"]: c["status"] for c in status["conditions"]}
            assert conditions == {"ConfigValid": "True", "Progressing": "False",
                                  "Complete": "True"}
            service = apiserver.get("modelservices", NS, "chat")["status"]  # type: ignore[index]
            assert service["weightsSetBy"] == "experiment/canary"
            decisions = b.app.rollouts.decisions("canary", before["run"])
            assert [d["to"] for d in decisions][:2] == ["Progressing", "Progressing"]


async def test_a_forbidden_watch_is_on_readyz_and_the_rest_serves(
        apiserver: ApiServer) -> None:
    import aiohttp

    apiserver.forbid("watch", "pods")
    apiserver.forbid("list", "pods")
    apiserver.put(model_service("chat", 10901, [{"name": "v1", "weight": 100, "endpoints": {
        "kubernetes": {"selector": {"app": "chat"}, "port": 8000}}}]))
    apiserver.put(model_service("embed", 10902, [{"name": "v1", "weight": 100, "endpoints": [
        {"address": "10.0.0.5", "port": 80}]}]))
    replica = Replica(apiserver.url, "r")
    stop = replica._stop
    task = asyncio.create_task(replica.app.run(stop))
    try:
        await until(lambda: replica.app.admin_port and replica.app.installed_revision, 15)
        url = f"http://127.0.0.1:{replica.app.admin_port}/readyz"

        async def readyz() -> tuple[int, str]:
            async with aiohttp.ClientSession() as http, http.get(url) as r:
                return r.status, await r.text()

        deadline = asyncio.get_running_loop().time() + 15
        while "forbidden by RBAC" not in (got := await readyz())[1]:
            assert asyncio.get_running_loop().time() < deadline, got
            await asyncio.sleep(0.1)
        assert got[0] == 503 and "cannot watch pods" in got[1]
        state = replica.app.store.state
        assert [e.address for e in state.service("embed").version("v1").endpoints] == \
            ["10.0.0.5"]
        snapshot = replica.app.cache.snapshot
        assert any("embed" in name for t in snapshot.types.values() for name in t.resources)
    finally:
        stop.set()
        await task


async def test_a_follower_hands_experiment_requests_to_the_leader(
        apiserver: ApiServer, tmp_path: Path) -> None:
    import aiohttp

    token = "replica-token-0123456789"
    (tmp_path / "token").write_text(f"ops {token}\n")
    apiserver.put(model_service("chat", 10903, [
        {"name": "v1", "weight": 100, "endpoints": [{"address": "10.0.0.1", "port": 80}]},
        {"name": "v2", "weight": 0, "endpoints": [{"address": "10.0.0.2", "port": 80}]}]))
    async with Replica(apiserver.url, "a", str(tmp_path / "token")) as a:
        fake_metrics(a)
        await until(lambda: a.leading, 10)
        async with Replica(apiserver.url, "b", str(tmp_path / "token")) as b:
            apiserver.put(canary())
            await until(lambda: (v := view(a)) is not None and v["phase"] == "Progressing", 30)
            await until(lambda: b.app.kube is not None and b.app.kube.leader()[1] is not None,
                        10)
            follower = f"http://127.0.0.1:{b.app.admin_port}"
            auth = {"Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{follower}/api/v1/experiments/canary") as r:
                    assert r.status == 200
                    body = await r.json()
                assert body["name"] == "canary" and body["run"] == view(a)["run"]  # type: ignore[index]
                async with http.post(f"{follower}/api/v1/experiments/canary/pause") as r:
                    assert r.status == 401  # the follower checks the token too
                async with http.post(f"{follower}/api/v1/experiments/canary/pause",
                                     headers=auth) as r:
                    assert r.status == 200, await r.text()
                assert view(a)["phase"] == "Paused"  # type: ignore[index]
                async with http.get(f"{follower}/api/v1/audit", headers=auth) as r:
                    entries = (await r.json())["entries"]
                assert [(e["action"], e["who"]) for e in entries][-1] == ("pause", "ops")
                async with http.get(f"{follower}/api/v1/experiments",
                                    headers={"X-Sluice-Forwarded-By": "x"}) as r:
                    assert r.status == 503  # never forwarded twice
                async with http.get(f"{follower}/api/v1/services") as r:
                    assert r.status == 200  # everything else is the follower's own


async def test_followers_push_the_leaders_endpoint_weights(apiserver: ApiServer) -> None:
    """Only the leader computes routing weights (from its proxies' load reports); the
    followers take them, so every replica serves the same resource versions."""
    apiserver.put(model_service("chat", 10904, [
        {"name": "v1", "weight": 100, "endpoints": [{"address": "10.0.0.1", "port": 80},
                                                    {"address": "10.0.0.3", "port": 80}]}]))
    async with Replica(apiserver.url, "a") as a:
        await until(lambda: a.leading, 10)
        async with Replica(apiserver.url, "b") as b:
            await until(lambda: a.app.routing.active and not b.app.routing.active, 10)
            routing = RoutingState((("10.0.0.1:80", 300), ("10.0.0.3:80", 100)), 7, (("v1", 7),))
            a.app.store.set_routing("chat", routing)
            await until(lambda: b.app.store.routing("chat") == routing, 10)
            await until(lambda: b.app.cache.snapshot.version == a.app.cache.snapshot.version,
                        10)
            a.app.store.set_routing("chat", None)
            await until(lambda: b.app.store.routing("chat") is None, 10)


async def test_the_batch_cap_divides_by_every_replicas_proxies(apiserver: ApiServer) -> None:
    """Followers' proxies enforce the leader's per-proxy cap too, so the leader counts
    them; a replica that stops stops counting."""
    async with Replica(apiserver.url, "a") as a:
        await until(lambda: a.leading, 10)
        a.app.proxy_nodes = lambda: {"gw-1", "gw-2"}  # type: ignore[method-assign]
        async with Replica(apiserver.url, "b") as b:
            b.app.proxy_nodes = lambda: {"gw-3", "gw-4", "gw-5"}  # type: ignore[method-assign]
            await until(lambda: a.app.routing.proxies() == 5, 10)
            await until(lambda: b.app.routing.proxies() == 5, 10)
        await until(lambda: a.app.routing.proxies() == 2, 10)


def test_only_fresh_well_formed_counts_of_other_replicas_count() -> None:
    def cm(name: str, **data: str) -> dict[str, Any]:
        return {"metadata": {"name": name}, "data": data}

    objects = {"a": cm("sluice-replica-a", proxies="4", at="100"),
               "b": cm("sluice-replica-b", proxies="3", at="95"),
               "old": cm("sluice-replica-old", proxies="9", at="60"),
               "bad": cm("sluice-replica-bad", proxies="many", at="100"),
               "neg": cm("sluice-replica-neg", proxies="-1", at="100")}
    assert fresh_counts(objects, "sluice-replica-a", now=100.0) == {"sluice-replica-b": 3}
    assert config_map_name("Pod_Name.1") == "sluice-replica-pod-name.1"
    assert config_map_name("___") == "sluice-replica-replica"

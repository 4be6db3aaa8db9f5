"""Leader election on a Lease, and the journal in ConfigMaps that a new leader reads."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.kube.client import CONFIG_MAPS, LEASES, Kube
from controlplane.kube.journal import KubeStateStore
from controlplane.kube.leader import LeaderElector, LeaseSettings
from controlplane.rollout.journal import LOOK, OUTCOME, RUN, Journal
from controlplane.state import StateError
from tests.kube.apiserver import ApiServer
from tests.kube.test_informer import until

FAST = {"lease_duration_s": 1.0, "renew_deadline_s": 0.6, "retry_period_s": 0.1}


class Candidate:
    def __init__(self, url: str, identity: str) -> None:
        self.kube = Kube.at(url, timeout=(0.5, 1.0))
        self.elector = LeaderElector(self.kube, LeaseSettings("sluice", identity, **FAST))
        self.terms: list[str] = []
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        self.terms.append("lead")

    async def _stop(self) -> None:
        self.terms.append("follow")

    def run(self) -> Candidate:
        self.task = asyncio.create_task(self.elector.run(self.stop, self._start, self._stop))
        return self

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await self.task
        self.kube.close()


async def test_one_leads_the_other_takes_over_when_it_is_cut_off(
        apiserver: ApiServer) -> None:
    a_url, b_url = apiserver.port(), apiserver.port()
    a = Candidate(a_url, "a").run()
    await until(lambda: a.elector.leading)
    b = Candidate(b_url, "b").run()
    try:
        await asyncio.sleep(0.5)
        assert not b.elector.leading and b.elector.holder == "a"
        apiserver.block(a_url)
        await until(lambda: b.elector.leading, timeout=5)
        assert not a.elector.leading and a.terms == ["lead", "follow"]  # a stood down
        lease = apiserver.get("leases", "sluice", "sluice-leader")
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
        apiserver.block(a_url, False)
        await asyncio.sleep(0.5)
        assert not a.elector.leading  # b renews: a stays a follower
    finally:
        await a.close()
        await b.close()


async def test_a_leader_that_stops_hands_over_at_once(apiserver: ApiServer) -> None:
    a = Candidate(apiserver.url, "a").run()
    await until(lambda: a.elector.leading)
    b = Candidate(apiserver.url, "b").run()
    await asyncio.sleep(0.3)
    await a.close()  # releases the Lease
    lease = apiserver.get("leases", "sluice", "sluice-leader")
    assert lease is not None and lease["spec"]["holderIdentity"] == ""
    try:
        await until(lambda: b.elector.leading, timeout=0.5)  # well before the 1 s lease
    finally:
        await b.close()


def test_lease_settings_are_consistent() -> None:
    with pytest.raises(ValueError):
        LeaseSettings("ns", "me", lease_duration_s=5, renew_deadline_s=6)


def test_the_journal_survives_in_config_maps(apiserver: ApiServer, kube: Kube) -> None:
    store = KubeStateStore(kube, "sluice", chunk_bytes=300)
    journal = Journal(store)
    for i in range(6):
        assert journal.append(LOOK, "canary", {"run": "r1", "t": i, "pad": "x" * 60})
    assert journal.put(RUN, "canary", {"state": {"phase": "Progressing", "step": 1}})
    assert journal.put(OUTCOME, "chat", {"override": {"weights": {"v1": 0, "v2": 100}}})
    journal.delete(OUTCOME, "chat")
    chunks = [o for (p, ns, name), o in apiserver.objects.items()
              if p == "configmaps" and name.startswith("sluice-e-")]
    assert len(chunks) >= 2  # the looks were split into chunks
    fresh = KubeStateStore(Kube.at(apiserver.url), "sluice")
    fresh.load()  # what a new leader sees
    restored = Journal(fresh)
    assert restored.get(RUN, "canary") == {"state": {"phase": "Progressing", "step": 1}}
    assert restored.get(OUTCOME, "chat") is None
    assert [e["t"] for e in restored.events(LOOK, "canary", "r1")] == list(range(6))
    restored.append(LOOK, "canary", {"run": "r1", "t": 6})
    restored.put(RUN, "canary", {"state": {"phase": "Progressing", "step": 2}})
    # The old leader writes with what it read before: 409, refused, not overwritten.
    with pytest.raises(StateError, match="409"):
        store.put(RUN, "canary", {"state": {"phase": "RolledBack"}})
    cm = apiserver.get("configmaps", "sluice", "sluice-r-experiment-canary")
    assert cm is not None and '"step":2' in cm["data"]["value"]
    assert kube.list(CONFIG_MAPS, "sluice")["items"] and kube.get(LEASES, "sluice", "x") is None

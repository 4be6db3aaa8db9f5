"""A connect storm against the real control plane, in-process.

300 simulated proxies (half SotW, half Delta ADS; ``bench.ads_clients``) open
their streams in the same turn of the event loop, as a fleet does when the
control plane restarts. Every one must end SYNCED, the admin API's /readyz and
/metrics must answer while they connect, and a weight change must then reach
every one of them. The waits are bounded hang guards, not timing assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import grpc
import pytest

from bench.ads_clients import ROUTE, Fleet, Stream
from tests.integration.harness import LOCALHOST, async_wait_for
from tests.integration.xds_env import ConfigDir, InProcessControlPlane, get_text, service_doc, ver

pytestmark = pytest.mark.integration

STREAMS = 300
PER_CHANNEL = 50
SERVICES = 5
GUARD_S = 120.0  # hang guard for the storm and for the change to reach everyone


class QuietFleet(Fleet):
    """The benchmark's client bookkeeping, with events kept instead of printed."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    def emit(self, obj: dict[str, Any]) -> None:
        self.events.append(obj)
        if obj.get("event") == "converged":
            self.changed.set()


def docs(weight: int) -> list[dict[str, Any]]:
    return [
        service_doc(
            f"svc{k}",
            20_000 + k,
            [ver("v1", weight, 9_000 + k), ver("v2", 100 - weight, 9_100 + k)],
        )
        for k in range(SERVICES)
    ]


async def admin_answers(cp: InProcessControlPlane, stop: asyncio.Event) -> list[tuple[str, int]]:
    """Polls /readyz and /metrics until ``stop``; every answer's path and status."""
    answers: list[tuple[str, int]] = []
    while not stop.is_set():
        for path in ("/readyz", "/metrics"):
            status, _ = await get_text(cp.admin_url + path, timeout=30.0)
            answers.append((path, status))
        await asyncio.sleep(0.05)
    return answers


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
async def test_a_storm_of_streams_all_sync_while_the_admin_api_answers(
        tmp_path: Path, workers: int) -> None:
    config = ConfigDir(tmp_path / "config")
    config.write(*docs(90))
    # With two processes on the port, the kernel spreads connections (not streams)
    # between them: 30 connections all landing on one process has odds of 2^-29.
    per_channel = PER_CHANNEL if workers == 1 else 10
    async with InProcessControlPlane(config, workers=workers) as cp:
        fleet = QuietFleet(STREAMS)
        channels = [
            grpc.aio.insecure_channel(
                f"{LOCALHOST}:{cp.xds_port}", options=[("grpc.use_local_subchannel_pool", 1)]
            )
            for _ in range(STREAMS // per_channel)
        ]
        fleet.streams = [Stream(fleet, i, f"storm-{i:03d}", i % 2 == 1) for i in range(STREAMS)]
        stop_polling = asyncio.Event()
        poller = asyncio.create_task(admin_answers(cp, stop_polling))
        await asyncio.sleep(0)  # the poller's first requests are in flight
        tasks = [
            asyncio.create_task(s.run(channels[s.index // per_channel])) for s in fleet.streams
        ]
        try:
            await asyncio.wait_for(fleet.synced_event.wait(), GUARD_S)
            during = list(await asyncio.wait_for(_stop(poller, stop_polling), GUARD_S))
            assert during, "the admin API never answered during the storm"
            assert {status for _, status in during} == {200}, during
            assert {path for path, _ in during} == {"/readyz", "/metrics"}

            async def all_synced() -> bool:
                proxies = await cp.proxies()
                return len(proxies) == STREAMS and all(
                    p["synced"] and len(p["types"]) == 4 for p in proxies
                )

            await async_wait_for(all_synced, GUARD_S, interval=0.5, what="every stream SYNCED")
            proxies = await cp.proxies()
            variants = [p["variant"] for p in proxies]
            assert (variants.count("sotw"), variants.count("delta")) == (150, 150)
            assert {p["worker"] for p in proxies} == set(range(workers))
            assert len({p["stream"] for p in proxies}) == STREAMS
            # One snapshot, one content-hash version per type, whichever process serves.
            for type_index in range(4):
                assert len({p["types"][type_index]["versionAcked"] for p in proxies}) == 1

            # A weight change reaches every stream (each ACKs a new RouteConfiguration).
            fleet.start_mark(1, ROUTE)
            config.write(*docs(40))
            await asyncio.wait_for(fleet.changed.wait(), GUARD_S)
            [converged] = [e for e in fleet.events if e.get("event") == "converged"]
            assert converged["missing"] == 0 and len(converged["acks"]) == STREAMS
            await async_wait_for(all_synced, GUARD_S, interval=0.5, what="SYNCED after the change")
            assert [e for e in fleet.events if e.get("event") == "error"] == []
        finally:
            stop_polling.set()
            poller.cancel()
            for s in fleet.streams:
                if s.call is not None:
                    s.call.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, poller, return_exceptions=True)
            for channel in channels:
                await channel.close()


async def _stop(poller: asyncio.Task[list[tuple[str, int]]], stop: asyncio.Event) -> Any:
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        return await poller
    return []

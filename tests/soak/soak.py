"""The soak's orchestration: start the fleet, keep an experiment running, load it,
watch it, inject every fault at random times, then judge and report.

Faults come one at a time, in a shuffled cycle of all kinds (each kind at
least once per cycle), at random gaps; after each repair the soak measures
how long the fleet takes to be SYNCED again. When an experiment ends, the
next starts (roles swapped after a promotion), so one is always running.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.soak.faults import KINDS, Fault, Injector, next_experiment
from tests.soak.fleet import Fleet
from tests.soak.invariants import Epoch, Report, judge
from tests.soak.watch import (
    EnvoySample,
    ExperimentLog,
    Request,
    run_load,
    sample_envoys,
    time_to_synced,
    watch_experiment,
)

TERMINAL = ("Succeeded", "RolledBack", "Failed")
NODES = ("gw-0", "gw-1")


@dataclass(frozen=True)
class Options:
    minutes: float = 20.0
    seed: int = 1
    rate: float = 40.0  # client requests per second
    workdir: Path | None = None  # kept when given; a temporary one is removed
    sync_cap_s: float = 90.0  # a fleet not SYNCED this long after a repair breaks invariant 5


class Soak:
    def __init__(self, options: Options, fleet: Fleet) -> None:
        self.options = options
        self.fleet = fleet
        self.rng = random.Random(options.seed)
        self.scale = max(0.3, min(1.0, options.minutes / 20.0))
        # Each step's soak: an experiment (eight steps) lasts about a third of the run, so
        # runs end and new ones start while faults fly.
        self.soak_s = max(4, round(3 * options.minutes))
        self.injector = Injector(fleet, self.rng, self.scale, options.sync_cap_s)
        self.epochs: list[Epoch] = []
        self.log = ExperimentLog()
        self.samples: list[EnvoySample] = []
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.stop = asyncio.Event()

    @property
    def admin(self) -> str:
        return self.fleet.sluice.admin_url

    def current(self) -> str:
        return self.epochs[-1].name

    def start_epoch(self) -> None:
        last = self.epochs[-1] if self.epochs else None
        phase = self.log.last.get(last.name, {}).get("phase") if last else None
        roles = (last.baseline, last.candidate) if last else ("v1", "v2")
        doc = next_experiment(len(self.epochs) + 1, phase, roles, self.soak_s,
                              self.fleet.prometheus_url)
        spec = doc["spec"]
        assert isinstance(spec, dict)
        self.fleet.write_experiment(doc)
        self.injector.experiment = doc
        self.epochs.append(Epoch(time.time(), str(doc["metadata"]["name"]),  # type: ignore[index]
                                 spec["baseline"], spec["candidate"], spec["steps"][-1]["weight"]))

    def maybe_next_epoch(self) -> None:
        view = self.log.last.get(self.current())
        if view is not None and view.get("phase") in TERMINAL:
            self.start_epoch()

    async def wait(self, seconds: float) -> None:
        """Sleeps, starting the next experiment whenever the current one ends."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.maybe_next_epoch()
            await asyncio.sleep(min(0.5, max(0.0, end - time.monotonic())))

    async def run(self) -> Report:
        await self.fleet.start()
        initial = await time_to_synced(self.admin, NODES, time.time(), 60)
        if initial is None:
            raise RuntimeError("the fleet never got SYNCED at start")
        self.start_epoch()
        tasks = [
            asyncio.create_task(run_load(self.fleet.url, self.requests, self.stop,
                                         self.options.rate)),
            asyncio.create_task(sample_envoys(self.fleet.envoys, self.samples, self.stop)),
            asyncio.create_task(watch_experiment(self.admin, self.current, self.log, self.stop)),
        ]
        try:
            await self.wait(5 * self.scale)
            deadline = time.monotonic() + self.options.minutes * 60
            cycle: list[str] = []
            while time.monotonic() < deadline - 15 * self.scale:
                if not cycle:
                    cycle = self.rng.sample(KINDS, len(KINDS))
                fault = await self.injector.inject(cycle.pop())
                if fault.sync is not None:
                    fault.synced_after = await fault.sync
                self.faults.append(fault)
                gap = self.rng.uniform(2.0, 12.0) * self.scale
                await self.wait(min(gap, max(0.0, deadline - time.monotonic())))
            await self.wait(max(0.0, deadline - time.monotonic()))
        finally:
            self.stop.set()
            for task in tasks:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 20)
            self.injector.close()
        notes = [f"seed {self.options.seed}, {self.options.rate:g} requests/s, experiment steps "
                 f"of {self.soak_s}s, read-only disk by {self.injector.disk.method}, "
                 f"workdir {self.fleet.workdir}",
                 f"fleet SYNCED {initial:.2f}s after start"]
        try:
            sluice_log = (self.fleet.workdir / "sluice.log").read_text(errors="replace")
        except OSError:
            sluice_log = ""
        return judge(self.options.minutes, self.requests, self.faults, self.samples, self.log,
                     self.epochs, self.options.sync_cap_s, sluice_log, notes)


async def run_soak(options: Options) -> Report:
    """Runs the whole soak; every process it started is stopped on every way out."""
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="sluice-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(workdir, options.seed)
    soak = Soak(options, fleet)
    try:
        return await soak.run()
    finally:
        soak.injector.close()
        await asyncio.to_thread(fleet.close)
        if options.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

"""The faults the soak injects, one function each; every one repairs what it broke.

Each returns a ``Fault``: its kind, when it was injected and repaired (wall
clock, as the watchers stamp their samples), and what exactly happened. The
pod faults also say which pod and when, so failed requests can be attributed.

The state file's disk is made read-only with ``chattr +i`` on the state
directory, the database and its write-ahead log (as root, ``chmod`` does not
stop writes; a read-only remount of a mounted filesystem is refused while
SQLite holds the file open for writing). SQLite then fails every write with
"disk I/O error", as on a disk remounted read-only after an error. The shared
memory index (``-shm``) is left alone: it is memory-mapped, and Linux
answers a write to an immutable mapping with SIGBUS, which no disk does.
Without root (or where ``chattr`` is not supported) the directory and files
are made read-only with ``chmod`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.soak.fleet import VERSIONS, Fleet, experiment_doc
from tests.soak.watch import newest_stream, snapshot_version, time_to_synced

NODES = ("gw-0", "gw-1")

KINDS = ("sluice_kill", "envoy_restart", "prometheus_restart", "pod_crash", "pod_hang",
         "config_burst", "disk_readonly")


@dataclass
class Fault:
    kind: str
    injected: float  # wall clock
    repaired: float = 0.0  # wall clock: the repair was done (or the fault ended by itself)
    detail: str = ""
    pod: int | None = None
    window: tuple[float, float] | None = None  # pod faults: when the pod was not serving
    synced_after: float | None = None  # seconds from repair to the whole fleet SYNCED
    error: str | None = None  # the injection itself failed (never expected)
    sync: asyncio.Task[float | None] | None = field(default=None, repr=False)


class ReadOnlyDisk:
    """Makes the state directory refuse writes, and gives it back."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.method = self._method()
        self.frozen: list[Path] = []

    def _method(self) -> str:
        if os.geteuid() != 0:
            return "chmod"
        probe = self.directory / ".chattr-probe"
        probe.write_text("x")
        try:
            ok = subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode == 0
            subprocess.run(["chattr", "-i", str(probe)], capture_output=True)
        except OSError:
            ok = False
        probe.unlink(missing_ok=True)
        return "chattr" if ok else "chmod"

    def _targets(self) -> list[Path]:
        files = [p for p in self.directory.iterdir()
                 if p.is_file() and not p.name.endswith("-shm")]
        return [*files, self.directory]

    def freeze(self) -> None:
        self.frozen = self._targets()
        if self.method == "chattr":
            subprocess.run(["chattr", "+i", *map(str, self.frozen)], check=True,
                           capture_output=True)
        else:
            for p in self.frozen:
                p.chmod(0o555 if p.is_dir() else 0o444)

    def thaw(self) -> None:
        frozen, self.frozen = self.frozen, []
        if not frozen:
            return
        if self.method == "chattr":
            subprocess.run(["chattr", "-i", *map(str, frozen)], capture_output=True)
        else:
            for p in frozen:
                with contextlib.suppress(OSError):
                    p.chmod(0o755 if p.is_dir() else 0o644)


@dataclass
class Injector:
    fleet: Fleet
    rng: random.Random
    scale: float  # 1.0 for a 20-minute soak; outages shrink with shorter runs
    sync_cap: float = 90.0
    disk: ReadOnlyDisk = field(init=False)
    tweak: int = 0  # the service file's harmless variant (0 or 1) in force
    experiment: dict[str, object] | None = None  # the experiment document in force

    def __post_init__(self) -> None:
        self.disk = ReadOnlyDisk(self.fleet.state_dir)

    def _pause(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high) * self.scale

    async def inject(self, kind: str) -> Fault:
        """Injects and repairs one fault; ``Fault.sync`` measures, from the moment of the
        repair, how long the fleet takes to be SYNCED again."""
        fault = Fault(kind, time.time())
        try:
            await getattr(self, kind)(fault)
        except Exception as exc:
            fault.error = f"{type(exc).__name__}: {exc}"
        if fault.sync is None:
            self._repaired(fault)
        return fault

    def _repaired(self, fault: Fault, changed_from: str | None = None,
                  newer: tuple[str, float] | None = None) -> None:
        fault.repaired = time.time()
        fault.sync = asyncio.create_task(time_to_synced(
            self.fleet.sluice.admin_url, NODES, fault.repaired, self.sync_cap, changed_from,
            newer))

    async def sluice_kill(self, fault: Fault) -> None:
        self.fleet.sluice.kill()
        down = self._pause(1.0, 4.0)
        fault.detail = f"SIGKILL, down {down:.1f}s"
        await asyncio.sleep(down)
        self._repaired(fault)
        await self.fleet.sluice.start(timeout=60)

    async def envoy_restart(self, fault: Fault) -> None:
        envoy = self.rng.choice(self.fleet.envoys)
        fault.detail = f"hot restart of {envoy.node_id} to epoch {envoy.epoch + 1}"
        stream = await newest_stream(self.fleet.sluice.admin_url, envoy.node_id)
        await envoy.hot_restart(lambda: self._repaired(fault, newer=(envoy.node_id, stream)))

    async def prometheus_restart(self, fault: Fault) -> None:
        self.fleet.stop_prometheus()
        down = self._pause(4.0, 15.0)
        fault.detail = f"stopped {down:.1f}s"
        await asyncio.sleep(down)
        self._repaired(fault)
        await self.fleet.start_prometheus()

    async def pod_crash(self, fault: Fault) -> None:
        pod = self.rng.randrange(len(VERSIONS))
        after_ms = int(self._pause(2.0, 6.0) * 1000)
        fault.pod = pod
        fault.detail = f"pod {pod} ({VERSIONS[pod]}) crashed, back after {after_ms} ms"
        at = time.time()
        await self.fleet.podsim.act(pod, "crash", {"restartAfterMs": after_ms})
        await self._until_serving(pod, timeout=after_ms / 1000 + 30)
        fault.window = (at, time.time())

    async def pod_hang(self, fault: Fault) -> None:
        pod = self.rng.randrange(len(VERSIONS))
        stall_ms = int(self._pause(2.0, 5.0) * 1000)
        fault.pod = pod
        fault.detail = f"pod {pod} ({VERSIONS[pod]}) stalled {stall_ms} ms"
        at = time.time()
        await self.fleet.podsim.act(pod, "faults", {"stallMs": stall_ms})
        await asyncio.sleep(stall_ms / 1000)
        fault.window = (at, time.time())

    async def _until_serving(self, pod: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if (await self.fleet.podsim.pods())[pod]["state"] == "serving":
                    return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"pod {pod} not serving again within {timeout:.0f} s")

    async def config_burst(self, fault: Fault) -> None:
        """Edits in quick succession, invalid ones among them; the last leaves every file
        valid (the service with one endpoint weight changed, the experiment as it was)."""
        config = self.fleet.config.path
        experiment = dict(self.experiment or {})
        before, final = await snapshot_version(self.fleet.sluice.admin_url), 1 - self.tweak
        edits = []
        for _ in range(self.rng.randint(4, 9)):
            edit = self.rng.choice(["service", "bad-yaml", "bad-field", "bad-experiment",
                                    "foreign", "service"])
            edits.append(edit)
            if edit == "service":
                self.fleet.write_service(tweak=self.rng.randint(0, 1))
            elif edit == "bad-yaml":
                _write(config / "chat.yaml", "apiVersion: sluice.dev/v1alpha1\nkind: [\n")
            elif edit == "bad-field":
                text = (config / "chat.yaml").read_text().replace("weight: 100", "weight: 1000")
                _write(config / "chat.yaml", text)
            elif edit == "bad-experiment" and experiment:
                spec = dict(experiment["spec"])  # type: ignore[call-overload]
                spec["steps"] = "all at once"
                self.fleet.write_experiment({**experiment, "spec": spec})
            elif edit == "foreign":
                _write(config / "other.yaml", "apiVersion: v1\nkind: ConfigMap\n")
            await asyncio.sleep(self.rng.uniform(0.02, 0.4))
        # The last edit leaves the service changed from before the burst, so the fleet
        # is SYNCED again only once it runs the new snapshot.
        self.tweak = final
        self.fleet.write_service(tweak=final)
        if experiment:
            self.fleet.write_experiment(experiment)
        (config / "other.yaml").unlink(missing_ok=True)
        fault.detail = ", ".join(edits)
        self._repaired(fault, changed_from=before)

    async def disk_readonly(self, fault: Fault) -> None:
        held = self._pause(5.0, 20.0)
        fault.detail = f"state directory read-only ({self.disk.method}) for {held:.1f}s"
        self.disk.freeze()
        try:
            await asyncio.sleep(held)
        finally:
            self.disk.thaw()

    def close(self) -> None:
        self.disk.thaw()


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def next_experiment(epoch: int, last_phase: str | None, last: tuple[str, str],
                    soak_s: int, prometheus_url: str) -> dict[str, object]:
    """The next run: after a promotion the roles swap (the old candidate now serves)."""
    baseline, candidate = last
    if last_phase == "Succeeded":
        baseline, candidate = candidate, baseline
    return experiment_doc(f"soak-{epoch}", baseline, candidate, soak_s, prometheus_url)

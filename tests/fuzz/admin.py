"""The admin API target: raw HTTP requests against the whole admin app of ``App``.

One ``App`` (a service and a running experiment loaded from a config dir, a
snapshot built, the rollout manager running, a bearer token configured)
serves its admin app on 127.0.0.1 from a background event loop, shared by
every example. Each example is one request written as raw HTTP/1.1 bytes
(method, path, query, headers and body all drawn; sometimes the valid token),
so nothing between the fuzzer and the server normalizes it. Contract: no 5xx,
and every JSON answer is strict JSON (no NaN or Infinity: the status page
parses it in a browser).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web
from hypothesis import strategies as st

from controlplane.app import App, ServeOptions
from controlplane.config import load_paths
from tests.fuzz.gen_text import json_junk
from tests.unit.rollout.fakes import SERVICE, experiment

if TYPE_CHECKING:
    from tests.fuzz.targets import FuzzTarget

TOKEN = "fuzz-token-0123456789abcdef"
NAMES = ("canary", "chat", "nope", "", "..", "%2e%2e", "%00", "%ZZ", "%C3%A9", "a" * 3000,
         "canary%2Fpromote", "?", "#")
PATHS = (
    "/", "/healthz", "/readyz", "/metrics", "/ui/status.js", "/ui/{name}", "/api/v1/services",
    "/api/v1/proxies", "/api/v1/services/{name}/consistency", "/api/v1/experiments",
    "/api/v1/experiments/{name}", "/api/v1/experiments/{name}/samples.jsonl",
    "/api/v1/experiments/{name}/looks", "/api/v1/experiments/{name}/promote",
    "/api/v1/experiments/{name}/abort", "/api/v1/experiments/{name}/pause",
    "/api/v1/experiments/{name}/resume", "//api/v1/services", "/api/v1/../v1/services",
)


class AdminWorld:
    """The app, its listener and its loop; ``send(raw)`` returns the raw answer."""

    def __init__(self) -> None:
        # Bad requests are the point here: keep the server's complaints off the terminal.
        for name in ("aiohttp", "sluice"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        self.dir = Path(tempfile.mkdtemp(prefix="sluice-fuzz-admin-"))
        (self.dir / "token").write_text(TOKEN)
        config = self.dir / "config"
        config.mkdir()
        doc = experiment(steps=[10, 20, 30, 40, 50], interval="50ms", stallBudget="1h")
        (config / "chat.yaml").write_text(SERVICE + "---\n" + yaml.safe_dump(doc))
        self.options = ServeOptions((str(config),), api_token_file=str(self.dir / "token"))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)

    async def _start(self) -> int:
        self.app = App(self.options)
        self.app._on_load(load_paths(self.options.config_paths))
        self.app._install(None)
        self.stop_event = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self.app.rollouts.run(self.stop_event))
        self.runner = web.AppRunner(self.app.api.app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return int(self.runner.addresses[0][1])

    def send(self, raw: bytes) -> bytes:
        return asyncio.run_coroutine_threadsafe(self._send(raw), self.loop).result(30)

    async def _send(self, raw: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(raw)
            await writer.drain()
            chunks = []
            async with asyncio.timeout(10):
                while chunk := await reader.read(1 << 16):
                    chunks.append(chunk)
            return b"".join(chunks)
        except (ConnectionError, TimeoutError):
            return b"".join(chunks) if "chunks" in locals() else b""
        finally:
            writer.close()

    async def _close(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(self.task, 10)
        await self.runner.cleanup()

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(20)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            shutil.rmtree(self.dir, ignore_errors=True)


_world: AdminWorld | None = None


def world() -> AdminWorld:
    global _world
    if _world is None:
        _world = AdminWorld()
        atexit.register(_world.close)
    return _world


def _header_value() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from([f"Bearer {TOKEN}", f"bearer  {TOKEN} ", "Bearer wrong", "Basic eA==",
                         "Bearer", "", TOKEN, "application/json", "chunked", "-1", "1e9",
                         "99999999999999999999"]).map(str.encode),
        st.text(max_size=60).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.binary(max_size=30),
        st.just(b"x" * 9000),
    )


@st.composite
def raw_requests(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(request bytes, whether it is well-formed HTTP the server must answer)."""
    method = draw(st.sampled_from(["GET", "GET", "POST", "POST", "HEAD", "PUT", "DELETE",
                                   "OPTIONS", "PATCH", "BREW", "G\x00T"]))
    path = draw(st.sampled_from(PATHS)).replace("{name}", draw(
        st.one_of(st.sampled_from(NAMES), st.text(max_size=12))))
    query = draw(st.sampled_from(["", "?run=1", "?run=", "?run=%FF", "?a=b&a=c", "?" + "x" * 5000]))
    headers: list[tuple[bytes, bytes]] = []
    if draw(st.integers(0, 2)) > 0:
        headers.append((b"Authorization", draw(_header_value()) if draw(st.booleans())
                        else f"Bearer {TOKEN}".encode()))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from([b"x-sluice-user", b"Content-Type", b"Accept", b"Cookie",
                                     b"Transfer-Encoding", b"Expect", b"X-\xffbad"]))
        headers.append((name, draw(_header_value())))
    body = draw(st.one_of(st.just(b""), json_junk().map(lambda v: json.dumps(v).encode()),
                          st.binary(max_size=200)))
    well_formed = all(b"\r" not in v and b"\n" not in v for _, v in headers) and all(
        n not in (b"Transfer-Encoding", b"Expect", b"X-\xffbad") for n, _ in headers)
    target = (path + query).encode("utf-8", "surrogatepass")
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1",
             *(n + b": " + v for n, v in headers), b"Connection: close",
             b"Content-Length: " + str(len(body)).encode()]
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + body
    well_formed = well_formed and method in ("GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS",
                                             "PATCH") and all(32 < ord(c) < 127 for c in path)
    return raw, well_formed


def check_admin(request: tuple[bytes, bool]) -> None:
    from tests.fuzz.targets import Broken

    raw, well_formed = request
    answer = world().send(raw)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    parts = status_line.split(b" ")
    if len(parts) < 2 or not parts[1].isdigit():
        if well_formed:
            raise Broken("no HTTP answer", f"{raw[:300]!r} -> {answer[:200]!r}")
        return
    status = int(parts[1])
    if status >= 500:
        raise Broken(f"HTTP {status}", f"{raw[:300]!r} -> {body[:300]!r}")
    if b"application/json" in head.lower() and body and not raw.startswith(b"HEAD"):
        try:
            json.loads(body, parse_constant=_reject)
        except ValueError as exc:
            raise Broken("answer is not strict JSON",
                         f"{exc}: {raw[:200]!r} -> {body[:300]!r}") from None


def _reject(name: str) -> Any:
    raise ValueError(f"{name} in a JSON answer")


def admin_target() -> FuzzTarget:
    from tests.fuzz.targets import FuzzTarget

    return FuzzTarget("admin_api", raw_requests(), check_admin, 150)

"""The demo's load generator: chat sessions through the gateway, bounded in rate and time.

Each session has an id (``x-session-id``) and a few turns. Every prompt starts
with the same system prompt (which the pods' prefix caches keep) followed by
the turn's own text, of mixed length: mostly short questions, some long
documents. The mix keeps the simulated GPUs well below saturation, so that
latency comes from the model, not from queueing. Replies are counted per
version (``x-sluice-version``) and status, as a client sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from dataclasses import dataclass, field

import aiohttp

__all__ = ["Counts", "Load"]

# (share, prompt tokens range): chat turns, long questions, documents.
PROMPT_MIX = ((0.8, (10, 60)), (0.17, (60, 300)), (0.03, (300, 1000)))
SYSTEM_PROMPT_TOKENS = 96
OUTPUT_TOKENS = (8, 64)
TURNS = (2, 6)
VERSION_HEADER = "x-sluice-version"
SESSION_HEADER = "x-session-id"


@dataclass
class Counts:
    requests: int = 0
    errors: int = 0  # HTTP 5xx or no answer at all
    latency_s: float = 0.0  # summed over successes

    @property
    def mean_latency_ms(self) -> float | None:
        ok = self.requests - self.errors
        return 1000 * self.latency_s / ok if ok else None


@dataclass
class _Session:
    id: str
    turns_left: int


@dataclass
class Load:
    """``start()``, then ``stop()``; ``by_version`` holds what clients saw so far."""

    url: str
    rate: float = 40.0
    max_seconds: float = 600.0
    stream: bool = False
    concurrency: int = 64
    seed: int | None = None
    by_version: dict[str, Counts] = field(default_factory=dict)
    sessions: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> Load:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="demo load")
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 15)

    def total(self) -> Counts:
        out = Counts()
        for c in self.by_version.values():
            out.requests += c.requests
            out.errors += c.errors
            out.latency_s += c.latency_s
        return out

    def _prompt(self, rng: random.Random) -> int:
        x = rng.random()
        for share, (lo, hi) in PROMPT_MIX:
            if x < share:
                return rng.randint(lo, hi)
            x -= share
        return rng.randint(*PROMPT_MIX[-1][1])

    async def _run(self) -> None:
        rng = random.Random(self.seed)
        deadline = time.monotonic() + self.max_seconds
        slots = asyncio.Semaphore(self.concurrency)
        pending: set[asyncio.Task[None]] = set()
        live: list[_Session] = []
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            next_at = time.monotonic()
            while not self._stop.is_set() and time.monotonic() < deadline:
                if len(live) < 8:
                    live.append(_Session(uuid.uuid4().hex[:12], rng.randint(*TURNS)))
                    self.sessions += 1
                session = live[rng.randrange(len(live))]
                session.turns_left -= 1
                if session.turns_left <= 0:
                    live.remove(session)
                body = {
                    "model": "chat", "stream": self.stream,
                    "messages": [{"role": "user", "content": "hello"}],
                    "sluice_prompt_tokens": SYSTEM_PROMPT_TOKENS + self._prompt(rng),
                    "sluice_prefix": "system", "sluice_prefix_tokens": SYSTEM_PROMPT_TOKENS,
                    "sluice_output_tokens": rng.randint(*OUTPUT_TOKENS),
                    "max_tokens": OUTPUT_TOKENS[1],
                }
                await slots.acquire()
                task = asyncio.get_running_loop().create_task(
                    self._send(http, body, session.id, slots))
                pending.add(task)
                task.add_done_callback(pending.discard)
                next_at += rng.expovariate(self.rate)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(),
                                           max(0.0, next_at - time.monotonic()))
            if pending:
                await asyncio.wait(pending, timeout=15)
            for task in pending:
                task.cancel()

    async def _send(self, http: aiohttp.ClientSession, body: dict[str, object], session: str,
                    slots: asyncio.Semaphore) -> None:
        started = time.monotonic()
        version = "?"
        status = 0
        try:
            async with http.post(self.url, json=body, headers={SESSION_HEADER: session}) as r:
                version = r.headers.get(VERSION_HEADER, "?")
                status = r.status
                await r.read()
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        finally:
            slots.release()
        counts = self.by_version.setdefault(version, Counts())
        counts.requests += 1
        if status >= 500 or status == 0:
            counts.errors += 1
        elif status == 200:
            counts.latency_s += time.monotonic() - started

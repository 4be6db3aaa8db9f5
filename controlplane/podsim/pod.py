"""One simulated pod at run time: the engine on the event loop's clock, its lifecycle
and its faults (asyncio, no HTTP; the listener is behind a small protocol).

The engine is woken by one timer per pod, set for its next step end
(``loop.call_at``), so an idle pod costs nothing and a busy one costs one callback per
scheduler step, however many tokens that step emits.

Lifecycle (``state``): ``loading`` (cold start: ``/health`` and completions answer
503) -> ``serving`` -> ``draining`` (a version change waits for in-flight requests;
new ones get 503) -> ``loading`` as the new version. ``crashed``: the listener is
closed and every connection reset; ``restart()`` (or ``restartAfterMs``) binds the
same port again and loads. Every (re)start is a fresh process: empty KV and prefix
cache, metrics from zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Coroutine, Mapping
from dataclasses import replace
from typing import Any, Protocol

from controlplane.podsim.engine import Engine, RequestSpec
from controlplane.podsim.metrics import LoadSnapshot, exposition
from controlplane.podsim.profiles import profile
from controlplane.podsim.spec import Faults, PodSpec, check_faults, parse_fault_update

__all__ = ["Listener", "Pod", "PodStateError", "Waiter"]

VERSION_HEADER = "x-sluice-version"
POD_HEADER = "x-sluice-pod"


class PodStateError(Exception):
    """The pod cannot do that in its current state (e.g. change version while crashed)."""


class Listener(Protocol):
    async def start(self) -> int:
        """Bind and accept; returns the bound port."""
        ...

    async def stop(self) -> None:
        """Stop accepting connections."""
        ...

    def abort_connections(self) -> None:
        """Reset every open connection."""
        ...


class Waiter:
    """A request in the engine, as its HTTP handler sees it."""

    __slots__ = ("changed", "emitted", "finished", "reset", "streaming")

    def __init__(self, streaming: bool) -> None:
        self.streaming = streaming
        self.emitted = 0
        self.finished = False
        self.reset = False
        self.changed = asyncio.Event()

    async def wait(self) -> None:
        await self.changed.wait()
        self.changed.clear()


class Pod:
    def __init__(self, spec: PodSpec, listener: Listener | None = None) -> None:
        self.spec = spec
        self.version = spec.version
        self.gpu = profile(spec.gpu)
        self.faults = spec.faults
        self.healthy = spec.healthy
        self.state = "loading"
        self.rng = random.Random(spec.seed)
        self.listener = listener
        self.epoch = 0  # bumped whenever in-flight requests are reset
        self.responses: dict[int, int] = {}
        self.engine = Engine(self.gpu, spec.engine)
        self._loop = asyncio.get_running_loop()
        self._waiters: dict[str, Waiter] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._loading: asyncio.TimerHandle | None = None
        self._comeback: asyncio.TimerHandle | None = None  # restartAfterMs
        self._serving = asyncio.Event()
        self._active = 0  # completion handlers in progress
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_id = 0

    # -- reading ------------------------------------------------------------------

    @property
    def pod(self) -> str:
        return self.spec.pod

    @property
    def ready(self) -> bool:
        """What ``/health`` says: serving and not marked unhealthy."""
        return self.state == "serving" and self.healthy

    def now(self) -> float:
        return self._loop.time()

    def identity(self) -> dict[str, object]:
        s = self.spec
        return {
            "service": s.service,
            "version": self.version,
            "pod": s.pod,
            "gpu": self.gpu.name,
            "healthy": self.ready,
            "state": self.state,
        }

    def headers(self) -> dict[str, str]:
        return {VERSION_HEADER: self.version, POD_HEADER: self.spec.pod}

    def load(self) -> LoadSnapshot:
        return self.engine.load(self.now())

    def metrics_text(self) -> str:
        labels = {"model_name": f"{self.spec.service}/{self.version}", "version": self.version}
        return exposition(
            labels,
            self.engine.stats,
            self.load(),
            self.responses,
            block_size=self.engine.config.block_size,
            num_blocks=self.engine.pool.num_blocks,
        )

    def count(self, status: int) -> None:
        self.responses[status] = self.responses.get(status, 0) + 1

    def new_request_id(self) -> str:
        self._next_id += 1
        return f"{self.spec.port}-{self.epoch}-{self._next_id}"

    # -- serving ------------------------------------------------------------------

    def begin(self) -> None:
        """A completion handler starts (draining waits for every one to end)."""
        self._active += 1
        self._idle.clear()

    def end(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._idle.set()

    def submit(self, request: RequestSpec, *, streaming: bool) -> Waiter:
        """Hand a request to the engine; ValueError if it can never fit."""
        self.engine.submit(request, self.now())
        waiter = Waiter(streaming)
        self._waiters[request.id] = waiter
        self._schedule()
        return waiter

    def cancel(self, request_id: str) -> None:
        """The client went away: free what the request holds."""
        if self._waiters.pop(request_id, None) is not None:
            self.engine.cancel(request_id)
            self._schedule()

    def _schedule(self) -> None:
        t = self.engine.next_event()
        if self._timer is not None:
            if t == self._timer_at:
                return
            self._timer.cancel()
            self._timer = None
        if t is not None:
            self._timer_at = t
            self._timer = self._loop.call_at(t, self._tick)

    def _tick(self) -> None:
        self._timer = None
        # The loop may fire a timer a hair early; the step is due all the same.
        for ev in self.engine.advance(max(self.now(), self._timer_at)):
            waiter = self._waiters.get(ev.request_id)
            if waiter is None:
                continue
            waiter.emitted = ev.token + 1
            if ev.last:
                waiter.finished = True
                del self._waiters[ev.request_id]
            if ev.last or waiter.streaming:
                waiter.changed.set()
        self._schedule()

    def _reset_inflight(self) -> None:
        """Every request in flight is dropped; the GPU state is lost (a new engine)."""
        self.epoch += 1
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter.reset = True
            waiter.changed.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.engine = Engine(self.gpu, self.spec.engine)
        self.responses = {}

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        if self.listener is not None:
            port = await self.listener.start()
            self.spec = replace(self.spec, port=port)
        self._begin_loading(self.faults.cold_start_ms)
        if self.spec.stall_ms:
            self.stall(self.spec.stall_ms)

    def _set_state(self, state: str) -> None:
        self.state = state
        if state == "serving":
            self._serving.set()
        else:
            self._serving.clear()

    def _begin_loading(self, cold_start_ms: float) -> None:
        if self._loading is not None:
            self._loading.cancel()
            self._loading = None
        if cold_start_ms <= 0:
            self._set_state("serving")
            return
        self._set_state("loading")
        self._loading = self._loop.call_later(cold_start_ms / 1000, self._loaded)

    def _loaded(self) -> None:
        self._loading = None
        if self.state == "loading":
            self._set_state("serving")

    async def wait_serving(self) -> None:
        await self._serving.wait()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def crash(self, restart_after_ms: float | None = None) -> None:
        """Stop accepting, reset every connection, lose all state."""
        if self.state == "crashed":
            return
        self._begin_loading(0)  # cancels a pending load
        self._set_state("crashed")
        self._reset_inflight()
        if self.listener is not None:
            await self.listener.stop()
            self.listener.abort_connections()
        if restart_after_ms is not None:
            self._comeback = self._loop.call_later(restart_after_ms / 1000, self._auto_restart)

    def _auto_restart(self) -> None:
        self._comeback = None
        if self.state == "crashed":
            self._spawn(self.restart())

    async def restart(self, version: str | None = None, cold_start_ms: float | None = None) -> None:
        """Come back from a crash, or restart now (in-flight requests are reset)."""
        if self._comeback is not None:
            self._comeback.cancel()
            self._comeback = None
        if self.state == "crashed":
            if self.listener is not None:
                await self.listener.start()
        else:
            self._reset_inflight()
        if version is not None:
            self.version = version
        self._begin_loading(self.faults.cold_start_ms if cold_start_ms is None else cold_start_ms)

    async def set_version(
        self, version: str, *, drain: bool = True, cold_start_ms: float | None = None
    ) -> None:
        """Restart as ``version``: drain (or reset) in-flight requests, then cold-start.

        Returns when the new version starts loading (``wait_serving`` for the end).
        """
        self._begin_drain()
        await self._swap_version(version, drain, cold_start_ms)

    def change_version(
        self, version: str, *, drain: bool = True, cold_start_ms: float | None = None
    ) -> None:
        """``set_version`` in the background (what ``POST /admin/version`` does)."""
        self._begin_drain()
        self._spawn(self._swap_version(version, drain, cold_start_ms))

    def _begin_drain(self) -> None:
        if self.state in ("crashed", "draining"):
            raise PodStateError(f"pod {self.pod} is {self.state}")
        self._begin_loading(0)
        self._set_state("draining")

    async def _swap_version(self, version: str, drain: bool, cold_start_ms: float | None) -> None:
        if drain:
            await self._idle.wait()
            if self.state != "draining":  # crashed or restarted meanwhile
                return
        self._reset_inflight()
        self.version = version
        self._begin_loading(self.faults.cold_start_ms if cold_start_ms is None else cold_start_ms)

    # -- faults -------------------------------------------------------------------

    def set_faults(self, **changes: Any) -> Faults:
        """Change lasting fault settings by ``Faults`` field name, e.g. ``error_rate=1.0``."""
        faults = replace(self.faults, **changes)
        check_faults(faults)
        self.faults = faults
        return faults

    def set_healthy(self, healthy: bool) -> None:
        self.healthy = healthy

    def stall(self, ms: float) -> None:
        """The GPU stops for ``ms`` from now."""
        self.engine.stall(self.now(), ms / 1000)
        self._schedule()

    async def apply_faults(self, body: Mapping[str, object]) -> None:
        """Apply a ``POST /admin/faults`` body (ValueError when it is not valid)."""
        update = parse_fault_update(dict(body), self.faults)
        self.faults = update.faults
        if update.stall_ms:
            self.stall(update.stall_ms)
        if update.crash:
            await self.crash(update.restart_after_ms)
        elif update.restart:
            await self.restart()

    async def close(self) -> None:
        """Stop timers and background work; reset whatever is in flight."""
        self._begin_loading(0)
        if self._comeback is not None:
            self._comeback.cancel()
            self._comeback = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._set_state("crashed")
        self._reset_inflight()

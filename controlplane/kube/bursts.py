"""Debounced reactions to bursts of watch events (a rollout moves many pods at once)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from controlplane.debounce import Debounce


async def debounced(changed: asyncio.Event, stop: asyncio.Event, flush: Callable[[], None],
                    debounce: Debounce | None = None) -> None:
    """Calls ``flush`` once per burst of ``changed`` (quiet time, bounded by a ceiling)."""
    state = debounce or Debounce(0.1, 1.0)
    while not stop.is_set():
        deadline = state.deadline()
        wait = 0.5 if deadline is None else max(0.0, deadline - time.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), min(wait, 0.5))
        if changed.is_set():
            changed.clear()
            state = state.changed(time.monotonic())
        if state.due(time.monotonic()):
            state = state.flushed()
            flush()

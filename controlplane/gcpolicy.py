"""Garbage collection for processes that hold thousands of xDS streams.

CPython's collector is tuned for small heaps: a young collection every 700
allocations, and a full one whenever the objects that survived since the last
full collection reach a quarter of the old generation. Every push replaces a
little state in every stream (maps, futures, responses), so with 10,000 streams
that quarter is reached every few changes and each full collection walks the
whole heap: measured on 2 cores (``bench.xds_convergence --clients 10000``,
Delta), 17 full collections of about 0.4 s each in the primary and 13 in a
worker, some 10 s of a 40 s run per process, most of it while pushing.

Here young collections come after 50,000 allocations, automatic full
collections are off, and a full collection runs on a schedule instead: once per
``interval_s`` when the server has been quiet (no push, no new stream) for
``quiet_s``, and at the latest ``max_delay_s`` later. Memory that only a full
collection frees (reference cycles of ended streams, tasks, exceptions) waits
at most that long. Measured on the same benchmark: time in the collector per
process 2.3-2.8 s instead of about 10 s, and Delta weight change p99 at 10,000
streams 2.6 s instead of 3.7 s (bench/XDS.md, "Garbage collection").

https://docs.python.org/3/library/gc.html#gc.set_threshold
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("sluice.gc")

YOUNG_THRESHOLD = 50_000  # allocations between young collections (CPython: 700)
MIDDLE_THRESHOLD = 50  # young collections between middle ones (CPython: 10)
# Middle collections between full ones: never reached, the schedule runs them.
OLDEST_THRESHOLD = 1_000_000_000


def configure() -> None:
    """Sets this process's thresholds (call once, at the entry point of a server)."""
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLDEST_THRESHOLD)


@dataclass(frozen=True)
class FullCollections:
    """When the schedule runs a full collection."""

    interval_s: float = 300.0
    quiet_s: float = 2.0
    max_delay_s: float = 300.0

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.quiet_s < 0 or self.max_delay_s < 0:
            raise ValueError(f"full collection schedule out of range: {self}")

    def due(self, now: float, last_full: float, last_activity: float) -> bool:
        """``now``, ``last_full``, ``last_activity``: seconds on one monotonic clock."""
        waited = now - last_full
        if waited < self.interval_s:
            return False
        return now - last_activity >= self.quiet_s or waited >= self.interval_s + self.max_delay_s


async def collect_on_schedule(
    schedule: FullCollections,
    last_activity: Callable[[], float],
    stop: asyncio.Event,
    clock: Callable[[], float] = time.monotonic,
    check_every_s: float = 1.0,
) -> None:
    """Runs full collections on ``schedule`` until ``stop`` is set."""
    last_full = clock()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), check_every_s)
        now = clock()
        if stop.is_set() or not schedule.due(now, last_full, last_activity()):
            continue
        started = time.perf_counter()
        found = gc.collect()
        took = time.perf_counter() - started
        last_full = clock()
        log.log(logging.INFO if took >= 0.1 else logging.DEBUG,
                "full garbage collection: %d unreachable objects in %.3f s", found, took)

"""Config sources: where ``ModelService`` documents come from (files, later Kubernetes).

A source loads its documents once when it starts and again after every change,
handing each ``LoadResult`` (a new ``DesiredState``, or the errors that stopped
one) to the caller. The caller keeps the last good state when a result carries
errors, and counts the source as synced after its first result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from controlplane.config import LoadResult

__all__ = ["ConfigSource", "OnResult"]

# Called with every result; may be a plain function or a coroutine function.
OnResult = Callable[[LoadResult], Awaitable[None] | None]


class ConfigSource(Protocol):
    name: str

    async def run(self, on_result: OnResult, stop: asyncio.Event) -> None:
        """Deliver a result now and after every change until ``stop`` is set."""
        ...

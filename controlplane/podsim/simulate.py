"""Run a list of arrivals through one engine to completion (pure).

``simulate`` is the engine without I/O: given ``(time, request)`` arrivals it returns,
per request, when it arrived and when each output token came out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from controlplane.podsim.engine import Engine, RequestSpec, TokenEvent
from controlplane.podsim.profiles import EngineConfig, GpuProfile

__all__ = ["Timeline", "simulate"]


@dataclass
class Timeline:
    """When one request arrived, emitted each token, and finished (model time)."""

    arrival: float
    token_times: list[float] = field(default_factory=list)

    @property
    def first_token(self) -> float:
        return self.token_times[0]

    @property
    def finish(self) -> float:
        return self.token_times[-1]


def simulate(
    gpu: GpuProfile,
    arrivals: Iterable[tuple[float, RequestSpec]],
    config: EngineConfig | None = None,
    *,
    engine: Engine | None = None,
) -> dict[str, Timeline]:
    """Run ``(time, request)`` arrivals to completion; the timeline of every request."""
    eng = engine or Engine(gpu, config)
    pending = sorted(arrivals, key=lambda a: a[0])
    out: dict[str, Timeline] = {}

    def collect(events: list[TokenEvent]) -> None:
        for ev in events:
            out[ev.request_id].token_times.append(ev.time)

    i = 0
    while True:
        t_next = eng.next_event()
        if i < len(pending) and (t_next is None or pending[i][0] <= t_next):
            at, spec = pending[i]
            collect(eng.advance(at))
            out[spec.id] = Timeline(arrival=at)
            eng.submit(spec, at)
            i += 1
        elif t_next is not None:
            collect(eng.advance(t_next))
        else:
            return out

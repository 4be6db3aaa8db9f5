"""A simulation pod that runs podsim's own scheduler (``controlplane.podsim.engine``).

The check at 4 pods replays the Envoy runs' requests, so its pods should be the
very code the Envoy runs' pods ran: replayed with Envoy's own pod choices, this
pod gives every request's latency within a few milliseconds of what the load
generator measured through Envoy (the rest is HTTP and Envoy). Everything the
engine does is kept — KV blocks allocated as tokens are computed, preemption
when they run out, priority classes, the prefix cache (a request's
``sluice_prefix`` made into blocks as podsim does) — which ``FastPod`` leaves
out for speed:
the engine costs O(running requests) per step, about ten times ``FastPod``'s
O(1), so the 1,000-pod run keeps ``FastPod`` (held to the engine's token times by
``tests/unit/routing/test_timing.py``).

The interface is ``FastPod``'s: ``submit``, ``next_event``, ``advance`` (finished
jobs), ``first_tokens``, and the ORCA figures podsim puts in its response headers.
"""

from __future__ import annotations

from bench.routing.fastpod import Job
from controlplane.podsim.blocks import prefix_block_hashes
from controlplane.podsim.engine import Engine, RequestSpec
from controlplane.podsim.profiles import EngineConfig, GpuProfile

__all__ = ["EnginePod"]


class EnginePod:
    def __init__(self, index: int, gpu: GpuProfile, config: EngineConfig | None = None) -> None:
        self.index = index
        self.gpu = gpu
        self.engine = Engine(gpu, config)
        self.jobs: dict[str, Job] = {}
        self.first_tokens: list[Job] = []
        self._now = 0.0

    @property
    def in_system(self) -> int:
        return self.engine.in_flight

    def submit(self, job: Job, now: float) -> None:
        hashes: tuple[int, ...] = ()
        if job.prefix is not None:  # the blocks podsim makes of ``sluice_prefix``
            hashes = prefix_block_hashes(job.prefix, max(1, job.prefix_tokens),
                                         job.prompt, self.engine.config.block_size, job.id)
        self.engine.submit(RequestSpec(str(job.id), job.prompt, job.output, hashes,
                                       priority=job.priority), now)
        self.jobs[str(job.id)] = job

    def next_event(self) -> float | None:
        return self.engine.next_event()

    def advance(self, now: float) -> list[Job]:
        done: list[Job] = []
        self._now = now
        for ev in self.engine.advance(now):
            job = self.jobs[ev.request_id]
            if ev.token == 0:
                job.first_token = ev.time
                self.first_tokens.append(job)
            if ev.last:
                job.finish = ev.time
                del self.jobs[ev.request_id]
                done.append(job)
        return done

    def rps(self, now: float) -> float:
        return self.engine.load(now).rps

    def utilization(self) -> float:
        """ORCA's ``application_utilization`` as podsim reports it (floored the same way)."""
        return max(round(self.engine.load(self._now).utilization, 4), 0.001)

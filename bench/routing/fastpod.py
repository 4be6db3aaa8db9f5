"""A GPU pod for the discrete-event simulation: podsim's timing model at O(1) per step.

The same scheduler as ``controlplane.podsim.engine`` (requests reach it
``api_overhead_s`` after they arrive; each step schedules running requests
first — one token per decoding request, the next prompt chunk for one in
prefill — then admits waiting requests first come, first served, within the
step's token budget, ``max_num_seqs`` and the KV capacity), and the same step
time::

    t_step = t0 + prefill_tokens / R + k_kv * sum(context tokens) + per_seq * decoding

but decoding requests are kept as aggregates (how many, their total context,
a heap of the step at which each finishes), so a step costs O(1) plus the
requests that start or finish in it: 1,000 pods at 50,000 requests/s fit in
pure Python. Differences from the engine, none of which the scale run
exercises: a request reserves its whole KV (prompt + output) when admitted, so
there is no preemption; there is no prefix cache and no priority class. Where
those matter (the check against Envoy at 4 pods, the offline class) the
simulation runs the engine itself (``enginepod``).
``tests/unit/routing/test_timing.py`` holds it to the engine.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from controlplane.podsim.profiles import EngineConfig, GpuProfile

__all__ = ["FastPod", "Job"]


@dataclass(eq=False)
class Job:
    id: int
    prompt: int
    output: int
    arrival: float
    ready: float = 0.0
    computed: int = 0
    first_token: float | None = None
    finish: float | None = None
    host: int = -1
    proxy: int = -1
    key: str | None = None
    priority: int = 0  # 1: the batch class (EnginePod schedules by it; FastPod ignores it)
    prefix: str | None = None  # shared prompt prefix (EnginePod's prefix cache; not FastPod's)
    prefix_tokens: int = 0
    meta: dict[str, float] = field(default_factory=dict)


class FastPod:
    def __init__(self, index: int, gpu: GpuProfile, config: EngineConfig | None = None) -> None:
        self.index = index
        self.gpu = gpu
        self.config = config or EngineConfig()
        self.kv_capacity = self.config.num_blocks(gpu) * self.config.block_size
        self.pending: deque[Job] = deque()  # arrived, not yet at the scheduler (overhead)
        self.waiting: deque[Job] = deque()
        self.prefilling: list[Job] = []  # admitted, prompt not fully computed, admission order
        self.decoding = 0
        self.decode_context = 0
        self.finishing: list[tuple[int, int, Job]] = []  # (step index, id, job)
        self.kv_reserved = 0
        self.steps = 0
        self.step_end: float | None = None
        self.step_batch: list[tuple[Job, bool]] = []  # prefilling jobs, and "done" flag
        self.busy_time = 0.0
        self.first_tokens: list[Job] = []  # jobs whose first token came out (for the caller)
        self.accepted: deque[float] = deque()  # arrival times, last 10 s (ORCA rps)

    # -- reading ------------------------------------------------------------------

    @property
    def in_system(self) -> int:
        return len(self.pending) + len(self.waiting) + len(self.prefilling) + self.decoding

    @property
    def running(self) -> int:
        return len(self.prefilling) + self.decoding

    def utilization(self) -> float:
        """What an ORCA report carries: the tighter of KV use and sequence slots."""
        return max(self.kv_reserved / self.kv_capacity,
                   self.in_system / self.config.max_num_seqs)

    def rps(self, now: float) -> float:
        while self.accepted and self.accepted[0] <= now - 10.0:
            self.accepted.popleft()
        return len(self.accepted) / 10.0

    # -- events -------------------------------------------------------------------

    def submit(self, job: Job, now: float) -> None:
        job.ready = now + self.config.api_overhead_s
        self.pending.append(job)
        self.accepted.append(now)

    def next_event(self) -> float | None:
        if self.step_end is not None:
            return self.step_end
        if self.waiting or self.prefilling or self.decoding:
            return -1.0  # a step can start now
        return self.pending[0].ready if self.pending else None

    def advance(self, now: float) -> list[Job]:
        """Run what is due by ``now``: finish a step, start the next; jobs that finished."""
        done: list[Job] = []
        while True:
            if self.step_end is not None:
                if self.step_end > now:
                    return done
                self._finish_step(done)
                continue
            while self.pending and self.pending[0].ready <= now:
                self.waiting.append(self.pending.popleft())
            if not (self.waiting or self.prefilling or self.decoding):
                return done
            self._start_step(max(now, self._clock))

    _clock = 0.0

    def _start_step(self, t: float) -> None:
        cfg, g = self.config, self.gpu
        budget = cfg.max_num_batched_tokens - self.decoding
        prefill = 0
        batch: list[tuple[Job, bool]] = []
        for job in self.prefilling:
            if budget <= 0:
                break
            n = min(job.prompt - job.computed, budget)
            job.computed += n
            prefill += n
            budget -= n
            batch.append((job, job.computed == job.prompt))
        while (self.waiting and budget > 0
               and len(self.prefilling) + self.decoding < cfg.max_num_seqs):
            job = self.waiting[0]
            need = job.prompt + job.output
            if self.kv_reserved + need > self.kv_capacity:
                break
            self.waiting.popleft()
            self.kv_reserved += need
            self.prefilling.append(job)
            n = min(job.prompt, budget)
            job.computed = n
            prefill += n
            budget -= n
            batch.append((job, n == job.prompt))
        # Context after the step: a decoding request's prompt plus what it has emitted
        # (its new token's KV included), a prefilling one's computed prompt.
        context = self.decode_context + sum(j.computed for j, _ in batch)
        duration = (g.step_floor_s + prefill / g.prefill_tokens_per_s
                    + g.kv_time_per_token_s * context
                    + g.per_seq_s * self.decoding)
        self._clock = t
        self.step_end = t + duration
        self.busy_time += duration
        self.step_batch = batch

    def _finish_step(self, done: list[Job]) -> None:
        end = self.step_end
        assert end is not None
        self.step_end = None
        self._clock = end
        self.steps += 1
        # Every decoding request emitted one token: the context grows by one each.
        self.decode_context += self.decoding
        while self.finishing and self.finishing[0][0] <= self.steps:
            _, _, job = heapq.heappop(self.finishing)
            job.finish = end
            self.decoding -= 1
            self.decode_context -= job.prompt + job.output
            self.kv_reserved -= job.prompt + job.output
            done.append(job)
        for job, complete in self.step_batch:
            if not complete:
                continue
            self.prefilling.remove(job)
            job.first_token = end
            self.first_tokens.append(job)
            if job.output <= 1:
                job.finish = end
                self.kv_reserved -= job.prompt + job.output
                done.append(job)
                continue
            # It decodes output - 1 more tokens, one per step; its context after this
            # step is prompt + 1 and grows by one per step.
            self.decoding += 1
            self.decode_context += job.prompt + 1
            heapq.heappush(self.finishing, (self.steps + job.output - 1, job.id, job))
        self.step_batch = []

"""The timing core of a simulated GPU pod: an iteration-level scheduler (pure).

A discrete-event model of vLLM's V1 scheduler: no clocks, no sockets; every method
takes the time. Requests reach the scheduler ``api_overhead_s`` (plus any injected
delay) after they are submitted. Each step:

0. lets the first waiting request preempt running ones of a lower class (a larger
   ``priority``: Sluice's batch class is 1) when it could not be admitted otherwise;
1. schedules the running requests first, in admission order: one token for a decoding
   request, the next prompt chunk for one still in prefill; when the KV cache has no
   block for one, the most recently admitted request of the lowest class is preempted
   (its blocks freed, its prompt blocks left in the prefix cache) and recomputed later;
2. if nothing was preempted, admits waiting requests by class, then first come, first
   served, while the step's token budget (``max_num_batched_tokens``), the sequence limit
   (``max_num_seqs``) and the free KV blocks allow; an admitted request's leading prompt
   blocks found in the prefix cache are not computed again;
3. lasts ``t0 + prefill_tokens / R + k_kv * context_tokens + per_seq * decoding``
   (``context_tokens``: KV tokens of every scheduled request after the step), and at its
   end every request whose tokens are all computed emits one output token; a request
   that has emitted ``output_tokens`` finishes and frees its blocks.

``Engine.advance(now)`` runs every step that ends by ``now`` and returns the tokens
emitted; ``Engine.next_event()`` says when to call it next. ``simulate.simulate`` runs a
list of arrivals to completion.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from controlplane.podsim.blocks import BlockPool
from controlplane.podsim.metrics import EngineStats, LoadSnapshot
from controlplane.podsim.profiles import EngineConfig, GpuProfile

__all__ = ["Engine", "RequestSpec", "TokenEvent"]

BUSY_WINDOW_S = 1.0
RATE_WINDOW_S = 10.0


@dataclass(frozen=True)
class RequestSpec:
    """One completion request as the scheduler sees it."""

    id: str
    prompt_tokens: int
    output_tokens: int
    block_hashes: tuple[int, ...] = ()  # full prompt blocks (see ``blocks``)
    delay: float = 0.0  # extra time before it reaches the scheduler (injected latency)
    finish_reason: str = "length"
    counted: bool = True  # False: answered as an error, left out of request metrics
    priority: int = 0  # lower is served first (vLLM's --scheduling-policy priority)


class TokenEvent(NamedTuple):
    request_id: str
    token: int  # position in the output, 0 is the first token
    time: float
    last: bool


@dataclass
class _Seq:
    spec: RequestSpec
    arrival: float
    ready: float
    state: str = "pending"  # pending -> waiting <-> running -> done | cancelled
    computed: int = 0  # tokens whose KV is computed
    emitted: int = 0
    hashed: list[int] = field(default_factory=list)  # prompt blocks held, by hash
    anon: int = 0  # other blocks held
    scheduled: float | None = None
    last_token: float = 0.0

    @property
    def target(self) -> int:
        """KV tokens needed before the next output token can be sampled."""
        return self.spec.prompt_tokens + self.emitted


@dataclass
class _Step:
    start: float
    end: float
    batch: list[tuple[_Seq, bool]]  # (request, emits a token at the end)


class Engine:
    """One pod's scheduler and KV cache, advanced by the caller's clock."""

    def __init__(self, gpu: GpuProfile, config: EngineConfig | None = None) -> None:
        self.gpu = gpu
        self.config = config or EngineConfig()
        self.pool = BlockPool(
            self.config.num_blocks(gpu), caching=self.config.enable_prefix_caching
        )
        self.stats = EngineStats()
        self._seqs: dict[str, _Seq] = {}
        self._arrivals: list[tuple[float, int, _Seq]] = []  # heap by ready time
        self._waiting: deque[_Seq] = deque()
        self._running: list[_Seq] = []
        self._step: _Step | None = None
        self._clock = 0.0  # start of the last step decided
        self._stalled_until = 0.0
        self._counter = 0
        self._busy: deque[tuple[float, float]] = deque()
        self._accepted: deque[float] = deque()

    # -- inputs ---------------------------------------------------------------

    def submit(self, spec: RequestSpec, now: float) -> None:
        """A request arrives at ``now``; ValueError if it can never fit the KV cache."""
        if spec.id in self._seqs:
            raise ValueError(f"request {spec.id!r} is already in flight")
        if spec.prompt_tokens < 1 or spec.output_tokens < 1 or spec.delay < 0:
            raise ValueError("prompt_tokens and output_tokens must be >= 1, delay >= 0")
        bs = self.config.block_size
        if -(-(spec.prompt_tokens + spec.output_tokens) // bs) > self.pool.num_blocks:
            raise ValueError(
                f"prompt + output ({spec.prompt_tokens + spec.output_tokens} tokens) exceeds"
                f" the KV cache ({self.pool.num_blocks * bs} tokens)"
            )
        ready = max(now + self.config.api_overhead_s + spec.delay, self._clock)
        seq = _Seq(spec=spec, arrival=now, ready=ready)
        self._seqs[spec.id] = seq
        self._counter += 1
        heapq.heappush(self._arrivals, (ready, self._counter, seq))
        self._accepted.append(now)
        while self._accepted[0] <= now - RATE_WINDOW_S:
            self._accepted.popleft()

    def cancel(self, request_id: str) -> bool:
        """Drop a request (client gone, pod reset); False if it was not in flight."""
        seq = self._seqs.pop(request_id, None)
        if seq is None:
            return False
        if seq.state == "running":
            self._release(seq)
            self._running.remove(seq)
        elif seq.state == "waiting":
            self._waiting.remove(seq)
        seq.state = "cancelled"  # a pending one is skipped when it leaves the heap
        self.stats.finished["abort"] = self.stats.finished.get("abort", 0) + 1
        return True

    def stall(self, now: float, duration: float) -> None:
        """The GPU stops for ``duration`` from ``now`` (a step in progress ends later)."""
        if duration <= 0:
            return
        if self._step is not None and self._step.end > now:
            self._step.end += duration
        self._stalled_until = max(self._stalled_until, now + duration)

    # -- clock ------------------------------------------------------------------

    def next_event(self) -> float | None:
        """When ``advance`` has work next (may be in the past), or None when idle."""
        if self._step is not None:
            return self._step.end
        start = max(self._clock, self._stalled_until)
        if self._running or self._waiting:
            return start
        while self._arrivals and self._arrivals[0][2].state == "cancelled":
            heapq.heappop(self._arrivals)
        if self._arrivals:
            return max(start, self._arrivals[0][0])
        return None

    def advance(self, now: float) -> list[TokenEvent]:
        """Run every step that ends by ``now``; start the next one if it is due."""
        events: list[TokenEvent] = []
        while True:
            t = self.next_event()
            if t is None or t > now:
                return events
            if self._step is not None:
                self._finish_step(events)
            else:
                self._start_step(t)

    # -- reading ----------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._seqs)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._seqs) - len(self._running)

    def load(self, now: float) -> LoadSnapshot:
        while self._busy and self._busy[0][1] <= now - BUSY_WINDOW_S:
            self._busy.popleft()
        while self._accepted and self._accepted[0] <= now - RATE_WINDOW_S:
            self._accepted.popleft()
        lo = now - BUSY_WINDOW_S
        busy = sum(max(0.0, min(e, now) - max(s, lo)) for s, e in self._busy)
        if self._step is not None:
            busy += max(0.0, now - max(self._step.start, lo))
        return LoadSnapshot(
            running=self.running,
            waiting=self.waiting,
            kv_usage=self.pool.usage,
            busy=min(1.0, busy / BUSY_WINDOW_S),
            rps=len(self._accepted) / RATE_WINDOW_S,
            max_num_seqs=self.config.max_num_seqs,
        )

    # -- the scheduler ----------------------------------------------------------

    def _release(self, seq: _Seq, *, cache: bool = True) -> None:
        self.pool.release(seq.hashed, seq.anon, cache=cache)
        seq.hashed, seq.anon = [], 0

    def _grow(self, seq: _Seq, tokens: int) -> bool:
        more = -(-tokens // self.config.block_size) - len(seq.hashed) - seq.anon
        if more > 0 and not self.pool.grow(more):
            return False
        seq.anon += max(0, more)
        return True

    def _preempt(self, seq: _Seq) -> None:
        """Free a running request's blocks; it waits again at the head of its class and
        recomputes its prompt and what it emitted (its prompt blocks stay cached)."""
        self._release(seq)
        seq.computed = 0
        seq.state = "waiting"
        self._enqueue(seq, front=True)
        self.stats.preemptions += 1

    def _victim(self) -> int:
        """Whom preemption takes: the last admitted (vLLM's default) of the lowest class
        (the largest ``priority``, as vLLM's priority policy does)."""
        return max(range(len(self._running)), key=lambda k: (self._running[k].spec.priority, k))

    def _make_room(self) -> None:
        """The first waiting request, when no slot or KV block is left for it, preempts
        running ones of a lower class (vLLM's ``--scheduling-policy priority``): batch
        never keeps online waiting, it gets only the slots and blocks online leaves."""
        if not self._waiting:
            return
        head = self._waiting[0]
        while self._running:
            k = self._victim()
            if self._running[k].spec.priority <= head.spec.priority:
                return
            if len(self._running) < self.config.max_num_seqs and self._fits(head):
                return
            self._preempt(self._running.pop(k))

    def _enqueue(self, seq: _Seq, *, front: bool = False) -> None:
        """Waiting requests are admitted by class, then first come, first served (``front``:
        a preempted request, at the head of its class)."""
        p, queue = seq.spec.priority, self._waiting
        if not front and (not queue or queue[-1].spec.priority <= p):
            queue.append(seq)  # the common case, without a scan
            return
        queue.insert(next((k for k, w in enumerate(queue) if w.spec.priority > p
                           or (front and w.spec.priority == p)), len(queue)), seq)

    def _start_step(self, t: float) -> None:
        self._clock = t
        while self._arrivals and self._arrivals[0][0] <= t:
            seq = heapq.heappop(self._arrivals)[2]
            if seq.state == "pending":
                seq.state = "waiting"
                self._enqueue(seq)
        self._make_room()
        budget = self.config.max_num_batched_tokens
        batch: list[tuple[_Seq, int]] = []
        preempted = False
        i = 0
        while i < len(self._running) and budget > 0:
            seq = self._running[i]
            n = min(seq.target - seq.computed, budget)
            while not self._grow(seq, seq.computed + n):
                k = self._victim()
                victim = self._running.pop(k)
                if k < i:  # already in this step: take it out again
                    j = next(j for j, (s, _) in enumerate(batch) if s is victim)
                    budget += batch.pop(j)[1]
                    i -= 1
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            else:
                batch.append((seq, n))
                budget -= n
                i += 1
        while (
            not preempted
            and self._waiting
            and budget > 0
            and len(self._running) < self.config.max_num_seqs
        ):
            seq = self._waiting[0]
            if not self._admit(seq, budget):
                break
            self._waiting.popleft()
            n = min(seq.target - seq.computed, budget)
            batch.append((seq, n))
            budget -= n
        if not batch:
            if preempted:  # everything running was preempted: admit afresh
                self._start_step(t)
                return
            raise RuntimeError("scheduler step with nothing to run")
        self._run(t, batch)

    def _need(self, seq: _Seq, budget: int) -> tuple[tuple[int, ...], int]:
        """Cached prompt blocks an admission reuses, and new blocks its first chunk takes."""
        bs = self.config.block_size
        hashes = seq.spec.block_hashes
        hit_blocks = self.pool.lookup(hashes, (seq.target - 1) // bs)
        n = min(seq.target - hit_blocks * bs, budget)
        return hashes[:hit_blocks], -(-(hit_blocks * bs + n) // bs) - hit_blocks

    def _fits(self, seq: _Seq) -> bool:
        return self.pool.can_take(*self._need(seq, self.config.max_num_batched_tokens))

    def _admit(self, seq: _Seq, budget: int) -> bool:
        hits, new_blocks = self._need(seq, budget)
        cached = len(hits) * self.config.block_size
        if not self.pool.can_take(hits, new_blocks):
            return False
        self.pool.take(hits, new_blocks)
        seq.hashed, seq.anon, seq.computed = list(hits), new_blocks, cached
        seq.state = "running"
        if seq.scheduled is None:
            seq.scheduled = self._clock
            if seq.spec.counted:
                self.stats.queue.observe(self._clock - seq.ready)
        self.stats.prefix_queries += seq.spec.prompt_tokens
        self.stats.prefix_hits += min(cached, seq.spec.prompt_tokens)
        self._running.append(seq)
        return True

    def _run(self, t: float, batch: list[tuple[_Seq, int]]) -> None:
        bs = self.config.block_size
        prefill = decoding = context = 0
        planned: list[tuple[_Seq, bool]] = []
        for seq, n in batch:
            if seq.emitted and seq.target - seq.computed == 1:
                decoding += 1
            else:
                prefill += n
            seq.computed += n
            context += seq.computed
            if self.pool.caching:
                hashes = seq.spec.block_hashes
                while len(seq.hashed) < len(hashes) and seq.computed >= (len(seq.hashed) + 1) * bs:
                    self.pool.seal(hashes[len(seq.hashed)])
                    seq.hashed.append(hashes[len(seq.hashed)])
                    seq.anon -= 1
            planned.append((seq, seq.computed == seq.target))
        g = self.gpu
        duration = (
            g.step_floor_s
            + prefill / g.prefill_tokens_per_s
            + g.kv_time_per_token_s * context
            + g.per_seq_s * decoding
        )
        self._step = _Step(start=t, end=t + duration, batch=planned)

    def _finish_step(self, events: list[TokenEvent]) -> None:
        step = self._step
        assert step is not None
        self._step = None
        self._clock = end = step.end
        self._busy.append((step.start, end))
        while self._busy[0][1] <= end - BUSY_WINDOW_S:
            self._busy.popleft()
        stats = self.stats
        done = False
        for seq, emits in step.batch:
            if not emits or seq.state != "running":
                continue
            spec = seq.spec
            seq.emitted += 1
            stats.generation_tokens += 1
            if seq.emitted == 1:
                stats.prompt_tokens += spec.prompt_tokens
                if spec.counted:
                    stats.ttft.observe(end - seq.arrival)
            elif spec.counted:
                stats.itl.observe(end - seq.last_token)
            seq.last_token = end
            last = seq.emitted == spec.output_tokens
            events.append(TokenEvent(spec.id, seq.emitted - 1, end, last))
            if last:
                done = True
                seq.state = "done"
                self._release(seq)
                del self._seqs[spec.id]
                if spec.counted:
                    reason = spec.finish_reason
                    stats.finished[reason] = stats.finished.get(reason, 0) + 1
                    stats.e2e.observe(end - seq.arrival)
                    stats.prompt_lengths.observe(spec.prompt_tokens)
                    stats.output_lengths.observe(spec.output_tokens)
        if done:
            self._running = [s for s in self._running if s.state == "running"]

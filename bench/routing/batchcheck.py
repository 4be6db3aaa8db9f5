"""The offline class: how the benchmark measures it, and the same rounds in the simulation.

Each round is one unbroken stream of online requests at 50 % of capacity: a
warm-up, the ``alone`` window, a gap, the ``together`` window — the alone window's
requests again, now beside 48 batch clients that send as fast as the cap lets
them — and a tail. Warm-up, gap and tail are the same requests, so that both
windows are preceded and followed by the same online load: with different ones,
or none after the last window (which then finishes into an emptying system),
the two windows' p99 differ by about 5 % with no batch at all. Online load never
stops, so the cap batch meets is the one online load leaves in steady state
(between two separate runs online in flight falls to zero, the controller raises
the cap, and a flood of batch requests meets the next run's first online
requests: a transient of the benchmark, not of serving). The gap lets the alone
window's last requests finish before batch starts. p99 is over every round's
window together: one p99 of a few hundred requests is a handful of long answers,
and moves ±15 % between two runs of the same load; pooled over three rounds it
still moves about ±5 % (the simulation's seeds show how much).

``batch_check`` runs the same rounds in the simulation (podsim's scheduler in
every pod, batch requests priority 1; Sluice's controller for the cap) under
several seeds: what the batch load costs online without the Envoy run's noise,
and how far one run may land from it by chance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from bench.routing.fleet import BENCH_ENGINE, GPUS, LATENCY_LENGTHS
from bench.routing.report import fmt, ratio, run_table
from bench.routing.sim import POLICIES, BatchLoad, simulate_fleet
from bench.routing.stats import RunStats, summarize
from bench.routing.workload import Req, mixed

__all__ = ["BATCH_ROUNDS", "BATCH_S", "BATCH_SLOTS", "CLIENTS", "batch_check", "batch_reqs",
           "batch_sweep", "round_stream"]

# ``offline.concurrencyPerPod``: a capacity-1 pod takes this many requests in all before
# batch gets none of it. At 50 % online load that leaves batch a request or two on each
# H100 and nothing on an A100 (already full). Every batch request in flight slows the
# online steps it shares (its prefill above all: the pods' step time adds prefill to
# decode), so the cap is what holds online within 10 %: in the simulation 4 costs
# online p99 2 % on average for 2 batch requests/s (eight seeds: 0.95–1.10×), 5 costs
# 11 % for 5/s (1.05–1.22×).
BATCH_SLOTS = 4
BATCH_S = 15.0  # each window
BATCH_ROUNDS = 3
GAP_S = 6.0  # warm-up, gap and tail: ≥ the slowest answers (p99 ≈ 5 s)
CLIENTS = 48
SEEDS = 3


def batch_reqs(capacity: float) -> list[Req]:
    return mixed(capacity, 300.0, seed=31, lengths=LATENCY_LENGTHS)


def round_stream(capacity: float, k: int) -> tuple[list[Req], float, float]:
    """Round ``k``'s online stream, the start of its alone window and of its together
    window (where batch starts; both windows last ``BATCH_S``)."""
    rate = 0.5 * capacity
    window = mixed(rate, BATCH_S, seed=50 + k, lengths=LATENCY_LENGTHS)
    filler = mixed(rate, GAP_S, seed=90 + k, lengths=LATENCY_LENGTHS)
    alone, together = GAP_S, 2 * GAP_S + BATCH_S
    parts = [(filler, 0.0), (window, alone), (filler, alone + BATCH_S), (window, together),
             (filler, together + BATCH_S)]
    stream = [dataclasses.replace(r, t=r.t + at) for reqs, at in parts for r in reqs]
    return stream, alone, together


def batch_sim(capacity: float, per_pod: int, seed: int = 1
              ) -> tuple[RunStats, RunStats, float, list[int]]:
    """Online alone and with batch (pooled over the rounds), batch requests/s, caps."""
    policy = next(p for p in POLICIES if p.name == "least request + capacity")
    pooled: dict[str, list[tuple[float | None, float | None, int]]] = {"a": [], "t": []}
    done, caps = 0, []
    for k in range(BATCH_ROUNDS):
        stream, alone, together = round_stream(capacity, k)
        load = BatchLoad(tuple(batch_reqs(capacity)), CLIENTS, together, together + BATCH_S,
                         per_pod)
        result = simulate_fleet(GPUS, policy, stream, seed=seed, config=BENCH_ENGINE,
                                engine=True, batch=load)
        for name, begin in (("a", alone), ("t", together)):
            pooled[name] += [(r.ttft, r.e2e, r.output) for r in result.records
                             if begin <= r.arrival < begin + BATCH_S]
        done += result.batch_done
        caps += result.caps
    span = BATCH_S * BATCH_ROUNDS
    a, t = (summarize([r[1] for r in rows], [r[0] for r in rows], [r[2] for r in rows],
                      span, [1.0], [1.0]) for rows in pooled.values())
    return a, t, done / span, caps


def batch_check(capacity: float, per_pod: int = BATCH_SLOTS,
                seeds: Sequence[int] = tuple(range(1, SEEDS + 1))) -> str:
    runs = [batch_sim(capacity, per_pod, s) for s in seeds]
    alone, together, rps, caps = runs[0]
    ratios = [ratio(t.p99, a.p99) for a, t, _, _ in runs]
    return (f"\n## Offline class in the simulation (the same rounds, podsim's scheduler, "
            f"Sluice's cap; seed {seeds[0]})\n\n"
            + run_table({"online alone": alone, "online + batch": together})
            + f"\n\nbatch {rps:.1f} req/s, caps while batch ran {caps}; online p99 with "
            f"batch / alone {fmt(ratios[0])}× ({', '.join(fmt(r) for r in ratios)} over "
            f"seeds {', '.join(str(s) for s in seeds)})")


def batch_sweep(capacity: float, slots: Sequence[int] = (0, 3, 4, 5), seeds: int = 20) -> str:
    """The rounds in the simulation for several ``concurrencyPerPod`` (0: no batch at
    all, the design's own spread) under many seeds: what batch gets and what it costs
    online, and how often one run would land above 1.10."""
    lines = [f"\n## Offline class in the simulation: concurrencyPerPod against online p99 "
             f"({seeds} seeds, {BATCH_ROUNDS} rounds of {BATCH_S:.0f} s each)\n",
             "| concurrencyPerPod | batch req/s | online p99 with batch / alone: mean | range "
             "| seeds above 1.10 |", "|---:|---:|---:|---:|---:|"]
    for per_pod in slots:
        runs = [batch_sim(capacity, per_pod, s) for s in range(1, seeds + 1)]
        ratios = [ratio(t.p99, a.p99) for a, t, _, _ in runs]
        rps = sum(r[2] for r in runs) / len(runs)
        lines.append(f"| {per_pod} | {rps:.2f} | {fmt(sum(ratios) / len(ratios))} | "
                     f"{fmt(min(ratios))}–{fmt(max(ratios))} | "
                     f"{sum(r > 1.10 for r in ratios)} of {seeds} |")
    return "\n".join(lines)

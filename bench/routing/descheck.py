"""The simulation checked against the Envoy runs at 4 pods, on the very same requests.

Every Envoy ramp (arrival times, lengths, keys) is replayed through the
simulation with one proxy, as in the Envoy runs, with podsim's own scheduler in
every pod (``EnginePod``) and Envoy's own hash tables over the pods' real
addresses (``envoyhash``): given Envoy's pod choices, the simulation gives each
request's latency within a few milliseconds of what was measured, and it sends
every keyed request of a hashing policy to the pod Envoy sent it to. What is
left is chance: which pod a random draw picks (random, two choices, a keyless
request under ring hash or Maglev), which decides where the long requests
queue. So each policy runs under ``SEEDS`` seeds; a ratio's simulated value is
the ratio of the means over the seeds, and its range over the seeds says how
far one run — Envoy's — may fall from it by chance.

Where chance alone moves a policy's mean by more than ``CHANCE`` in the
simulation of its ramp (``chance_spread``, asked before the Envoy run: random
above all, whose mean at 70 or 90 % lands anywhere within ±10 % of its
expectation whatever the window's length, since its backlog on a slow pod is a
sum of coin flips), Envoy runs the ramp ``REPEATS`` times and each window pools
the repeats: the check then compares an expectation with an expectation, not
one draw of a coin with the mean of many.

Checks: the same order of policies (pairs whose Envoy means at 90 % differ by
more than 15 %), and each policy's mean latency as a ratio to round robin within
15 % of Envoy's at 70 and 90 % (p99 shown too; with a few hundred requests per
window it is too noisy to hold to 15 %).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from bench.routing.envoy_bench import Trace
from bench.routing.fleet import BENCH_ENGINE, GPUS
from bench.routing.report import check, fmt, ratio
from bench.routing.sim import POLICIES, Policy, simulate_fleet
from bench.routing.stats import RunStats, percentile, summarize
from bench.routing.workload import Req
from controlplane.podsim.engine import RequestSpec
from controlplane.podsim.profiles import profile
from controlplane.podsim.simulate import simulate

__all__ = ["CHANCE", "REPEATS", "chance_spread", "des_check", "pooled", "ramps"]

LEVELS = (50, 70, 90)
SEEDS = 20
CHANCE = 0.15
REPEATS = 4
STALL_MS = 50.0  # Envoy's median latency over podsim's for its own pod choices: ≈ 5 ms


def ramps(runs: Mapping[object, Trace]) -> list[Trace]:
    """A policy's Envoy ramps: ``"ramp"`` and, for a chancy policy, its repeats."""
    return [t for k, t in runs.items() if isinstance(k, str) and k.startswith("ramp")]


def pooled(wholes: Sequence[Trace], starts: Sequence[float], seconds: float
           ) -> dict[object, Trace]:
    """A policy's ramps under ``"ramp"``, ``"ramp 2"``, … and each level's window pooled
    over them."""
    runs: dict[object, Trace] = {("ramp" if i == 0 else f"ramp {i + 1}"): whole
                                 for i, whole in enumerate(wholes)}
    for level, begin in zip(LEVELS, starts, strict=True):
        runs[level] = Trace.joined([w.window(begin, begin + seconds) for w in wholes])
    return runs


def _windows(policy: Policy, reqs: Sequence[Req], names: list[str], capacity: list[float],
             starts: Sequence[float], seconds: float, seed: int) -> list[RunStats]:
    """The simulation of a whole ramp, cut into the same windows as the Envoy run."""
    result = simulate_fleet(GPUS, policy, reqs, config=BENCH_ENGINE, engine=True,
                            seed=seed, addresses=names)
    out = []
    for start in starts:
        recs = [r for r in result.records if start <= r.arrival < start + seconds]
        served = [0.0] * len(GPUS)
        for r in recs:
            if r.host >= 0:
                served[r.host] += 1
        out.append(summarize([r.e2e for r in recs], [r.ttft for r in recs],
                             [r.output for r in recs], seconds, served, capacity))
    return out


def chance_spread(policy: Policy, reqs: Sequence[Req], names: list[str],
                  starts: Sequence[float], seconds: float, seeds: int = 5) -> float:
    """How far chance alone moves the policy's mean latency at 70 and 90 % in the
    simulation of this ramp: the largest (highest − lowest) / mean over ``seeds``."""
    runs = [_windows(policy, reqs, names, [1.0] * len(GPUS), starts, seconds, s)
            for s in range(1, seeds + 1)]
    spread = 0.0
    for k, lv in enumerate(LEVELS):
        if lv < 70:
            continue
        means = [run[k].mean for run in runs]
        spread = max(spread, (max(means) - min(means)) / (sum(means) / len(means)))
    return spread


def excess_ms(trace: Trace, names: list[str], starts: Sequence[float],
              seconds: float) -> list[float]:
    """Per window, the median of (Envoy's latency − podsim's for the same request on the
    pod Envoy chose), in ms: a few ms is HTTP and Envoy; more means the machine stalled
    the load generator or the pods (CPU taken by something else), not a routing effect."""
    per_pod: dict[int, list[tuple[float, RequestSpec, float]]] = {}
    for i, (r, row) in enumerate(zip(trace.reqs, trace.results, strict=True)):
        if row[1] == 200 and row[4] in names:
            per_pod.setdefault(names.index(row[4]), []).append(
                (r.t, RequestSpec(str(i), r.prompt, r.output), row[3]))
    diffs: list[tuple[float, float]] = []
    for h, items in per_pod.items():
        model = simulate(profile(GPUS[h]), [(t, spec) for t, spec, _ in items], BENCH_ENGINE)
        diffs += [(t, e2e - (model[spec.id].finish - t)) for t, spec, e2e in items]
    return [1000 * percentile([d for t, d in diffs if s <= t < s + seconds], 50)
            for s in starts]


def _mean(runs: Sequence[RunStats], field: str) -> float:
    return float(sum(getattr(r, field) for r in runs)) / len(runs)


def des_check(traces: Mapping[str, Mapping[object, Trace]], names: list[str],
              capacity: list[float], starts: Sequence[float], seconds: float) -> list[str]:
    envoy: dict[str, dict[int, RunStats]] = {}
    des: dict[str, dict[int, list[RunStats]]] = {}
    policies = {p.name: p for p in POLICIES}
    excess: dict[str, list[float]] = {}
    for name, runs in traces.items():
        envoy[name] = {lv: runs[lv].stats(names, capacity) for lv in LEVELS}
        every = [excess_ms(t, names, starts, seconds) for t in ramps(runs)]
        excess[name] = [max(per_level) for per_level in zip(*every, strict=True)]
        seeds = [_windows(policies[name], runs["ramp"].reqs, names, capacity, starts,
                          seconds, s) for s in range(1, SEEDS + 1)]
        des[name] = {lv: [seed[k] for seed in seeds] for k, lv in enumerate(LEVELS)}
    rr = "round robin"
    print("\n## Simulation against Envoy, 4 pods, the same requests: mean latency as a ratio "
          f"to round robin (Envoy; simulation: mean of {SEEDS} seeds [their range]; "
          "p99 ratio in brackets; last column: Envoy's latency over podsim's for the same "
          "pod choices, median ms per level)\n")
    print("| policy | " + " | ".join(f"{lv} %: Envoy | DES" for lv in LEVELS)
          + " | Envoy − model |")
    print("|---|" + "---:|---:|" * len(LEVELS) + "---:|")
    worst, worst_at, inside, cells_n = 0.0, "", 0, 0
    chancy: list[str] = []  # cells whose simulated ratio moves > 15 % by seed alone
    stalled: list[str] = []  # cells measured while the machine stalled the Envoy run
    for name in envoy:
        cells = []
        for lv in LEVELS:
            e = ratio(envoy[name][lv].mean, envoy[rr][lv].mean)
            eq = ratio(envoy[name][lv].p99, envoy[rr][lv].p99)
            d = ratio(_mean(des[name][lv], "mean"), _mean(des[rr][lv], "mean"))
            dq = ratio(_mean(des[name][lv], "p99"), _mean(des[rr][lv], "p99"))
            spread = [ratio(a.mean, b.mean) for a, b in zip(des[name][lv], des[rr][lv],
                                                            strict=True)]
            lo, hi = min(spread), max(spread)
            cells.append(f"{fmt(e)} ({fmt(eq)}) | {fmt(d)} [{fmt(lo)}–{fmt(hi)}] ({fmt(dq)})")
            if name == rr or lv < 70:
                continue
            cells_n += 1
            inside += lo <= e <= hi
            if hi > 1.15 * d or lo < d / 1.15:
                chancy.append(f"{name} at {lv} %")
            k = LEVELS.index(lv)
            if max(excess[name][k], excess[rr][k]) > STALL_MS:
                stalled.append(f"{name} at {lv} %")
            error = abs(ratio(d, e) - 1)
            if error > worst:
                worst, worst_at = error, f"{name} at {lv} %"
        repeats = len(ramps(traces[name]))
        label = name + (f" ({repeats} ramps pooled)" if repeats > 1 else "")
        print(f"| {label} | " + " | ".join(cells) + " | "
              + " / ".join(f"{x:.0f}" for x in excess[name]) + " |")
    order_ok, pairs, wrong = 0, 0, []
    for a, b in itertools.combinations(envoy, 2):
        ea, eb = envoy[a][90].mean, envoy[b][90].mean
        if max(ea, eb) <= 1.15 * min(ea, eb):
            continue  # too close to order
        pairs += 1
        same = (ea < eb) == (_mean(des[a][90], "mean") < _mean(des[b][90], "mean"))
        order_ok += same
        if not same:
            orders = {x.mean < y.mean for x, y in zip(des[a][90], des[b][90], strict=True)}
            wrong.append(f"{a} / {b}" + (" (the seeds disagree too)" if len(orders) > 1
                                         else ""))
    return [
        check("simulation orders policies as Envoy does (mean at 90 %, pairs > 15 % apart)",
              order_ok == pairs, f"{order_ok} of {pairs}" + (f"; not: {', '.join(wrong)}"
                                                            if wrong else "")),
        check("simulation's mean-latency ratios to round robin within 15 % of Envoy's "
              "(70 and 90 %)", worst <= 0.15, f"worst {100 * worst:.0f} % ({worst_at})"),
        f"  [INFO] Envoy's ratio inside the simulation's range over {SEEDS} seeds in {inside} "
        f"of {cells_n} cells; chance alone moves the simulated ratio by more than 15 % in "
        f"{len(chancy)}" + (f" ({', '.join(chancy)})" if chancy else ""),
        f"  [INFO] cells whose Envoy run (or round robin's) ran over {STALL_MS:.0f} ms a request "
        f"slower than podsim for the same pod choices (a busy machine): {len(stalled)}"
        + (f" ({', '.join(stalled)})" if stalled else ""),
    ]

"""The discrete-event simulation beside the Envoy runs: the check at 4 pods and the scale run.

The check replays the exact requests of every Envoy run (arrival times, lengths,
keys) through the simulation with one proxy, as in the Envoy runs, and compares
each policy's mean latency as a ratio to round robin (p99 shown too; with a few
hundred requests per window it is too noisy to hold to 15 %): same order of
policies (pairs whose Envoy means differ by more than 15 % keep their order),
ratios within 15 %.
The scale run: 1,000 pods (500 H100, 500 A100), 50,000 requests/s, 32 proxies.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence

from bench.routing.envoy_bench import Trace
from bench.routing.fleet import BENCH_ENGINE, GPUS, SCALE_LENGTHS, saturation_rps
from bench.routing.report import check, fmt, ratio, run_table
from bench.routing.sim import POLICIES, Policy, simulate_fleet
from bench.routing.stats import RunStats, summarize
from bench.routing.workload import Req, mixed
from controlplane.podsim.profiles import EngineConfig

__all__ = ["des_check", "scale_runs", "sim_stats"]

DES_CONFIG = EngineConfig(enable_prefix_caching=False,
                          kv_capacity_tokens=BENCH_ENGINE.kv_capacity_tokens)
SCALE_PODS = 1000
SCALE_RATE = 50_000.0
SCALE_PROXIES = 32


def sim_stats(gpus: Sequence[str], policy: Policy, reqs: Sequence[Req], capacity: list[float],
              *, proxies: int = 1, config: EngineConfig = DES_CONFIG) -> RunStats:
    result = simulate_fleet(gpus, policy, reqs, proxies=proxies, config=config)
    records = result.records
    span = max(reqs[-1].t if reqs else 0.0, 1e-9)
    return summarize([r.e2e for r in records], [r.ttft for r in records],
                     [r.output for r in records], span, result.served, capacity)


def _windows(gpus: Sequence[str], policy: Policy, whole: Trace, capacity: list[float],
             starts: Sequence[float], seconds: float) -> list[RunStats]:
    """The simulation of a whole ramp, cut into the same windows as the Envoy run."""
    result = simulate_fleet(gpus, policy, whole.reqs, config=DES_CONFIG)
    out = []
    for start in starts:
        recs = [r for r in result.records if start <= r.arrival < start + seconds]
        served = [0.0] * len(gpus)
        for r in recs:
            if r.host >= 0:
                served[r.host] += 1
        out.append(summarize([r.e2e for r in recs], [r.ttft for r in recs],
                             [r.output for r in recs], seconds, served, capacity))
    return out


def des_check(traces: Mapping[str, Mapping[object, Trace]], names: list[str],
              capacity: list[float], starts: Sequence[float], seconds: float) -> list[str]:
    levels = (50, 70, 90)
    envoy: dict[str, dict[int, RunStats]] = {}
    des: dict[str, dict[int, RunStats]] = {}
    policies = {p.name: p for p in POLICIES}
    for name, runs in traces.items():
        envoy[name] = {lv: runs[lv].stats(names, capacity) for lv in levels}
        sims = _windows(GPUS, policies[name], runs["ramp"], capacity, starts, seconds)
        des[name] = dict(zip(levels, sims, strict=True))
    print("\n## Simulation against Envoy, 4 pods, the same requests: latency as a ratio "
          "to round robin (mean; p99 in brackets)\n")
    print("| policy | " + " | ".join(f"{lv} %: Envoy | DES" for lv in levels) + " |")
    print("|---|" + "---:|---:|" * len(levels))
    worst, worst_at = 0.0, ""
    for name in envoy:
        cells = []
        for lv in levels:
            pair = []
            for table in (envoy, des):
                m = ratio(table[name][lv].mean, table["round robin"][lv].mean)
                q = ratio(table[name][lv].p99, table["round robin"][lv].p99)
                pair.append((m, f"{fmt(m)} ({fmt(q)})"))
            cells.append(f"{pair[0][1]} | {pair[1][1]}")
            error = abs(ratio(pair[1][0], pair[0][0]) - 1)
            if name != "round robin" and lv >= 70 and error > worst:
                worst, worst_at = error, f"{name} at {lv} %"
        print(f"| {name} | " + " | ".join(cells) + " |")
    order_ok, pairs, wrong = 0, 0, []
    for a, b in itertools.combinations(envoy, 2):
        ea, eb = envoy[a][90].mean, envoy[b][90].mean
        if max(ea, eb) <= 1.15 * min(ea, eb):
            continue  # too close to order
        pairs += 1
        same = (ea < eb) == (des[a][90].mean < des[b][90].mean)
        order_ok += same
        if not same:
            wrong.append(f"{a} / {b}")
    return [
        check("simulation orders policies as Envoy does (mean at 90 %, pairs > 15 % apart)",
              order_ok == pairs, f"{order_ok} of {pairs}" + (f"; not: {', '.join(wrong)}"
                                                            if wrong else "")),
        check("simulation's mean-latency ratios to round robin within 15 % of Envoy's "
              "(70 and 90 %)", worst <= 0.15, f"worst {100 * worst:.0f} % ({worst_at})"),
    ]


def scale_runs(policies: Sequence[Policy], seconds: float = 2.5) -> str:
    gpus = ["h100"] * (SCALE_PODS // 2) + ["a100"] * (SCALE_PODS // 2)
    per_gpu = {g: saturation_rps(g, SCALE_LENGTHS) for g in ("h100", "a100")}
    capacity = sum(per_gpu[g] for g in gpus)
    reqs = mixed(SCALE_RATE, seconds, seed=3, lengths=SCALE_LENGTHS, users=20_000)
    weights = [per_gpu[g] for g in gpus]
    config = EngineConfig(enable_prefix_caching=False)
    results: dict[str, RunStats] = {}
    started = time.monotonic()
    for policy in policies:
        results[policy.name] = sim_stats(gpus, policy, reqs, weights, proxies=SCALE_PROXIES,
                                         config=config)
    prompt, output = SCALE_LENGTHS.means()
    return (f"\n## Simulation at scale: {SCALE_PODS} pods (half H100, half A100), "
            f"{SCALE_RATE:,.0f} req/s ({100 * SCALE_RATE / capacity:.0f} % of "
            f"{capacity:,.0f}), {SCALE_PROXIES} proxies, {seconds:.0f} s; mean prompt "
            f"{prompt:.0f}, output {output:.0f} tokens ({time.monotonic() - started:.0f} s "
            f"to simulate)\n\n" + run_table(results))

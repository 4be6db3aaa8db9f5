"""``python -m bench.routing [--quick] [--no-scale] [--seconds S]``: the routing benchmark.

Prints the machine, the fleet's measured capacity, per load level a table of
every policy through a real Envoy, a summary (saturation, throughput at the SLO,
prefix-cache hit rate), the seeds' table beside ours as ratios to round robin,
the offline class's effect on online latency, the simulation checked against
the Envoy runs at 4 pods, the simulation at 1,000 pods and 50,000 requests/s,
and the floors. A benchmark prints; it never fails on a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time

from bench.routing.envoy_bench import EnvoyBench, Trace, ramp, rows
from bench.routing.fleet import GPUS, LATENCY_LENGTHS, saturation_rps
from bench.routing.report import check, fmt, ratio, run_table, seed_table, summary_table
from bench.routing.scale import des_check, scale_runs
from bench.routing.sim import CAPACITY, POLICIES, Policy
from bench.routing.stats import RunStats
from bench.routing.workload import mixed, multiturn
from bench.xds_convergence import machine_description

LEVELS = (50, 70, 90)
WARMUP_S = 2.0
CACHE_S = 12.0
BATCH_SLOTS = 4  # offline.concurrencyPerPod: requests a capacity-1 pod holds comfortably
QUICK = ("round robin", "least request", "least request + capacity", "response_time",
         "maglev + bound 1.25", "hybrid")


async def envoy_runs(policies: list[Policy], capacity: float, seconds: float,
                     sat_seconds: float) -> tuple[dict[str, dict[object, Trace]],
                                                  dict[str, RunStats], list[str], EnvoyBench]:
    traces: dict[str, dict[object, Trace]] = {}
    batch: dict[str, RunStats] = {}
    async with EnvoyBench() as bench:
        names = bench.pod_names
        for i, policy in enumerate(policies):
            started = time.monotonic()
            await bench.apply(policy)
            # Warm-up at 50 % (weights settle, pools fill), then the levels back to back.
            segments = [mixed(0.5 * capacity, WARMUP_S, seed=99, lengths=LATENCY_LENGTHS)]
            segments += [mixed(lv / 100 * capacity, seconds, seed=lv, lengths=LATENCY_LENGTHS)
                         for lv in LEVELS]
            lengths = [WARMUP_S] + [seconds] * len(LEVELS)
            whole = await bench.open_loop(ramp(segments, lengths), sum(lengths))
            runs: dict[object, Trace] = {"ramp": whole}
            for k, level in enumerate(LEVELS):
                begin = WARMUP_S + k * seconds
                runs[level] = whole.window(begin, begin + seconds)
            sat = mixed(capacity, 120.0, seed=7, lengths=LATENCY_LENGTHS)
            runs["saturation"] = await bench.closed_loop(sat, 16 * len(GPUS), sat_seconds)
            # Every conversation's first turn, then the measured turns (all repeats).
            first, turns = multiturn(12.0, CACHE_S, seed=11, tag=f"p{i}-")
            await bench.open_loop(first, first[-1].t if first else 0.0)
            runs["cache"] = await bench.open_loop(turns, CACHE_S)
            traces[policy.name] = runs
            print(f"  {policy.name}: {time.monotonic() - started:.0f} s", flush=True)
        batch = await batch_run(bench, capacity, max(seconds, 12.0))
    return traces, batch, names, bench


async def batch_run(bench: EnvoyBench, capacity: float, seconds: float) -> dict[str, RunStats]:
    """Online traffic at 50 % alone, then with batch clients saturating the spare capacity."""
    policy = next(p for p in POLICIES if p.name == "least request + capacity")
    await bench.apply(policy, {"offline": {"concurrencyPerPod": BATCH_SLOTS,
                                           "retryAfter": "1s", "interval": "1s"}})
    online = mixed(0.5 * capacity, seconds, seed=50, lengths=LATENCY_LENGTHS)
    batch_reqs = mixed(capacity, 300.0, seed=31, lengths=LATENCY_LENGTHS)
    spec = {"concurrency": 48, "seconds": seconds, "requests": rows(batch_reqs)}
    alone = await bench.open_loop(online, seconds)
    together = await bench.open_loop(online, seconds, batch=spec)
    done = [r for r in together.extra["batch"] if r[1] == 200]
    refused = [r for r in together.extra["batch"] if r[1] == 503]
    caps = bench.app.routing.caps.get("bench") if bench.app else None
    names, cap = bench.pod_names, [1.0] * len(GPUS)
    print(f"  batch: {len(done)} done ({len(done) / seconds:.1f}/s), {len(refused)} refused "
          f"with Retry-After; cap now {caps}", flush=True)
    return {"online alone": alone.stats(names, cap), "online + batch": together.stats(names, cap)}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.routing")
    parser.add_argument("--quick", action="store_true", help="6 policies, 4 s runs")
    parser.add_argument("--no-scale", action="store_true", help="skip the 1,000-pod DES")
    parser.add_argument("--seconds", type=float, default=None, help="length of each run")
    args = parser.parse_args()
    seconds = args.seconds or (4.0 if args.quick else 5.0)
    policies = [p for p in POLICIES if not args.quick or p.name in QUICK]
    machine = machine_description()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()))
    per_gpu = {g: saturation_rps(g, LATENCY_LENGTHS) for g in sorted(set(GPUS))}
    capacity = sum(per_gpu[g] for g in GPUS)
    slowest = min(per_gpu.values())
    CAPACITY.update({g: round(r / slowest, 1) for g, r in per_gpu.items()})
    prompt, output = LATENCY_LENGTHS.means()
    print(f"fleet: {', '.join(GPUS)}; capacity {capacity:.1f} req/s at saturation "
          f"({', '.join(f'{g} {r:.1f}' for g, r in per_gpu.items())}); mean prompt "
          f"{prompt:.0f}, output {output:.0f} tokens; runs of {seconds:.0f} s; "
          f"capacity: {CAPACITY}")
    t0 = time.monotonic()
    traces, batch, names, _ = asyncio.run(envoy_runs(policies, capacity, seconds,
                                                     min(seconds, 3.0)))
    weights = [per_gpu[g] for g in GPUS]  # load per unit of measured capacity
    stats = {name: {k: t.stats(names, weights) for k, t in runs.items() if k != "ramp"}
             for name, runs in traces.items()}
    for level in LEVELS:
        print(f"\n## Envoy, {level} % of capacity ({level / 100 * capacity:.1f} req/s "
              "offered, open loop)\n")
        print(run_table({n: s[level] for n, s in stats.items()}))
    summary: dict[str, list[float]] = {}
    for name, s in stats.items():
        summary[name] = [s["saturation"].rps, s["saturation"].tps, s[90].goodput,
                         s["cache"].hit_rate, s["cache"].imbalance]
    print("\n## Summary (saturation: 16 clients per pod, closed loop; at SLO: requests/s "
          "with TTFT ≤ 1 s at 90 %; cache: multi-turn conversations)\n")
    print(summary_table(summary))
    rr = stats["round robin"]
    ours = {}
    for name in ("least request", "response_time"):
        if name in stats:
            ours[f"sluice: {name}"] = (ratio(stats[name][70].mean, rr[70].mean),
                                       ratio(stats[name][70].p99, rr[70].p99),
                                       ratio(summary[name][2], summary["round robin"][2]))
    print("\n## The seeds' table beside ours (latency at 70 %, throughput at the SLO at 90 %)"
          "\n")
    print(seed_table(ours))
    print("\n## Offline class: online at 50 % alone and with batch saturating the spare "
          "capacity\n")
    print(run_table(batch))
    print(f"\nEnvoy runs took {time.monotonic() - t0:.0f} s")
    starts = [WARMUP_S + k * seconds for k in range(len(LEVELS))]
    check_lines = des_check(traces, names, weights, starts, seconds)
    scale = "" if args.no_scale else scale_runs(policies, 2.0)
    print(scale)
    print("\n## Floors")
    floors(stats, summary, batch)
    for line in check_lines:
        print(line)
    return 0


def floors(stats: dict[str, dict[object, RunStats]], summary: dict[str, list[float]],
           batch: dict[str, RunStats]) -> None:
    rr = stats["round robin"]
    if "least request" in stats:
        r = ratio(stats["least request"][90].p99, rr[90].p99)
        print(check("least request p99 ≤ 0.75× round robin (90 %)", r <= 0.75, fmt(r)))
    best = min((n for n in stats if n not in ("round robin", "random")),
               key=lambda n: stats[n][90].p99)
    r = ratio(stats[best][90].p99, rr[90].p99)
    print(check(f"best Sluice policy ({best}) p99 ≤ 0.6× round robin (90 %)", r <= 0.6, fmt(r)))
    t = ratio(summary[best][2], summary["round robin"][2])
    print(check(f"{best}: throughput at the SLO ≥ 1.25× round robin", t >= 1.25, fmt(t)))
    if "hybrid" in stats:
        h = ratio(summary["hybrid"][3], summary["round robin"][3])
        ok = h >= 2.0 and summary["hybrid"][4] <= 1.3
        print(check("hybrid cache hit rate ≥ 2× round robin, busiest/mean ≤ 1.3", ok,
                    f"{fmt(h)}×, {fmt(summary['hybrid'][4])}"))
    alone, mixed_ = batch["online alone"], batch["online + batch"]
    r = ratio(mixed_.p99, alone.p99)
    print(check("online p99 with batch within 10 % of online alone", r <= 1.10 and
                not math.isnan(r), f"{fmt(r)}×"))


if __name__ == "__main__":
    raise SystemExit(main())

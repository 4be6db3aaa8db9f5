"""The discrete-event simulation at scale: 1,000 pods (500 H100, 500 A100), 50,000
requests/s, 32 proxies, ``FastPod`` pods (the check at 4 pods is ``descheck``)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from bench.routing.fleet import SCALE_LENGTHS, saturation_rps
from bench.routing.report import run_table
from bench.routing.sim import Policy, simulate_fleet
from bench.routing.stats import RunStats, summarize
from bench.routing.workload import Req, mixed
from controlplane.podsim.profiles import EngineConfig

__all__ = ["scale_runs", "sim_stats"]

SCALE_PODS = 1000
SCALE_RATE = 50_000.0
SCALE_PROXIES = 32


def sim_stats(gpus: Sequence[str], policy: Policy, reqs: Sequence[Req], capacity: list[float],
              *, proxies: int = 1, config: EngineConfig | None = None) -> RunStats:
    result = simulate_fleet(gpus, policy, reqs, proxies=proxies, config=config)
    records = result.records
    span = max(reqs[-1].t if reqs else 0.0, 1e-9)
    return summarize([r.e2e for r in records], [r.ttft for r in records],
                     [r.output for r in records], span, result.served, capacity)


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


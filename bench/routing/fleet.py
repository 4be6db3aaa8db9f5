"""The benchmark's fleet: GPUs, their measured capacity, and each policy's ModelService.

Capacity of a pod is its throughput at saturation (64 requests in flight, the way
model-server benchmarks measure it) on the benchmark's own request mix, measured
with the simulation's pod model (podsim's timing) before any run; the fleet's
capacity is the sum, and the load levels are fractions of it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from bench.routing.fastpod import FastPod, Job
from bench.routing.sim import CAPACITY, Policy
from bench.routing.workload import Lengths
from controlplane.podsim.profiles import EngineConfig, profile

__all__ = [
    "BENCH_ENGINE",
    "GPUS",
    "LATENCY_LENGTHS",
    "SCALE_LENGTHS",
    "SERVICE",
    "policy_spec",
    "saturation_rps",
]

SERVICE = "bench"  # the ModelService's name
GPUS = ("h100", "h100", "a100", "a100")
# Prompts up to 4,000 tokens (median 600), outputs up to 400 (median 40): an A100
# can still answer the longest prompt within the 1 s TTFT objective.
LATENCY_LENGTHS = Lengths(600, 0.9, 4000, 40, 0.8, 400)
# At 1,000 pods and 50,000 requests/s: shorter requests, same shape.
SCALE_LENGTHS = Lengths(160, 0.8, 1200, 16, 0.8, 160)
# A KV cache small enough that the conversations of all users do not fit one pod
# (120k tokens instead of ≈430k): where a turn lands decides whether it hits.
BENCH_ENGINE = EngineConfig(kv_capacity_tokens=120_000)


def saturation_rps(gpu: str, lengths: Lengths, *, concurrency: int = 64,
                   requests: int = 3000, seed: int = 5) -> float:
    """Completed requests/s of one pod kept at ``concurrency`` requests in flight."""
    rng = random.Random(seed)
    config = EngineConfig(enable_prefix_caching=False,
                          kv_capacity_tokens=BENCH_ENGINE.kv_capacity_tokens)
    pod = FastPod(0, profile(gpu), config)
    t, k, done = 0.0, 0, 0
    for _ in range(concurrency):
        p, o = lengths.draw(rng)
        pod.submit(Job(k, p, o, t), t)
        k += 1
    while done < requests:
        nxt = pod.next_event()
        assert nxt is not None
        t = nxt
        for _ in pod.advance(t):
            done += 1
            p, o = lengths.draw(rng)
            pod.submit(Job(k, p, o, t), t)
            k += 1
    return done / t


def policy_spec(policy: Policy, endpoints: Sequence[dict[str, Any]],
                listener: dict[str, Any], extra: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """The ModelService document that runs ``policy`` over ``endpoints`` (with gpu labels)."""
    lb: dict[str, Any] = {"policy": policy.sluice}
    if policy.capacity:
        lb["capacity"] = dict(CAPACITY)
    if policy.kind in ("ring", "maglev", "hybrid"):
        lb["hashKey"] = {"header": "x-session-id"}
    if policy.bounded is not None:
        lb["boundedLoad"] = policy.bounded
    if policy.sluice == "response_time":
        lb["responseTime"] = {"interval": "2s"}
    spec: dict[str, Any] = {"listener": listener, "loadBalancing": lb,
                            "versions": [{"name": "v1", "weight": 100,
                                          "endpoints": list(endpoints)}]}
    spec.update(extra or {})
    return {"apiVersion": "sluice.dev/v1alpha1", "kind": "ModelService",
            "metadata": {"name": SERVICE}, "spec": spec}

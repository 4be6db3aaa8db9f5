"""The pods' timing model: the formula at light load, and the simulation's pod against it."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.routing.fastpod import FastPod, Job
from controlplane.podsim.engine import RequestSpec
from controlplane.podsim.profiles import PROFILES, EngineConfig, GpuProfile, profile
from controlplane.podsim.simulate import simulate

CFG = EngineConfig(enable_prefix_caching=False)


def isolated(g: GpuProfile, prompt: int, output: int) -> tuple[float, float]:
    """TTFT and end-to-end latency of a request alone on the pod (prompt within one step):
    the API overhead, one prefill step, then one decode step per further token."""
    ttft = CFG.api_overhead_s + g.step_floor_s + prompt / g.prefill_tokens_per_s + \
        g.kv_time_per_token_s * prompt
    e2e = ttft + sum(g.step_floor_s + g.kv_time_per_token_s * (prompt + i) + g.per_seq_s
                     for i in range(1, output))
    return ttft, e2e


def run_fast(g: GpuProfile, arrivals: list[tuple[float, int, int]],
             config: EngineConfig = CFG) -> list[Job]:
    pod = FastPod(0, g, config)
    jobs = [Job(i, p, o, t) for i, (t, p, o) in enumerate(arrivals)]
    k = 0
    while True:
        nxt = pod.next_event()
        if k < len(jobs) and (nxt is None or jobs[k].arrival <= nxt):
            pod.advance(jobs[k].arrival)
            pod.submit(jobs[k], jobs[k].arrival)
            k += 1
        elif nxt is not None:
            pod.advance(nxt)
        else:
            return jobs


def poisson(rate: float, n: int, seed: int) -> list[tuple[float, int, int]]:
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        out.append((t, rng.randint(100, 3000), rng.randint(1, 60)))
    return out


@pytest.mark.parametrize("gpu", ["h100", "a100"])
def test_light_load_matches_the_isolated_request_formula(gpu: str) -> None:
    """At 2 % utilization requests rarely overlap: the mean latency is the formula's."""
    g = profile(gpu)
    arrivals = poisson(0.05, 400, seed=3)
    expected = [isolated(g, p, o) for _, p, o in arrivals]
    mean_ttft = sum(t for t, _ in expected) / len(expected)
    mean_e2e = sum(e for _, e in expected) / len(expected)
    timelines = simulate(g, [(t, RequestSpec(str(i), p, o)) for i, (t, p, o)
                             in enumerate(arrivals)], CFG)
    engine_ttft = sum(tl.first_token - tl.arrival for tl in timelines.values()) / len(arrivals)
    engine_e2e = sum(tl.finish - tl.arrival for tl in timelines.values()) / len(arrivals)
    assert engine_ttft == pytest.approx(mean_ttft, rel=0.03)
    assert engine_e2e == pytest.approx(mean_e2e, rel=0.03)
    fast = run_fast(g, arrivals)
    assert sum(j.finish - j.arrival for j in fast) / len(fast) == pytest.approx(  # type: ignore[operator]
        engine_e2e, rel=1e-9)


def test_a_single_request_is_exactly_the_formula() -> None:
    g = PROFILES["h100"]
    [job] = run_fast(g, [(1.0, 1200, 9)])
    ttft, e2e = isolated(g, 1200, 9)
    assert job.first_token is not None and job.finish is not None
    assert job.first_token - 1.0 == pytest.approx(ttft, rel=1e-12)
    assert job.finish - 1.0 == pytest.approx(e2e, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["h100", "a100"]), st.floats(0.5, 40.0), st.integers(0, 10_000))
def test_the_simulation_pod_keeps_the_engines_timing_under_load(gpu: str, rate: float,
                                                               seed: int) -> None:
    """Any load (queueing, batching, chunked prefill): the same token times as podsim's
    engine, as long as the KV cache never has to preempt."""
    g = profile(gpu)
    arrivals = poisson(rate, 60, seed)
    timelines = simulate(g, [(t, RequestSpec(str(i), p, o)) for i, (t, p, o)
                             in enumerate(arrivals)], CFG)
    for job in run_fast(g, arrivals):
        tl = timelines[str(job.id)]
        assert job.first_token == pytest.approx(tl.first_token, rel=1e-9, abs=1e-9)
        assert job.finish == pytest.approx(tl.finish, rel=1e-9, abs=1e-9)


def test_a_pod_admits_online_requests_before_waiting_batch_ones() -> None:
    """Priority scheduling (vLLM's ``--scheduling-policy priority``; Sluice's batch route
    marks requests ``x-sluice-class: batch``, priority 1): with the batch full, a later
    online request is admitted before batch requests that waited longer."""
    cfg = EngineConfig(api_overhead_s=0.0, max_num_seqs=1, enable_prefix_caching=False)
    arrivals = [(0.0, RequestSpec("b0", 10, 5, priority=1)),
                (1e-6, RequestSpec("b1", 10, 5, priority=1)),
                (2e-6, RequestSpec("online", 10, 5))]
    out = simulate(PROFILES["h100"], arrivals, cfg)
    assert out["b0"].first_token < out["online"].first_token < out["b1"].first_token

"""Priority classes in the pod's scheduler (vLLM's ``--scheduling-policy priority``):
Sluice's batch class (priority 1) gets only what online requests leave, and a batch
request that gives way resumes and completes."""

from __future__ import annotations

import pytest

from controlplane.podsim.engine import Engine, RequestSpec
from controlplane.podsim.profiles import PROFILES, EngineConfig, GpuProfile
from controlplane.podsim.simulate import simulate

H100 = PROFILES["h100"]
ONE_SLOT = EngineConfig(api_overhead_s=0.0, max_num_seqs=1, enable_prefix_caching=False)


def step(g: GpuProfile, *, prefill: int = 0, context: int = 0, decoding: int = 0) -> float:
    return (g.step_floor_s + prefill / g.prefill_tokens_per_s + g.kv_time_per_token_s * context
            + g.per_seq_s * decoding)


def alone(start: float, prompt: int, output: int) -> list[float]:
    """Token times of a request alone on the GPU from ``start`` (one prefill step)."""
    times = [start + step(H100, prefill=prompt, context=prompt)]
    for i in range(1, output):
        times.append(times[-1] + step(H100, context=prompt + i, decoding=1))
    return times


def test_an_online_request_is_not_delayed_by_batch_holding_every_slot() -> None:
    """The only slot is a batch request's; another waits. An online request arriving
    mid-run preempts the running one at the next step and then runs exactly as if
    alone; the preempted request resumes ahead of the other batch request, recomputes
    its prompt and the tokens it had emitted in one step, and completes."""
    engine = Engine(H100, ONE_SLOT)
    arrivals = [(0.0, RequestSpec("b0", 1000, 400, priority=1)),
                (0.0, RequestSpec("b1", 1000, 50, priority=1)),
                (0.5, RequestSpec("online", 800, 30))]
    out = simulate(H100, arrivals, engine=engine)
    before = [t for t in alone(0.0, 1000, 400) if t < 0.5]
    start = next(t for t in alone(0.0, 1000, 400) if t >= 0.5)  # the step under way ends
    assert out["online"].token_times == pytest.approx(alone(start, 800, 30), rel=1e-12)
    b0 = out["b0"].token_times
    assert b0[:len(before) + 1] == pytest.approx([*before, start], rel=1e-12)
    emitted = len(before) + 1
    resumed = out["online"].finish + step(H100, prefill=1000 + emitted, context=1000 + emitted)
    assert b0[emitted] == pytest.approx(resumed, rel=1e-12)
    assert len(b0) == 400 and b0 == sorted(b0)
    assert out["b1"].first_token > out["b0"].finish
    assert engine.stats.preemptions == 1 and engine.pool.in_use == 0


def test_without_classes_an_online_request_waits_its_turn() -> None:
    """The same arrivals all in one class: first come, first served, nobody preempted."""
    engine = Engine(H100, ONE_SLOT)
    arrivals = [(0.0, RequestSpec("b0", 1000, 400)), (0.0, RequestSpec("b1", 1000, 50)),
                (0.5, RequestSpec("online", 800, 30))]
    out = simulate(H100, arrivals, engine=engine)
    assert out["online"].first_token > out["b1"].finish > out["b0"].finish
    assert engine.stats.preemptions == 0


def test_batch_requests_queue_behind_batch_without_preempting_it() -> None:
    engine = Engine(H100, ONE_SLOT)
    out = simulate(H100, [(0.0, RequestSpec("b0", 500, 40, priority=1)),
                          (0.1, RequestSpec("b1", 500, 40, priority=1))], engine=engine)
    assert out["b1"].first_token > out["b0"].finish
    assert engine.stats.preemptions == 0


@pytest.mark.parametrize("classes", [True, False])
def test_when_the_kv_cache_runs_out_the_batch_request_gives_way(classes: bool) -> None:
    """Both requests outgrow a small KV cache. By default the last admitted (here the
    online one) is preempted; with classes the batch one is, though it came first and
    is already in the step being planned."""
    cfg = EngineConfig(api_overhead_s=0.0, kv_capacity_tokens=40 * 16,
                       enable_prefix_caching=False)
    engine = Engine(H100, cfg)
    out = simulate(H100, [(0.0, RequestSpec("batch", 100, 300, priority=int(classes))),
                          (0.001, RequestSpec("online", 100, 300))], engine=engine)
    assert engine.stats.preemptions > 0
    assert all(len(tl.token_times) == 300 for tl in out.values())
    assert engine.pool.in_use == 0
    if classes:
        assert out["online"].finish < out["batch"].finish
        gaps = [b - a for a, b in zip(out["online"].token_times, out["online"].token_times[1:],
                                      strict=False)]
        assert max(gaps) < 2 * step(H100, context=800, decoding=2)  # never stopped
    else:
        assert out["batch"].finish < out["online"].finish

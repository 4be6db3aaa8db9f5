"""The pure timing core: formula at light load, token budget, KV budget, queueing,
prefix cache, preemption, stalls, cancellation; properties over random workloads."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.podsim.blocks import prefix_block_hashes, text_block_hashes, text_tokens
from controlplane.podsim.engine import Engine, RequestSpec
from controlplane.podsim.profiles import PROFILES, EngineConfig, GpuProfile, profile
from controlplane.podsim.simulate import simulate

H100 = PROFILES["h100"]


def step(g: GpuProfile, *, prefill: int = 0, context: int = 0, decoding: int = 0) -> float:
    return (
        g.step_floor_s
        + prefill / g.prefill_tokens_per_s
        + g.kv_time_per_token_s * context
        + g.per_seq_s * decoding
    )


@pytest.mark.parametrize("gpu", sorted(PROFILES))
def test_single_request_matches_the_formula(gpu: str) -> None:
    g = profile(gpu)
    cfg = EngineConfig()
    prompt, output, t0 = 1000, 6, 3.0
    tl = simulate(g, [(t0, RequestSpec("a", prompt, output))], cfg)["a"]
    expected = [t0 + cfg.api_overhead_s + step(g, prefill=prompt, context=prompt)]
    for i in range(1, output):
        expected.append(expected[-1] + step(g, context=prompt + i, decoding=1))
    assert tl.token_times == pytest.approx(expected, rel=1e-12)
    assert tl.first_token == pytest.approx(expected[0])
    assert tl.finish == pytest.approx(expected[-1])


def test_profiles_reproduce_the_reference_itl() -> None:
    # 64 sequences x 2k context: ≈14 ms (H100), ≈22 ms (A100), ≈105 ms (L4).
    for name, ms in (("h100", 14), ("a100", 22), ("l4", 105)):
        itl = step(profile(name), context=64 * 2048, decoding=64)
        assert itl * 1000 == pytest.approx(ms, rel=0.05)
    assert profile("A100-80GB") is PROFILES["a100"]
    with pytest.raises(ValueError, match="unknown GPU"):
        profile("tpu")


def test_a_long_prompt_is_prefilled_in_budget_sized_chunks() -> None:
    cfg = EngineConfig(api_overhead_s=0.0)
    tl = simulate(H100, [(0.0, RequestSpec("a", 20_000, 1))], cfg)["a"]
    chunks = [(8192, 8192), (8192, 16384), (3616, 20000)]
    assert tl.first_token == pytest.approx(sum(step(H100, prefill=n, context=c) for n, c in chunks))


def test_a_long_prefill_slows_the_decodes_sharing_its_step() -> None:
    cfg = EngineConfig(api_overhead_s=0.0)
    a_first = step(H100, prefill=100, context=100)
    arrivals = [(0.0, RequestSpec("a", 100, 3)), (a_first / 2, RequestSpec("b", 8000, 1))]
    out = simulate(H100, arrivals, cfg)
    # Step 2 (from a_first) runs a's decode and b's whole prompt: one shared budget.
    shared = step(H100, prefill=8000, context=101 + 8000, decoding=1)
    assert out["a"].token_times[1] == pytest.approx(a_first + shared)
    assert out["b"].first_token == pytest.approx(a_first + shared)


def test_the_kv_budget_bounds_the_batch_and_the_rest_wait() -> None:
    # 10 blocks of 16 tokens; each request ends at 64 + 16 = 80 tokens = 5 blocks.
    cfg = EngineConfig(api_overhead_s=0.0, kv_capacity_tokens=160)
    engine = Engine(H100, cfg)
    for i in range(4):
        engine.submit(RequestSpec(f"r{i}", 64, 16), 0.0)
    most = 0
    finished: dict[str, float] = {}
    first: dict[str, float] = {}
    while (t := engine.next_event()) is not None:
        for ev in engine.advance(t):
            first.setdefault(ev.request_id, ev.time)
            if ev.last:
                finished[ev.request_id] = ev.time
        most = max(most, engine.running)
        assert engine.pool.in_use <= engine.pool.num_blocks
        if engine.running:
            assert engine.waiting == 4 - len(finished) - engine.running
    assert most == 2
    assert engine.stats.preemptions == 0
    assert first["r2"] >= max(finished["r0"], finished["r1"])


def test_max_num_seqs_queues_the_rest_first_come_first_served() -> None:
    cfg = EngineConfig(api_overhead_s=0.0, max_num_seqs=2)
    engine = Engine(H100, cfg)
    for i in range(5):
        engine.submit(RequestSpec(f"r{i}", 10, 4), 0.0)
    engine.advance(0.001)
    assert (engine.running, engine.waiting) == (2, 3)
    out = simulate(H100, [(i * 1e-6, RequestSpec(f"r{i}", 10, 4)) for i in range(5)], cfg)
    starts = [out[f"r{i}"].first_token for i in range(5)]
    assert starts == sorted(starts)
    assert starts[2] > out["r0"].finish - 1e-12


def test_prefix_cache_hits_skip_their_prefill() -> None:
    cfg = EngineConfig()
    text = " ".join(f"w{i}" for i in range(1000))
    ids = text_tokens(text)
    assert len(ids) == 1000
    hashes = text_block_hashes(ids, cfg.block_size)
    engine = Engine(H100, cfg)
    out = simulate(
        H100,
        [(0.0, RequestSpec("a", 1000, 2, hashes)), (5.0, RequestSpec("b", 1000, 2, hashes))],
        engine=engine,
    )
    hit = (1000 - 1) // 16 * 16  # whole blocks, and at least one token is computed
    assert out["a"].first_token == pytest.approx(
        cfg.api_overhead_s + step(H100, prefill=1000, context=1000)
    )
    assert out["b"].first_token - 5.0 == pytest.approx(
        cfg.api_overhead_s + step(H100, prefill=1000 - hit, context=1000)
    )
    assert (engine.stats.prefix_queries, engine.stats.prefix_hits) == (2000, hit)


def test_a_named_prefix_is_shared_and_the_rest_is_not() -> None:
    bs = 16
    a = prefix_block_hashes("tenant-1", 512, 800, bs, unique=1)
    b = prefix_block_hashes("tenant-1", 512, 800, bs, unique=2)
    c = prefix_block_hashes("tenant-2", 512, 800, bs, unique=3)
    assert len(a) == 50 and a[:32] == b[:32] and a[32:] != b[32:]
    assert not set(a) & set(c)
    engine = Engine(H100, EngineConfig())
    arrivals = [(0.0, RequestSpec("a", 800, 1, a)), (1.0, RequestSpec("b", 800, 1, b))]
    simulate(H100, arrivals, engine=engine)
    assert engine.stats.prefix_hits == 512


def test_the_prefix_cache_forgets_least_recently_used_blocks() -> None:
    cfg = EngineConfig(api_overhead_s=0.0, kv_capacity_tokens=64 * 16)
    engine = Engine(H100, cfg)

    def mk(key: str, t: float) -> tuple[float, RequestSpec]:
        return t, RequestSpec(key + str(t), 320, 1, prefix_block_hashes(key, 320, 320, 16, 0))

    simulate(H100, [mk("x", 0.0), mk("y", 1.0), mk("z", 2.0), mk("x", 3.0)], engine=engine)
    assert engine.stats.prefix_hits == 304  # x still cached: 3 x 20 blocks fit in 64
    simulate(H100, [mk("w", 4.0), mk("v", 5.0), mk("y", 6.0)], engine=engine)
    assert engine.stats.prefix_hits == 304  # y was evicted by w and v


def test_decode_growth_beyond_the_kv_cache_preempts_and_everyone_finishes() -> None:
    cfg = EngineConfig(api_overhead_s=0.0, kv_capacity_tokens=40 * 16)
    engine = Engine(H100, cfg)
    arrivals = [(0.0, RequestSpec(f"r{i}", 100, 200)) for i in range(3)]
    out = simulate(H100, arrivals, engine=engine)
    assert engine.stats.preemptions > 0
    assert all(len(tl.token_times) == 200 for tl in out.values())
    assert engine.pool.in_use == 0


def test_a_stall_holds_the_gpu() -> None:
    cfg = EngineConfig(api_overhead_s=0.0)
    engine = Engine(H100, cfg)
    engine.submit(RequestSpec("a", 100, 3), 0.0)
    engine.stall(0.0, 2.0)
    first = step(H100, prefill=100, context=100)
    assert engine.advance(1.9) == []
    events = engine.advance(2.0 + first)
    assert [e.time for e in events] == [pytest.approx(2.0 + first)]
    engine.stall(events[0].time + 0.001, 1.0)  # mid-step: the step ends 1 s later
    nxt = engine.advance(10.0)
    assert nxt[0].time == pytest.approx(events[0].time + 1.0 + step(H100, context=101, decoding=1))


def test_cancel_frees_the_blocks_and_silences_the_request() -> None:
    engine = Engine(H100, EngineConfig(api_overhead_s=0.0))
    engine.submit(RequestSpec("a", 500, 50), 0.0)
    engine.submit(RequestSpec("b", 500, 20), 0.0)
    engine.advance(0.05)
    assert engine.running == 2 and engine.pool.in_use > 0
    assert engine.cancel("a") and not engine.cancel("a")
    rest = engine.advance(100.0)
    assert {e.request_id for e in rest} == {"b"}
    assert engine.pool.in_use == 0 and engine.in_flight == 0
    assert engine.stats.finished == {"abort": 1, "length": 1}


def test_submit_rejects_what_can_never_run() -> None:
    engine = Engine(H100, EngineConfig(kv_capacity_tokens=1024))
    with pytest.raises(ValueError, match="exceeds the KV cache"):
        engine.submit(RequestSpec("a", 1000, 100), 0.0)
    with pytest.raises(ValueError):
        engine.submit(RequestSpec("b", 0, 1), 0.0)
    engine.submit(RequestSpec("c", 10, 1), 0.0)
    with pytest.raises(ValueError, match="already in flight"):
        engine.submit(RequestSpec("c", 10, 1), 0.0)


def test_load_reports_batch_kv_busy_and_rate() -> None:
    engine = Engine(H100, EngineConfig(api_overhead_s=0.0))
    for i in range(4):
        engine.submit(RequestSpec(f"r{i}", 1000, 100), 0.0)
    engine.advance(0.5)
    load = engine.load(0.5)
    assert (load.running, load.waiting) == (4, 0)
    assert load.kv_usage == engine.pool.in_use / engine.pool.num_blocks
    assert 4 * math.ceil(1000 / 16) < engine.pool.in_use <= 4 * math.ceil(1100 / 16)
    assert load.busy == pytest.approx(0.5, rel=1e-6)  # stepping since 0, over a 1 s window
    assert load.rps == pytest.approx(0.4)
    assert load.utilization == pytest.approx(4 / 256)


workloads = st.lists(
    st.tuples(
        st.floats(0, 2, allow_nan=False),
        st.integers(1, 3000),
        st.integers(1, 60),
        st.sampled_from([None, "p1", "p2"]),
    ),
    min_size=1,
    max_size=25,
)
configs = st.builds(
    EngineConfig,
    max_num_seqs=st.integers(1, 8),
    max_num_batched_tokens=st.integers(16, 4096),
    kv_capacity_tokens=st.integers(3100 // 16 + 1, 600).map(lambda b: b * 16),
    api_overhead_s=st.sampled_from([0.0, 0.01]),
    enable_prefix_caching=st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(workloads, configs)
def test_tokens_come_in_order_and_nothing_ends_before_it_starts(
    workload: list[tuple[float, int, int, str | None]], cfg: EngineConfig
) -> None:
    arrivals = [
        (t, RequestSpec(f"r{i}", p, o, prefix_block_hashes(k, 1024, p, cfg.block_size, i)))
        for i, (t, p, o, k) in enumerate(workload)
    ]
    engine = Engine(H100, cfg)
    out: dict[str, list[float]] = {spec.id: [] for _, spec in arrivals}
    pending = sorted(arrivals, key=lambda a: a[0])
    while pending or engine.next_event() is not None:
        t_next = engine.next_event()
        if pending and (t_next is None or pending[0][0] <= t_next):
            at, spec = pending.pop(0)
            events = engine.advance(at)
            engine.submit(spec, at)
        else:
            assert t_next is not None
            events = engine.advance(t_next)
        for ev in events:
            assert ev.token == len(out[ev.request_id])
            out[ev.request_id].append(ev.time)
        assert engine.running <= cfg.max_num_seqs
        assert engine.pool.in_use <= engine.pool.num_blocks
    for at, spec in arrivals:
        times = out[spec.id]
        assert len(times) == spec.output_tokens
        assert all(a < b for a, b in itertools.pairwise(times))
        assert times[0] >= at + cfg.api_overhead_s
    assert engine.pool.in_use == 0 and engine.in_flight == 0
    assert engine.stats.generation_tokens == sum(s.output_tokens for _, s in arrivals)

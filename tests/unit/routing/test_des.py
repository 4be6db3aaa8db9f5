"""The routing simulation's parts against what they stand for: Envoy's hashing and load
balancers, podsim's scheduler, the benchmark's offline rounds."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from bench.routing.__main__ import replay
from bench.routing.batchcheck import BATCH_S, round_stream
from bench.routing.descheck import CHANCE, chance_spread, pooled, ramps
from bench.routing.enginepod import EnginePod
from bench.routing.envoy_bench import Trace, ramp
from bench.routing.envoyhash import envoy_hashing, maglev_table, mt19937, ring, xxh64
from bench.routing.fastpod import Job
from bench.routing.routers import Proxy, ring_host
from bench.routing.sim import BatchLoad, Policy, simulate_fleet
from bench.routing.workload import Req, mixed
from controlplane.podsim.engine import RequestSpec
from controlplane.podsim.profiles import PROFILES, EngineConfig
from controlplane.podsim.simulate import simulate

ADDRESSES = ["127.0.0.1:41000", "127.0.0.1:41001", "127.0.0.1:41002", "127.0.0.1:41003"]


def test_xxh64_reference_vectors() -> None:
    assert xxh64(b"") == 0xEF46DB3751D8E999
    assert xxh64(b"a") == 0xD24EC4F1A98C6E5B
    assert xxh64(b"xxhash") == 0x32DD38952C4BC720
    assert xxh64(b"Nobody inspects the spammish repetition") == 0xFBCEA83C8A378BF1  # ≥ 32 bytes


def test_mt19937_is_the_standard_generator() -> None:
    # The C++ standard: the 10,000th draw of a default-seeded mt19937 is 4123659995.
    rng = mt19937(5489)
    draws = [rng.getrandbits(32) for _ in range(10_000)]
    assert draws[0] == 3499211612 and draws[-1] == 4123659995


def test_maglev_and_ring_share_keys_by_weight() -> None:
    weights = [270, 270, 100, 100]
    table = maglev_table(ADDRESSES, weights, 65537)
    share = Counter(table)
    for h, w in enumerate(weights):
        assert share[h] / len(table) == pytest.approx(w / sum(weights), abs=0.002)
    points, owners = ring(ADDRESSES, weights, 4096)
    assert points == sorted(points) and set(owners) == {0, 1, 2, 3}
    assert ring_host(points, owners, points[-1] + 1) == owners[0]  # wraps around
    assert ring_host(points, owners, points[3]) == owners[3]  # an entry owns its own hash


def test_bounded_load_uses_envoys_integer_slots_and_spills_when_overloaded() -> None:
    proxy = Proxy("maglev", [1.0] * 4, random.Random(1), bounded=1.25,
                  hashing=envoy_hashing("maglev", ADDRESSES, [1] * 4))
    home = proxy.pick("user-7", 0.0)
    assert all(proxy.pick("user-7", 0.0) == home for _ in range(5))  # nothing in flight
    # 4 in flight, all at home: slots = ceil(ceil(5 × 1.25) / 4) = 2; home holds 4 > 2.
    for _ in range(4):
        proxy.started(home)
    assert proxy._overload(home) == 2.0
    spilled = proxy.pick("user-7", 0.0)
    assert spilled != home
    assert proxy.pick("user-7", 0.0) == spilled  # the same key walks the same sequence


def test_two_choices_are_drawn_with_replacement_and_ties_keep_the_first() -> None:
    proxy = Proxy("lr", [1.0] * 4, random.Random(3))
    for h in (1, 2, 3):
        proxy.started(h)
    picks = Counter(proxy.pick(None, 0.0) for _ in range(4000))
    # Host 0 (idle) wins unless neither draw is 0; the others tie among themselves.
    assert picks[0] / 4000 == pytest.approx(1 - (3 / 4) ** 2, abs=0.03)


def test_hybrid_counts_its_two_clusters_apart() -> None:
    proxy = Proxy("hybrid", [1.0] * 4, random.Random(1), bounded=1.25,
                  hashing=envoy_hashing("maglev", ADDRESSES, [1] * 4))
    proxy.started(0, "user-1")
    proxy.started(1)
    assert proxy.affinity == [1, 0, 0, 0] and proxy.active == [0, 1, 0, 0]
    proxy.finished(0, "user-1")
    assert proxy.affinity_total == 0 and proxy.total_active == 1


def test_the_simulations_engine_pod_runs_podsims_scheduler() -> None:
    """The same arrivals through ``EnginePod`` and ``simulate``: the same token times."""
    config = EngineConfig(kv_capacity_tokens=20_000)
    rng = random.Random(5)
    arrivals = []
    t = 0.0
    for i in range(80):
        t += rng.expovariate(20.0)
        arrivals.append((t, rng.randint(100, 3000), rng.randint(1, 80), i % 3 == 0))
    expected = simulate(PROFILES["a100"], [(t, RequestSpec(str(i), p, o, priority=int(b)))
                                           for i, (t, p, o, b) in enumerate(arrivals)], config)
    pod = EnginePod(0, PROFILES["a100"], config)
    jobs = [Job(i, p, o, t, priority=int(b)) for i, (t, p, o, b) in enumerate(arrivals)]
    k = 0
    while k < len(jobs) or pod.next_event() is not None:
        nxt = pod.next_event()
        if k < len(jobs) and (nxt is None or jobs[k].arrival <= nxt):
            pod.advance(jobs[k].arrival)
            pod.submit(jobs[k], jobs[k].arrival)
            k += 1
        else:
            assert nxt is not None
            pod.advance(nxt)
    assert pod.engine.stats.preemptions > 0  # the KV cache was tight: preemption exercised
    for job in jobs:
        assert job.first_token == expected[str(job.id)].first_token
        assert job.finish == expected[str(job.id)].finish


def test_batch_clients_stay_under_the_cap_and_every_online_request_completes() -> None:
    policy = Policy("least request + capacity", "lr", capacity=True, sluice="least_request")
    online = mixed(4.0, 12.0, seed=4)
    batch = BatchLoad(tuple(mixed(40.0, 60.0, seed=5)), clients=16, start=4.0, end=10.0,
                      per_pod=4)
    result = simulate_fleet(["h100", "a100"], policy, online, engine=True, batch=batch)
    assert len(result.records) == len(online) and all(r.e2e is not None
                                                      for r in result.records)
    assert result.batch_done > 0 and result.batch_refused > 0 and result.caps
    assert max(result.caps) <= 4 * (2.0 + 1.0)  # concurrencyPerPod × capacity, all spare


def test_the_offline_rounds_repeat_the_alone_window_beside_the_same_load() -> None:
    stream, alone, together = round_stream(40.0, 0)
    def window(start: float) -> list[tuple[float, int, int]]:
        return [(round(r.t - start, 9), r.prompt, r.output) for r in stream
                if start <= r.t < start + BATCH_S]
    assert window(alone) == window(together) and window(alone)
    gap = together - (alone + BATCH_S)
    before = [(round(r.t - (alone - gap), 9), r.prompt) for r in stream if r.t < alone]
    after = [(round(r.t - (together + BATCH_S), 9), r.prompt) for r in stream
             if r.t >= together + BATCH_S]
    assert before == after  # the same load before the first window and after the last


def _ramp() -> tuple[list[Req], list[float], float]:
    """The benchmark's ramp shape at 4 pods' capacity: a warm-up, then 50, 70, 90 %."""
    capacity, seconds = 71.0, 5.0
    segments = [mixed(0.5 * capacity, 2.0, seed=99)]
    segments += [mixed(lv / 100 * capacity, seconds, seed=lv) for lv in (50, 70, 90)]
    return ramp(segments, [2.0, seconds, seconds, seconds]), [2.0, 7.0, 12.0], seconds


def test_chance_spread_tells_random_draws_from_a_policy_that_corrects_itself() -> None:
    reqs, starts, seconds = _ramp()
    draws = chance_spread(Policy("random", "random"), reqs, ADDRESSES, starts, seconds)
    steady = chance_spread(Policy("least request + capacity", "lr", capacity=True), reqs,
                           ADDRESSES, starts, seconds)
    assert draws > CHANCE > steady


def test_repeated_ramps_are_pooled_in_order_and_a_foreign_file_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = (Trace([], [], 1.0, float(k)) for k in range(2))
    runs: dict[object, Trace] = {"ramp": first, 50: second, "ramp 2": second, "cache": first}
    assert ramps(runs) == [first, second]
    bad = tmp_path / "other.json"
    bad.write_text('{"machine": {}, "results": []}')
    assert replay(bad, [1.0] * 4) == 2
    assert f"{bad}: not a file written by --save (KeyError: 'starts')" in capsys.readouterr().out


def test_each_level_pools_its_window_of_every_ramp() -> None:
    def whole(pod: str) -> Trace:  # one request in each level's window, served by ``pod``
        reqs = [Req(t, 100, 10) for t in (3.0, 8.0, 13.0)]
        return Trace(reqs, [[r.t, 200, 0.1, 1.0, pod, 10] for r in reqs], 17.0)

    runs = pooled([whole("a"), whole("b")], [2.0, 7.0, 12.0], 5.0)
    assert ramps(runs) == [runs["ramp"], runs["ramp 2"]]
    for level in (50, 70, 90):
        assert [row[4] for row in runs[level].results] == ["a", "b"]
        assert runs[level].seconds == 10.0 and [r.t for r in runs[level].reqs] == [1.0, 6.0]

"""KV block pool and prefix cache; Prometheus exposition and ORCA reports."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controlplane.podsim.blocks import BlockPool, text_block_hashes, text_tokens
from controlplane.podsim.metrics import EngineStats, LoadSnapshot, exposition, orca_header


def test_pool_shares_hits_caches_freed_blocks_and_evicts_lru() -> None:
    pool = BlockPool(6)
    pool.take([], 3)
    for h in (1, 2, 3):
        pool.seal(h)
    assert (pool.in_use, pool.free) == (3, 3)
    assert pool.lookup([1, 2, 3, 4], limit=10) == 3
    assert pool.lookup([1, 2, 3], limit=2) == 2
    pool.take([1, 2], 1)  # a second holder shares 1 and 2
    assert pool.in_use == 4
    pool.release([1, 2], 1)
    pool.release([1, 2, 3], 0)  # now cached, tail first in LRU order
    assert (pool.in_use, pool.cached_blocks(), pool.free) == (0, 3, 6)
    assert pool.can_take([1], 5) and not pool.can_take([1], 6)
    assert pool.grow(4)  # 3 empty + 1 evicted: the tail block (3) goes first
    assert pool.lookup([1, 2, 3], limit=3) == 2
    assert not pool.grow(3)
    pool.release([], 4)
    pool.clear_cache()
    assert pool.lookup([1], limit=1) == 0 and pool.free == 6


def test_pool_without_caching_never_hits() -> None:
    pool = BlockPool(4, caching=False)
    pool.take([], 1)
    assert pool.lookup([1], limit=1) == 0


def test_text_hashes_are_chained_whole_blocks() -> None:
    a = text_tokens("Hello, world! " * 20)  # 4 pseudo-tokens per repeat
    assert len(a) == 80
    h = text_block_hashes(a, 16)
    assert len(h) == 5
    b = text_tokens("Bye, world! " + "Hello, world! " * 19)
    assert set(h).isdisjoint(text_block_hashes(b, 16))  # a different start changes all


def _load(**kw: float) -> LoadSnapshot:
    base = {"running": 3, "waiting": 1, "kv_usage": 0.25, "busy": 0.5, "rps": 12.0}
    base.update(kw)
    return LoadSnapshot(max_num_seqs=8, **base)  # type: ignore[arg-type]


def test_exposition_parses_with_vllm_names_and_labels() -> None:
    stats = EngineStats(prompt_tokens=10, generation_tokens=4, prefix_queries=10, prefix_hits=4)
    stats.ttft.observe(0.05)
    stats.e2e.observe(0.3)
    stats.e2e.observe(99999.0)
    stats.finished["length"] = 2
    text = exposition(
        {"model_name": "chat/v1", "version": "v1"},
        stats,
        _load(),
        {200: 2, 500: 1},
        block_size=16,
        num_blocks=100,
    )
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:prefix_cache_queries",
        "vllm:prefix_cache_hits",
        "vllm:prompt_tokens",
        "vllm:generation_tokens",
        "vllm:request_success",
        "sluice_podsim_responses",
    ):
        assert name in families, name
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    lab = (("model_name", "chat/v1"), ("version", "v1"))
    assert samples[("vllm:num_requests_waiting", lab)] == 1
    assert samples[("vllm:kv_cache_usage_perc", lab)] == 0.25
    assert samples[("vllm:prefix_cache_hits_total", lab)] == 4
    e2e = "vllm:e2e_request_latency_seconds_bucket"
    assert samples[(e2e, tuple(sorted((*lab, ("le", "0.3")))))] == 1
    assert samples[(e2e, tuple(sorted((*lab, ("le", "+Inf")))))] == 2
    assert samples[("vllm:e2e_request_latency_seconds_count", lab)] == 2
    code = tuple(sorted((*lab, ("code", "500"))))
    assert samples[("sluice_podsim_responses_total", code)] == 1


def test_orca_text_and_json() -> None:
    text = orca_header("TEXT", _load())
    assert text is not None and text.startswith("TEXT ")
    fields = dict(p.split("=") for p in text[5:].split(", "))
    assert fields["application_utilization"] == "0.5"  # (3 + 1) / 8 beats KV 0.25
    assert fields["cpu_utilization"] == "0.5"
    assert fields["rps_fractional"] == "12.0"
    assert fields["named_metrics.kv_cache_utilization"] == "0.25"
    js = orca_header("json", _load())
    assert js is not None and js.startswith("JSON ")
    body = json.loads(js[5:])
    assert body["named_metrics"]["num_requests_waiting"] == 1.0
    idle = orca_header("TEXT", _load(running=0, waiting=0, kv_usage=0.0, rps=0.0))
    assert idle is not None
    assert "application_utilization=0.001" in idle and "rps_fractional=0.01" in idle
    assert orca_header("BIN", _load()) is None


@pytest.mark.parametrize("value", [0.0, 0.001, 0.3, 1.0, 7680.0, 1e9])
def test_histogram_buckets_are_cumulative(value: float) -> None:
    stats = EngineStats()
    stats.e2e.observe(value)
    counts = [n for _, n in stats.e2e.cumulative()]
    assert counts == sorted(counts) and counts[-1] == 1

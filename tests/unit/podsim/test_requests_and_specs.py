"""Reading completion requests, ``--pod`` specs and fault bodies."""

from __future__ import annotations

import re

import pytest

from controlplane.podsim.openai_api import chunk, completion_body, parse_completion, words
from controlplane.podsim.profiles import EngineConfig
from controlplane.podsim.spec import Faults, PodSpec, parse_fault_update, parse_pod


def parse(payload: object, chat: bool = True, unique: int = 0):  # type: ignore[no-untyped-def]
    return parse_completion(
        payload, chat=chat, block_size=16, default_max_tokens=128, unique=unique
    )


def test_lengths_come_from_the_request() -> None:
    c = parse({"messages": [{"role": "user", "content": "two words"}]})
    assert (c.prompt_tokens, c.output_tokens, c.finish_reason) == (4, 128, "length")
    c = parse({"prompt": [1, 2, 3] * 20, "max_tokens": 7, "stream": True}, chat=False)
    assert (c.prompt_tokens, c.output_tokens, c.stream, len(c.block_hashes)) == (60, 7, True, 3)
    c = parse({"messages": [], "sluice_prompt_tokens": 900, "sluice_output_tokens": 5})
    assert (c.prompt_tokens, c.output_tokens, c.finish_reason) == (900, 5, "stop")
    c = parse({"messages": [], "max_completion_tokens": 3, "sluice_output_tokens": 5})
    assert (c.output_tokens, c.finish_reason) == (3, "length")


def test_named_prefixes_share_blocks_across_requests() -> None:
    body = {
        "prompt": "",
        "sluice_prompt_tokens": 100,
        "sluice_prefix": "t",
        "sluice_prefix_tokens": 64,
    }
    a, b = parse(body, chat=False, unique=1), parse(body, chat=False, unique=2)
    assert a.block_hashes[:4] == b.block_hashes[:4] and a.block_hashes[4:] != b.block_hashes[4:]
    # The same text prompt gives the same blocks.
    text = {"messages": [{"role": "user", "content": "x " * 100}]}
    assert parse(text, unique=1).block_hashes == parse(text, unique=2).block_hashes


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"stream": "yes"},
        {"max_tokens": 0},
        {"max_tokens": True},
        {"messages": "hi"},
        {"sluice_prefix": 3},
        {"sluice_prompt_tokens": -1},
    ],
)
def test_bad_requests_are_rejected(payload: object) -> None:
    with pytest.raises(ValueError):
        parse(payload)
    with pytest.raises(ValueError):
        parse({"prompt": {"x": 1}}, chat=False)


def test_bodies_and_chunks() -> None:
    c = parse({"messages": [], "max_tokens": 6})
    body = completion_body(c, "cmpl-1", "v1", words("chat", "v1"))
    assert body["object"] == "chat.completion"
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 6, "total_tokens": 7}
    events = chunk(c, "cmpl-1", "v1", words("chat", "v1"), 4, 6).decode().split("\n\n")
    assert len([e for e in events if e]) == 2 and '"finish_reason": "length"' in events[1]


def test_parse_pod_with_every_option() -> None:
    spec = parse_pod(
        "127.0.0.1:18081=chat/v1,gpu=l4,error-rate=0.2,error-latency-ms=5,extra-latency-ms=50,"
        "cold-start-ms=2000,stall-ms=10,healthy=false,max-num-seqs=64,max-batched-tokens=2048,"
        "kv-tokens=32000,api-overhead-ms=15,prefix-caching=false,max-tokens=16,stream-interval=4,"
        "seed=7"
    )
    assert spec == PodSpec(
        host="127.0.0.1",
        port=18081,
        service="chat",
        version="v1",
        gpu="l4",
        engine=EngineConfig(
            max_num_seqs=64,
            max_num_batched_tokens=2048,
            kv_capacity_tokens=32000,
            api_overhead_s=0.015,
            enable_prefix_caching=False,
        ),
        faults=Faults(
            error_rate=0.2, error_latency_ms=5.0, extra_latency_ms=50.0, cold_start_ms=2000.0
        ),
        stall_ms=10.0,
        healthy=False,
        seed=7,
        default_max_tokens=16,
        stream_interval=4,
    )
    assert parse_pod("127.0.0.1:0=v2").service == "demo"


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:1",
        "127.0.0.1=chat/v1",
        "127.0.0.1:70000=chat/v1",
        "127.0.0.1:1=chat/",
        "127.0.0.1:1=chat/v1,gpu=tpu",
        "127.0.0.1:1=chat/v1,error-rate=2",
        "127.0.0.1:1=chat/v1,colour=blue",
        "127.0.0.1:1=chat/v1,healthy=maybe",
        "127.0.0.1:1=chat/v1,max-num-seqs=0",
        "127.0.0.1:1=chat/v1,gpu",
    ],
)
def test_parse_pod_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_pod(text)


def test_fault_updates() -> None:
    now = Faults(error_rate=0.5, extra_latency_ms=10.0)
    u = parse_fault_update({"errorRate": 1, "stallMs": 3000, "errorLatencyMs": 5}, now)
    assert u.faults == Faults(error_rate=1.0, extra_latency_ms=10.0, error_latency_ms=5.0)
    assert (u.stall_ms, u.crash, u.restart) == (3000.0, False, False)
    u = parse_fault_update({"crash": True, "restartAfterMs": 100, "errorLatencyMs": None}, now)
    assert (u.crash, u.restart_after_ms, u.faults.error_latency_ms) == (True, 100.0, None)
    bad_bodies: list[object] = [
        {"errorRate": 1.5},
        {"colour": 1},
        {"crash": "yes"},
        {"stallMs": -1},
        {"restartAfterMs": 5},
        {"extraLatencyMs": True},
        [],
    ]
    for bad in bad_bodies:
        with pytest.raises(ValueError):
            parse_fault_update(bad, now)

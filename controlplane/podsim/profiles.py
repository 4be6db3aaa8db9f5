"""GPU profiles and scheduler settings of a simulated pod.

Every pod runs one dense 8B model on one GPU. One scheduler step costs::

    t_step = t0 + prefill_tokens / R + k_kv * sum(context tokens) + per_seq * decoding_sequences

and each request pays ``api_overhead_s`` once, before it reaches the scheduler.

Where the numbers come from (the routing-benchmark reference notes, "A timing model
that captures what routers care about"): R, t0, k_kv and the KV capacity per GPU are
that table's defaults, derived from roofline figures (BLIS: H100
989.5 TFLOPS / 3.35 TB/s, prefill MFU 0.45; A100 312 TFLOPS / 2.04 TB/s, MFU 0.38) and
the published measurements of llm-d-inference-sim (8B on H100: ≈100 ms TTFT, 12 ms ITL;
8B on A100: 15-25 ms ITL). They reproduce the table's inter-token latency at 64
sequences × 2k context: ≈14 ms (H100), ≈22 ms (A100), ≈105 ms (L4). The L4 row is an
estimate, not a measurement. The 5 µs per decoding sequence is the table's formula;
the 256 sequences, 8,192 tokens per step and 16-token blocks are vLLM's defaults (the
Dynamo mocker uses the same 256 / 8,192); the 10 ms API overhead sits in the 5-15 ms
range the reference gives (BLIS fits ≈15.6 ms).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PROFILES", "EngineConfig", "GpuProfile", "profile"]


@dataclass(frozen=True)
class GpuProfile:
    """Timing and memory of one GPU serving an 8B dense model."""

    name: str
    prefill_tokens_per_s: float  # R
    step_floor_s: float  # t0: a step's fixed cost (weights read once per step)
    kv_time_per_token_s: float  # k_kv: attention reads, per context token in the batch
    kv_capacity_tokens: int
    per_seq_s: float = 5e-6  # per decoding sequence (sampling, bookkeeping)


PROFILES: dict[str, GpuProfile] = {
    "h100": GpuProfile(
        name="h100",
        prefill_tokens_per_s=30_000.0,
        step_floor_s=0.007,
        kv_time_per_token_s=0.05e-6,
        kv_capacity_tokens=430_000,
    ),
    "a100": GpuProfile(
        name="a100",
        prefill_tokens_per_s=10_000.0,
        step_floor_s=0.011,
        kv_time_per_token_s=0.08e-6,
        kv_capacity_tokens=430_000,
    ),
    "l4": GpuProfile(
        name="l4",
        prefill_tokens_per_s=4_500.0,
        step_floor_s=0.035,
        kv_time_per_token_s=0.55e-6,
        kv_capacity_tokens=100_000,
    ),
}


def profile(name: str) -> GpuProfile:
    """The profile called ``name`` (case-insensitive; ``a100-80gb`` means ``a100``)."""
    key = name.lower().removesuffix("-80gb")
    try:
        return PROFILES[key]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ValueError(f"unknown GPU {name!r} (known: {known})") from None


@dataclass(frozen=True)
class EngineConfig:
    """Scheduler settings (vLLM's names and defaults where vLLM has them)."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8_192  # token budget of one step (chunked prefill)
    block_size: int = 16  # tokens per KV block; the prefix cache works in whole blocks
    api_overhead_s: float = 0.010  # per request, before it reaches the scheduler
    enable_prefix_caching: bool = True
    kv_capacity_tokens: int | None = None  # None: the GPU profile's

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1 or self.block_size < 1:
            raise ValueError("max_num_seqs, max_num_batched_tokens and block_size must be >= 1")
        if self.api_overhead_s < 0:
            raise ValueError("api_overhead_s must be >= 0")
        if self.kv_capacity_tokens is not None and self.kv_capacity_tokens < self.block_size:
            raise ValueError("kv_capacity_tokens must hold at least one block")

    def num_blocks(self, gpu: GpuProfile) -> int:
        tokens = (
            gpu.kv_capacity_tokens if self.kv_capacity_tokens is None else self.kv_capacity_tokens
        )
        return tokens // self.block_size

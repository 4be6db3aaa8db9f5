"""What a simulated pod counts, and how it reports it (pure).

``EngineStats`` is filled by the engine in model time. ``exposition`` renders it as
Prometheus text under vLLM's metric names (V1 engine: counters end in ``_total``,
``vllm:kv_cache_usage_perc`` is a fraction in [0, 1], histogram bounds are vLLM's), with
the labels ``model_name`` (``service/version``) and ``version``. ``orca_header`` renders
an ORCA load report in the form Envoy's client-side weighted round robin parses from
the ``endpoint-load-metrics`` response header.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["EngineStats", "Histogram", "LoadSnapshot", "exposition", "orca_header"]

# vLLM's bucket bounds (vllm/v1/metrics/loggers.py).
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
TOKEN_BUCKETS = tuple(float(b * m) for b in (1, 10, 100, 1_000, 10_000, 100_000) for m in (1, 2, 5))


@dataclass
class Histogram:
    """A Prometheus histogram; one bucket index per observation (``bisect``)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, last one is +Inf
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


def _hist(bounds: tuple[float, ...]) -> Histogram:
    return Histogram(bounds)


@dataclass
class EngineStats:
    """Counters and latency histograms of one engine, all in model time."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    prefix_queries: int = 0  # tokens looked up in the prefix cache
    prefix_hits: int = 0  # tokens found there
    preemptions: int = 0
    finished: dict[str, int] = field(default_factory=dict)  # finished_reason -> requests
    ttft: Histogram = field(default_factory=lambda: _hist(TTFT_BUCKETS))
    itl: Histogram = field(default_factory=lambda: _hist(ITL_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: _hist(REQUEST_BUCKETS))
    queue: Histogram = field(default_factory=lambda: _hist(REQUEST_BUCKETS))
    prompt_lengths: Histogram = field(default_factory=lambda: _hist(TOKEN_BUCKETS))
    output_lengths: Histogram = field(default_factory=lambda: _hist(TOKEN_BUCKETS))


@dataclass(frozen=True)
class LoadSnapshot:
    """A pod's load at one instant (gauges, ORCA)."""

    running: int
    waiting: int
    kv_usage: float  # fraction of KV blocks in use
    busy: float  # fraction of the last second the GPU was stepping
    rps: float  # requests accepted per second, over the last 10 s
    max_num_seqs: int

    @property
    def utilization(self) -> float:
        """Application utilization: the tighter of KV use and sequence slots (may pass 1)."""
        return max(self.kv_usage, (self.running + self.waiting) / self.max_num_seqs)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(
    labels: Mapping[str, str],
    stats: EngineStats,
    load: LoadSnapshot,
    responses: Mapping[int, int],
    *,
    block_size: int,
    num_blocks: int,
) -> str:
    """Prometheus text (format 0.0.4) for one pod."""
    base = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    def sample(name: str, value: float, extra: str = "") -> None:
        label_text = ",".join(p for p in (base, extra) if p)
        lines.append(f"{name}{{{label_text}}} {value!r}" if label_text else f"{name} {value!r}")

    gauges = (
        ("vllm:num_requests_running", "Requests in the running batch.", load.running),
        ("vllm:num_requests_waiting", "Requests accepted and not running.", load.waiting),
        ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", load.kv_usage),
    )
    for name, help_text, value in gauges:
        family(name, "gauge", help_text)
        sample(name, float(value))
    family("vllm:cache_config_info", "gauge", "KV-cache configuration.")
    sample(
        "vllm:cache_config_info", 1.0, f'block_size="{block_size}",num_gpu_blocks="{num_blocks}"'
    )
    counters = (
        ("vllm:prompt_tokens", "Prompt tokens processed.", stats.prompt_tokens),
        ("vllm:generation_tokens", "Generation tokens processed.", stats.generation_tokens),
        ("vllm:prefix_cache_queries", "Prefix cache queries, in tokens.", stats.prefix_queries),
        ("vllm:prefix_cache_hits", "Prefix cache hits, in tokens.", stats.prefix_hits),
        ("vllm:num_preemptions", "Requests preempted (KV cache full).", stats.preemptions),
    )
    for name, help_text, count in counters:
        family(name, "counter", help_text)
        sample(f"{name}_total", float(count))
    family("vllm:request_success", "counter", "Requests finished, by reason.")
    for reason in sorted({"stop", "length", *stats.finished}):
        sample(
            "vllm:request_success_total",
            float(stats.finished.get(reason, 0)),
            f'finished_reason="{reason}"',
        )
    histograms = (
        ("vllm:time_to_first_token_seconds", "Time to first token.", stats.ttft),
        ("vllm:inter_token_latency_seconds", "Inter-token latency.", stats.itl),
        ("vllm:e2e_request_latency_seconds", "End-to-end request latency.", stats.e2e),
        ("vllm:request_queue_time_seconds", "Time waiting before first scheduled.", stats.queue),
        ("vllm:request_prompt_tokens", "Prompt length of finished requests.", stats.prompt_lengths),
        (
            "vllm:request_generation_tokens",
            "Output length of finished requests.",
            stats.output_lengths,
        ),
    )
    for name, help_text, h in histograms:
        family(name, "histogram", help_text)
        for le, n in h.cumulative():
            sample(f"{name}_bucket", float(n), f'le="{le}"')
        sample(f"{name}_sum", h.total)
        sample(f"{name}_count", float(h.count))
    family("sluice_podsim_responses", "counter", "Completion responses by HTTP status.")
    for code in sorted(responses):
        sample("sluice_podsim_responses_total", float(responses[code]), f'code="{code}"')
    return "\n".join(lines) + "\n"


def orca_header(fmt: str, load: LoadSnapshot) -> str | None:
    """The ``endpoint-load-metrics`` value for ``fmt`` (TEXT or JSON), else None.

    Envoy's client-side weighted round robin sets weight = ``rps_fractional`` /
    ``application_utilization`` and drops a report where either is 0, so they are
    floored at 0.01 and 0.001.
    """
    named = {
        "kv_cache_utilization": round(load.kv_usage, 4),
        "kv_cache_usage_perc": round(load.kv_usage, 4),
        "num_requests_running": float(load.running),
        "num_requests_waiting": float(load.waiting),
    }
    top = {
        "cpu_utilization": round(load.busy, 4),
        "mem_utilization": round(min(load.kv_usage, 1.0), 4),
        "application_utilization": max(round(load.utilization, 4), 0.001),
        "rps_fractional": round(max(load.rps, 0.01), 4),
    }
    kind = fmt.strip().upper()
    if kind == "TEXT":
        parts = [f"{k}={v}" for k, v in top.items()]
        parts += [f"named_metrics.{k}={v}" for k, v in named.items()]
        return "TEXT " + ", ".join(parts)
    if kind == "JSON":
        return "JSON " + json.dumps({**top, "named_metrics": named})
    return None

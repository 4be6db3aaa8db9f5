"""Figures of one run (pure): latency percentiles, throughput, goodput, balance."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["RunStats", "percentile", "summarize"]

SLO_TTFT_S = 1.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


@dataclass(frozen=True)
class RunStats:
    offered: float  # requests per second sent
    requests: int
    failed: int  # errors and requests that never finished
    mean: float  # end-to-end latency, seconds
    p50: float
    p99: float
    ttft_p99: float
    rps: float  # completed requests per second
    tps: float  # output tokens per second
    goodput: float  # requests per second with TTFT within the SLO
    imbalance: float  # busiest pod's load / mean pod load (load = requests / capacity)
    hit_rate: float = math.nan  # prefix-cache hit rate, when measured

    @property
    def meets_slo(self) -> bool:
        return self.failed == 0 and self.ttft_p99 <= SLO_TTFT_S


def summarize(e2e: Sequence[float | None], ttft: Sequence[float | None],
              outputs: Sequence[int], seconds: float, per_pod: Sequence[float],
              capacity: Sequence[float], hit_rate: float = math.nan) -> RunStats:
    """``e2e``/``ttft`` per request (None: failed); ``per_pod`` requests each pod served."""
    ok = [i for i, e in enumerate(e2e) if e is not None and ttft[i] is not None]
    lat = [e2e[i] for i in ok]
    first = [ttft[i] for i in ok]
    failed = len(e2e) - len(ok)
    # Failed requests count as missing the SLO and as infinitely slow in the tail.
    tail_first = first + [math.inf] * failed
    tail_lat = lat + [math.inf] * failed
    loads = [n / c for n, c in zip(per_pod, capacity, strict=True)]
    mean_load = sum(loads) / len(loads) if loads else 0.0
    span = max(seconds, 1e-9)
    return RunStats(
        offered=len(e2e) / span,
        requests=len(e2e),
        failed=failed,
        mean=sum(lat) / len(lat) if lat else math.nan,
        p50=percentile(tail_lat, 50),
        p99=percentile(tail_lat, 99),
        ttft_p99=percentile(tail_first, 99),
        rps=len(ok) / span,
        tps=sum(outputs[i] for i in ok) / span,
        goodput=sum(1 for f in first if f is not None and f <= SLO_TTFT_S) / span,
        imbalance=max(loads) / mean_load if mean_load > 0 else math.nan,
        hit_rate=hit_rate,
    )

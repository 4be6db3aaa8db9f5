"""Pods' own load from Prometheus (vLLM's gauges), refining ``response_time`` weights.

When ``loadBalancing.responseTime.prometheus`` names a Prometheus, every
interval two instant queries ask for ``vllm:num_requests_waiting`` and
``vllm:kv_cache_usage_perc`` per scraped pod; a pod is matched to an endpoint
by its ``instance`` label (``address:port``, where Prometheus scraped it: vLLM
and podsim serve ``/metrics`` on the serving port). Parsing is pure; the fetch
is one small edge. A value that is not a finite number in range is garbage:
it is dropped (the pod's weight then comes from the proxies' signals alone)
and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import aiohttp

__all__ = ["PodLoad", "fetch_pod_load", "parse_vector"]

WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"


@dataclass(frozen=True)
class PodLoad:
    """Per endpoint key: requests waiting and KV-cache use; and what was garbage."""

    waiting: dict[str, float] = field(default_factory=dict)
    kv_usage: dict[str, float] = field(default_factory=dict)
    garbage: frozenset[str] = frozenset()


def parse_vector(doc: Any, upper: float) -> tuple[dict[str, float], set[str]]:
    """An instant query's vector by ``instance``: the good values and the garbage ones."""
    good: dict[str, float] = {}
    bad: set[str] = set()
    if not isinstance(doc, dict) or doc.get("status") != "success":
        raise ValueError("not a successful Prometheus answer")
    data = doc.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        raise ValueError("not an instant vector")
    for item in data.get("result") or []:
        metric = item.get("metric") if isinstance(item, dict) else None
        instance = metric.get("instance") if isinstance(metric, dict) else None
        if not isinstance(instance, str):
            continue
        try:
            value = float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            bad.add(instance)
            continue
        if not math.isfinite(value) or not 0.0 <= value <= upper:
            bad.add(instance)
        else:
            good[instance] = good.get(instance, 0.0) + value
    return good, bad


async def fetch_pod_load(url: str, timeout_s: float = 2.0) -> PodLoad:
    """Both queries; raises (aiohttp.ClientError, TimeoutError, ValueError) when Prometheus
    cannot answer, which the caller treats as no pod metrics."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http:
        answers = []
        for query in (WAITING, KV_USAGE):
            async with http.get(url.rstrip("/") + "/api/v1/query",
                                params={"query": query}) as r:
                r.raise_for_status()
                answers.append(await r.json(content_type=None))
    waiting, bad_waiting = parse_vector(answers[0], 1e6)
    kv, bad_kv = parse_vector(answers[1], 1.5)
    return PodLoad(waiting, kv, frozenset(bad_waiting | bad_kv))

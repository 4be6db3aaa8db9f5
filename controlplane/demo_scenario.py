"""What ``sluice demo`` runs (pure): scenarios, pods, the documents it writes, timings.

Four simulated GPU pods serve the ``chat`` service: ``v1`` on one H100 and one
A100, ``v2`` on the same pair, so that a healthy ``v2`` is exactly as good as
``v1``. Endpoint weights 2 and 1 give the H100 twice the A100's share (its
capacity). A scenario decides what is wrong with ``v2``:

- ``healthy``: nothing; the canary walks every step and is promoted;
- ``errors``: 5 % of ``v2``'s completions fail with HTTP 500;
- ``latency``: every ``v2`` completion takes about 50 % longer (a slower model);
- ``ttft``: ``v2`` waits before its first token (a slow prefill or a queue).

The experiment gates on two metrics Envoy's own stats provide, so the demo
needs no Prometheus: ``errors`` (5xx per request) and ``latency-p95`` (p95 of
Envoy's per-cluster ``upstream_rq_time``). Envoy measures a request until its
last byte, so a time-to-first-token regression shows there as end-to-end
latency; gating on TTFT itself takes the pods' metrics through Prometheus
(a ``latency`` metric with ``source: ttft``; see the README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controlplane.podsim import Faults, PodSpec

__all__ = [
    "SCENARIOS",
    "Scenario",
    "Timing",
    "experiment_doc",
    "pod_specs",
    "service_doc",
    "timing",
]

SERVICE = "chat"
EXPERIMENT = "chat-canary"
BASELINE, CANDIDATE = "v1", "v2"
# (gpu, endpoint weight): the H100 does about twice the A100's work.
GPUS = (("h100", 2), ("a100", 1))
# A demo request takes about 0.35 s on average and 1 s at the p95 (8 to 64
# output tokens, the A100 being the slower pod); 500 ms more is about +50 % at
# the p95.
LATENCY_EXTRA_MS = 500.0
TTFT_EXTRA_MS = 500.0


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str  # one line for the header of the live view
    faults: Faults
    stream: bool = False  # clients stream the responses (SSE)
    expected: str = "promoted"  # or "rolled back"


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("healthy", "v2 is as good as v1: expect a promotion", Faults()),
        Scenario("errors", "v2 answers 5 % of completions with HTTP 500: expect a rollback",
                 Faults(error_rate=0.05), expected="rolled back"),
        Scenario("latency", f"v2 takes {LATENCY_EXTRA_MS:.0f} ms longer per completion "
                 "(about +50 % at the p95): expect a rollback",
                 Faults(extra_latency_ms=LATENCY_EXTRA_MS), expected="rolled back"),
        Scenario("ttft", f"v2's first token comes {TTFT_EXTRA_MS:.0f} ms later (streamed "
                 "responses; judged by Envoy's end-to-end latency): expect a rollback",
                 Faults(extra_latency_ms=TTFT_EXTRA_MS), stream=True, expected="rolled back"),
    )
}


@dataclass(frozen=True)
class Timing:
    steps: tuple[int, ...]  # candidate percents
    soak: str  # minimum time per step
    interval: str  # between looks
    min_samples: int  # per version and metric before a PASS
    rate: float  # requests per second of the load generator
    warmup_s: float  # load before the experiment starts (baseline traffic)
    max_s: float  # the demo gives up after this long


def timing(fast: bool) -> Timing:
    """``--fast`` (CI): about a minute; otherwise the whole story in about 3-4 minutes."""
    if fast:
        return Timing(steps=(25, 50), soak="5s", interval="1s", min_samples=150, rate=60.0,
                      warmup_s=2.0, max_s=150.0)
    return Timing(steps=(10, 25, 50), soak="30s", interval="3s", min_samples=300, rate=40.0,
                  warmup_s=5.0, max_s=480.0)


def pod_specs(scenario: Scenario, seed: int | None = None) -> list[PodSpec]:
    """v1 and v2, each on one H100 and one A100; v2 carries the scenario's faults."""
    specs = []
    for i, (version, faults) in enumerate(((BASELINE, Faults()), (CANDIDATE, scenario.faults))):
        for j, (gpu, _) in enumerate(GPUS):
            specs.append(PodSpec(service=SERVICE, version=version, gpu=gpu, faults=faults,
                                 seed=None if seed is None else seed + 2 * i + j,
                                 default_max_tokens=64))
    return specs


def service_doc(ports: dict[str, list[int]], listener_port: int) -> dict[str, Any]:
    """``chat``: v1 100 %, v2 0 % (present and warm), pods weighted by GPU capacity."""
    versions = []
    for version in (BASELINE, CANDIDATE):
        endpoints = [{"address": "127.0.0.1", "port": port, "weight": weight,
                      "labels": {"gpu": gpu}}
                     for port, (gpu, weight) in zip(ports[version], GPUS, strict=True)]
        versions.append({"name": version, "weight": 100 if version == BASELINE else 0,
                         "endpoints": endpoints})
    return {
        "apiVersion": "sluice.dev/v1alpha1", "kind": "ModelService",
        "metadata": {"name": SERVICE},
        "spec": {
            "listener": {"address": "127.0.0.1", "port": listener_port},
            "loadBalancing": {"policy": "least_request"},
            "healthCheck": {"path": "/health", "interval": "2s", "timeout": "1s"},
            "versions": versions,
        },
    }


def experiment_doc(t: Timing) -> dict[str, Any]:
    """The canary: roll back on evidence of harm, advance only on non-inferiority."""
    return {
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Experiment",
        "metadata": {"name": EXPERIMENT},
        "spec": {
            "service": SERVICE, "baseline": BASELINE, "candidate": CANDIDATE,
            "alpha": 0.05, "interval": t.interval, "stallBudget": "2m", "onStall": "rollback",
            "steps": [{"weight": w, "soak": t.soak} for w in t.steps],
            "metrics": [
                {"name": "errors", "kind": "error_rate", "harmMargin": 0.0,
                 "nonInferiorityMargin": 0.5, "minEffect": 0.02,
                 "minSamples": t.min_samples},
                # Envoy's buckets are ~12 % apart, so a ratio of two quantiles is known
                # to within about two bucket widths (1.12² ≈ 1.26): a tighter
                # non-inferiority margin could never be shown.
                {"name": "latency-p95", "kind": "latency", "quantile": 0.95,
                 "harmMargin": 0.1, "nonInferiorityMargin": 0.3, "minEffect": "20ms",
                 "minSamples": t.min_samples},
            ],
        },
    }

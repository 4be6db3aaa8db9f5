"""Simulated GPU model pods for router benchmarks and canary experiments.

One process runs many pods, each an OpenAI-compatible model server on its own
listener whose timing comes from a discrete-event model of a vLLM-style scheduler
(continuous batching, chunked prefill, a KV-cache block budget, a prefix cache,
priority classes: Sluice's batch class gives way to online requests as under vLLM's
``--scheduling-policy priority``), not from burning CPU: an idle pod costs nothing, a
busy one one timer callback per scheduler step. Pods report vLLM's metrics on
``/metrics``, ORCA load reports in response headers when asked, and take faults at
start or at run time (error rate, extra latency, stall, crash, cold start, version
change).

- ``engine`` / ``simulate``: the pure timing core (time is an argument);
- ``profiles``: GPU profiles (H100, A100, L4) and scheduler settings, with sources;
- ``blocks``: the KV block pool and prefix cache; ``metrics``: what is reported;
- ``pod``: one pod on the event loop's clock; ``server`` / ``admin``: HTTP (aiohttp).

Python API::

    async with start_pods([PodSpec(service="chat", version="v1", gpu="a100")]) as pods:
        url = f"http://{pods[0].pod}"  # port 0 binds a free port
        pods[0].set_faults(error_rate=0.5)
        await pods[0].set_version("v2")

Command line: ``python -m controlplane.podsim --pod 127.0.0.1:18081=chat/v1,gpu=h100``.
"""

from controlplane.podsim.admin import start_control
from controlplane.podsim.engine import Engine, RequestSpec, TokenEvent
from controlplane.podsim.pod import Pod, PodStateError
from controlplane.podsim.profiles import PROFILES, EngineConfig, GpuProfile, profile
from controlplane.podsim.server import Pods, start_pods
from controlplane.podsim.simulate import Timeline, simulate
from controlplane.podsim.spec import Faults, PodSpec, parse_pod

__all__ = [
    "PROFILES",
    "Engine",
    "EngineConfig",
    "Faults",
    "GpuProfile",
    "Pod",
    "PodSpec",
    "PodStateError",
    "Pods",
    "RequestSpec",
    "Timeline",
    "TokenEvent",
    "parse_pod",
    "profile",
    "simulate",
    "start_control",
    "start_pods",
]

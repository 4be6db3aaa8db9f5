"""What a simulated pod is and which faults it has: specs, the ``--pod`` syntax, and the
JSON of ``POST /admin/faults`` (pure; validation once, at the edge)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from controlplane.podsim.profiles import EngineConfig, profile

__all__ = ["FaultUpdate", "Faults", "PodSpec", "check_faults", "parse_fault_update", "parse_pod"]


@dataclass(frozen=True)
class Faults:
    """Fault settings that stay until changed."""

    error_rate: float = 0.0  # fraction of completions answered with HTTP 500
    error_latency_ms: float | None = None  # None: an error comes when the request would end
    extra_latency_ms: float = 0.0  # added to every completion before it reaches the GPU
    cold_start_ms: float = 0.0  # loading time at start, restart and version change

    def as_json(self) -> dict[str, object]:
        return {
            "errorRate": self.error_rate,
            "errorLatencyMs": self.error_latency_ms,
            "extraLatencyMs": self.extra_latency_ms,
            "coldStartMs": self.cold_start_ms,
        }


@dataclass(frozen=True)
class FaultUpdate:
    """A parsed ``POST /admin/faults`` body: new settings plus one-shot actions."""

    faults: Faults
    stall_ms: float = 0.0  # the GPU stops for this long, from now
    crash: bool = False  # listener closed, connections reset, state lost
    restart_after_ms: float | None = None  # with crash: come back by itself after this
    restart: bool = False  # reset in-flight requests and load again (cold start)


@dataclass(frozen=True)
class PodSpec:
    """One simulated pod: where it listens, what it serves, on which GPU."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port (the bound one is in ``Pod.spec``)
    service: str = "demo"
    version: str = "v1"
    gpu: str = "h100"
    engine: EngineConfig = field(default_factory=EngineConfig)
    faults: Faults = field(default_factory=Faults)
    stall_ms: float = 0.0  # a stall right at start
    healthy: bool = True
    seed: int | None = None  # for injected errors
    default_max_tokens: int = 128  # output length when a request names none
    stream_interval: int = 1  # tokens per streamed write (vLLM's --stream-interval)

    @property
    def pod(self) -> str:
        return f"{self.host}:{self.port}"

    def __post_init__(self) -> None:
        profile(self.gpu)  # raises on an unknown GPU
        if not 0 <= self.port <= 65535:
            raise ValueError(f"bad port {self.port}")
        if self.default_max_tokens < 1 or self.stream_interval < 1:
            raise ValueError("default_max_tokens and stream_interval must be >= 1")
        check_faults(self.faults)


def check_faults(f: Faults) -> None:
    """ValueError naming the first setting out of range."""
    if not 0.0 <= f.error_rate <= 1.0:
        raise ValueError("errorRate must be in [0, 1]")
    for name, value in (
        ("extraLatencyMs", f.extra_latency_ms),
        ("coldStartMs", f.cold_start_ms),
        ("errorLatencyMs", 0.0 if f.error_latency_ms is None else f.error_latency_ms),
    ):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0")


POD_OPTIONS = (
    "gpu=h100|a100|l4, error-rate=F, error-latency-ms=N, extra-latency-ms=N, cold-start-ms=N,"
    " stall-ms=N, healthy=true|false, max-num-seqs=N, max-batched-tokens=N, kv-tokens=N,"
    " api-overhead-ms=N, prefix-caching=true|false, max-tokens=N, stream-interval=N, seed=N"
)


def _bool(value: str) -> bool:
    if value not in ("true", "false"):
        raise ValueError(value)
    return value == "true"


def split_pod(text: str) -> tuple[str, int, str, str, list[str]]:
    """``HOST:PORT=SERVICE/VERSION[,option...]`` -> (host, port, service, version, options);
    a bare VERSION belongs to service ``demo``."""
    address, sep, rest = text.partition("=")
    if not sep:
        raise ValueError(f"{text!r}: expected HOST:PORT=SERVICE/VERSION[,option=value...]")
    host, colon, port_text = address.rpartition(":")
    if not colon or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"{text!r}: bad address {address!r}, expected HOST:PORT")
    identity, *options = rest.split(",")
    service, slash, version = identity.partition("/")
    if not slash:
        service, version = "demo", identity
    if not service or not version:
        raise ValueError(f"{text!r}: expected SERVICE/VERSION after '='")
    return host.strip("[]"), int(port_text), service, version, options


def parse_pod(text: str) -> PodSpec:
    """Parse ``HOST:PORT=SERVICE/VERSION[,KEY=VALUE...]`` (see ``POD_OPTIONS``)."""
    host, port, service, version, options = split_pod(text)
    spec = PodSpec(host=host, port=port, service=service, version=version)
    faults, engine = spec.faults, spec.engine
    for option in options:
        key, eq, value = option.partition("=")
        try:
            if not eq:
                raise ValueError(option)
            if key == "gpu":
                spec = replace(spec, gpu=value)
            elif key == "error-rate":
                faults = replace(faults, error_rate=float(value))
            elif key == "error-latency-ms":
                faults = replace(faults, error_latency_ms=float(value))
            elif key == "extra-latency-ms":
                faults = replace(faults, extra_latency_ms=float(value))
            elif key == "cold-start-ms":
                faults = replace(faults, cold_start_ms=float(value))
            elif key == "stall-ms":
                spec = replace(spec, stall_ms=float(value))
            elif key == "healthy":
                spec = replace(spec, healthy=_bool(value))
            elif key == "max-num-seqs":
                engine = replace(engine, max_num_seqs=int(value))
            elif key == "max-batched-tokens":
                engine = replace(engine, max_num_batched_tokens=int(value))
            elif key == "kv-tokens":
                engine = replace(engine, kv_capacity_tokens=int(value))
            elif key == "api-overhead-ms":
                engine = replace(engine, api_overhead_s=float(value) / 1000)
            elif key == "prefix-caching":
                engine = replace(engine, enable_prefix_caching=_bool(value))
            elif key == "max-tokens":
                spec = replace(spec, default_max_tokens=int(value))
            elif key == "stream-interval":
                spec = replace(spec, stream_interval=int(value))
            elif key == "seed":
                spec = replace(spec, seed=int(value))
            else:
                raise ValueError(option)
        except ValueError as exc:
            raise ValueError(f"{text!r}: bad option {option!r} ({POD_OPTIONS})") from exc
    try:
        spec = replace(spec, faults=faults, engine=engine)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    if spec.stall_ms < 0:
        raise ValueError(f"{text!r}: stall-ms must be >= 0")
    return spec


_NUMBER_KEYS = {
    "errorRate": "error_rate",
    "extraLatencyMs": "extra_latency_ms",
    "coldStartMs": "cold_start_ms",
}
_FAULT_KEYS = (
    "errorRate, errorLatencyMs, extraLatencyMs, coldStartMs, stallMs, crash, restartAfterMs,"
    " restart"
)


def _number(body: Mapping[str, object], key: str) -> float:
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{key} must be a finite number >= 0")
    return float(value)


def parse_fault_update(body: object, current: Faults) -> FaultUpdate:
    """Validate a faults body; keys left out keep their current setting."""
    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object with any of: {_FAULT_KEYS}")
    unknown = sorted(set(body) - {*_NUMBER_KEYS, *_FAULT_KEYS.replace(",", " ").split()})
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; known: {_FAULT_KEYS}")
    faults = current
    for key, attr in _NUMBER_KEYS.items():
        if key in body:
            faults = replace(faults, **{attr: _number(body, key)})
    if "errorLatencyMs" in body:
        latency = None if body["errorLatencyMs"] is None else _number(body, "errorLatencyMs")
        faults = replace(faults, error_latency_ms=latency)
    check_faults(faults)
    flags = {}
    for key in ("crash", "restart"):
        value = body.get(key, False)
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false")
        flags[key] = value
    restart_after = _number(body, "restartAfterMs") if "restartAfterMs" in body else None
    if restart_after is not None and not flags["crash"]:
        raise ValueError("restartAfterMs needs crash: true")
    return FaultUpdate(
        faults=faults,
        stall_ms=_number(body, "stallMs") if "stallMs" in body else 0.0,
        crash=flags["crash"],
        restart_after_ms=restart_after,
        restart=flags["restart"],
    )

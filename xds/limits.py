"""Limits on what one proxy may ask of the xDS server, and on how fast new
streams are admitted.

Each exceeded per-proxy limit ends only the offending stream, with a gRPC status
that says which (RESOURCE_EXHAUSTED) and a count in ``sluice_xds_stream_errors``;
other streams carry on. Admission (``AdmissionQueue``, ``default_push_limit``)
bounds how many new streams wait and get their first pushes at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class StreamLimits:
    """What one proxy may ask of the server; beyond it, a gRPC error and a metric."""

    max_streams_per_peer: int = 20_000  # per client IP (many sidecars may share a node)
    max_message_bytes: int = 4 * 1024 * 1024  # a request with Envoy's full node is ~60 KB
    requests_per_s: float = 50.0  # sustained, per stream; Envoy sends a few per change
    request_burst: float = 500.0


class TokenBucket:
    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def peer_host(peer: str | None) -> str:
    """``ipv4:127.0.0.1:5432`` -> ``127.0.0.1`` (the port changes per connection)."""
    text = peer or "unknown"
    kind, _, rest = text.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rsplit(":", 1)[0].strip("[]")
    return text


def default_push_limit() -> int:
    # istiod's bound on concurrent pushes: min(15 + 5 × cores, 100).
    return min(15 + 5 * (os.cpu_count() or 1), 100)


@dataclass(frozen=True)
class AdmissionQueue:
    """How many new streams may wait to be admitted, and for how long.

    grpc.aio takes one incoming call from gRPC core per turn of the event
    loop; streams that arrive faster wait in core's queue of calls the
    application has not picked up yet. That happens whenever many proxies
    connect together: a fleet starting, or every proxy reconnecting after a
    control-plane restart, while the loop is busy with the first pushes of the
    streams already admitted. Core's defaults drop calls from that queue
    without a trace (the proxy sees CANCELLED, the server logs nothing, the
    handler never runs): at random once more than 1,000 wait, every one
    beyond 3,000 (``grpc.server.max_pending_requests`` and its
    ``_hard_limit``), and any call that waited 30 s
    (``grpc.server_max_unrequested_time_in_server``). With those, 2,000
    simulated proxies connecting at once lost streams after about 300 were
    admitted (bench/XDS.md, "Connect storms").

    A waiting stream holds only core's call state and its buffered first
    request (no task, no stream machine), so the queue is sized for a fleet:
    ``max_streams`` is both the soft and the hard limit (no random early
    drop below it) and ``max_wait_s`` is well above the time a burst of that
    size takes to be admitted (at the rate measured on 2 cores, about 100 s
    for 20,000). Beyond them core still sheds load.
    """

    max_streams: int = 20_000
    max_wait_s: int = 300

    def __post_init__(self) -> None:
        if self.max_streams < 1 or self.max_wait_s < 1:
            raise ValueError(f"admission queue bounds must be positive: {self}")

    def channel_args(self) -> list[tuple[str, int]]:
        return [
            ("grpc.server.max_pending_requests", self.max_streams),
            ("grpc.server.max_pending_requests_hard_limit", self.max_streams),
            ("grpc.server_max_unrequested_time_in_server", self.max_wait_s),
        ]

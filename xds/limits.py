"""Limits on what one proxy may ask of the xDS server.

Each exceeded limit ends only the offending stream, with a gRPC status that
says which (RESOURCE_EXHAUSTED) and a count in ``sluice_xds_stream_errors``;
other streams carry on.
"""

from __future__ import annotations

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

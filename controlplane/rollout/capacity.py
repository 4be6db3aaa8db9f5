"""Shifting traffic without overloading the receiving version (pure).

A rollback sends the candidate's share back to the baseline; a promotion the
baseline's to the candidate. When the receiving version was scaled for its
current share (an autoscaler shrank the baseline while the canary grew), an
instant shift overloads it. Capacity is the sum of endpoint weights of the
endpoints that take traffic (not draining, not unhealthy); load per unit of
capacity is share / capacity. The shift goes at once when the receiver's load
per unit afterwards stays within ``1 + headroom`` of the busiest version's load
per unit now; otherwise it ramps by at most ``maxStep`` points per interval,
re-checking capacity at every step (so it finishes early once the receiver
has scaled up).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controlplane.model import EndpointHealth, ModelService


@dataclass(frozen=True)
class Shift:
    """How a ramp moves: at most ``max_step`` points every ``interval_s``."""

    max_step: float = 25.0
    interval_s: float = 10.0
    headroom: float = 0.25


def capacity(service: ModelService, version: str) -> float:
    try:
        endpoints = service.version(version).endpoints
    except KeyError:
        return 0.0
    return float(sum(e.weight for e in endpoints
                     if e.health not in (EndpointHealth.DRAINING, EndpointHealth.UNHEALTHY)))


def fits(service: ModelService, shares: Mapping[str, float], receiver: str,
         target: float, headroom: float) -> bool:
    """Whether the receiver can take ``target`` percent now (``shares`` in percent)."""
    cap_r = capacity(service, receiver)
    if cap_r <= 0:
        return False
    busiest = max((share / cap for v, share in shares.items()
                   if share > 0 and (cap := capacity(service, v)) > 0), default=0.0)
    if busiest <= 0:
        return True  # nothing flows yet: no load to compare with
    return target / cap_r <= (1.0 + headroom) * busiest


def next_share(service: ModelService, shares: Mapping[str, float], receiver: str,
               shift: Shift) -> float:
    """The receiver's share after one ramp step: all of it when that fits, else + max_step."""
    current = shares.get(receiver, 0.0)
    if fits(service, shares, receiver, 100.0, shift.headroom):
        return 100.0
    return min(100.0, current + shift.max_step)

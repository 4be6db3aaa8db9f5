"""The offline class's concurrency cap, sized from the fleet's spare capacity (pure).

Every pod of capacity ``c`` (its prior weight over the weight scale: 2 for an
H100 with ``capacity: {h100: 2, a100: 1}``) comfortably holds
``concurrencyPerPod × c`` requests. What online traffic does not use of that,
measured as its mean requests in flight over the last window, is spare; batch
may use the spare of the whole fleet::

    cap = min(maxConcurrency, floor(Σ_pods max(0, slots_i − online_i)))

Every version has its own batch cluster, so its own cap, from its own pods
(``version_caps``). Each proxy enforces its own share (Envoy's circuit breakers
count per proxy), ``cap // proxies``, where ``proxies`` are those that report
load for the service (a debug client, or an Envoy without load reporting, takes
no share). The cap moves when online load moves, but slowly: a new cap
is a new batch cluster (CDS), and Envoy starts a replaced cluster's circuit
breaker from zero while the old cluster's requests finish, so every change lets
up to one extra cap of batch requests in for as long as those last. Hence a
change below 20 % (or one request) is ignored, and a change happens at most
every ``CHANGE_EVERY`` intervals, except that a drop to zero or by half always applies at once
(online first).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["fleet_cap", "per_proxy_cap", "version_caps"]

HYSTERESIS = 0.2
CHANGE_EVERY = 5  # intervals between two changes of the cap (unless it must drop)


def fleet_cap(slots: Mapping[str, float], online: Mapping[str, float],
              max_concurrency: int | None = None) -> int:
    """Batch requests the fleet can take on top of its online load."""
    spare = sum(max(0.0, s - online.get(k, 0.0)) for k, s in slots.items())
    cap = math.floor(spare + 1e-9)
    return cap if max_concurrency is None else min(cap, max_concurrency)


def version_caps(slots: Mapping[str, Mapping[str, float]], online: Mapping[str, float],
                 max_concurrency: int | None = None) -> dict[str, int]:
    """Per version (its own batch cluster, its own circuit breaker): what its pods can
    take on top of their online load. A pod listed by several versions counts for the
    first (in ``slots``' order) that lists it; ``max_concurrency`` bounds the sum,
    shared out in proportion (largest remainders first). (One fleet cap on every
    version's cluster would let each version's pods take the whole fleet's spare: a
    canary's few pods most of all.)"""
    owned: set[str] = set()
    caps: dict[str, int] = {}
    for version, pods in slots.items():
        own = {k: v for k, v in pods.items() if k not in owned}
        owned.update(own)
        caps[version] = fleet_cap(own, online)
    whole = sum(caps.values())
    if max_concurrency is None or whole <= max_concurrency:
        return caps
    exact = {version: cap * max_concurrency / whole for version, cap in caps.items()}
    shared = {version: math.floor(x) for version, x in exact.items()}
    left = max_concurrency - sum(shared.values())
    for version in sorted(exact, key=lambda v: shared[v] - exact[v])[:left]:
        shared[version] += 1
    return shared


def per_proxy_cap(total: int, proxies: int, previous: int | None,
                  since_change_s: float = math.inf, min_change_s: float = 0.0) -> int:
    """One proxy's share of ``total``, kept at ``previous`` while the change is noise or
    the last change is younger than ``min_change_s``."""
    new = total // max(1, proxies)
    if previous is None or new == previous:
        return new
    if new == 0 or new <= previous // 2:
        return new
    if abs(new - previous) <= max(1.0, HYSTERESIS * previous):
        return previous
    return new if since_change_s >= min_change_s else previous

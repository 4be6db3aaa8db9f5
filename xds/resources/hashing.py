"""Sizes for Envoy's consistent-hash load balancers, as pure functions of the pool size.

Both sizes depend on the *bucketed* pool size (the next power of two), not the
exact number of pods: scaling a version by one pod then leaves the Cluster
resource byte-for-byte equal, so it is neither re-serialized nor re-pushed (a
Cluster update also re-warms the cluster in Envoy). Only crossing a power of
two changes it.

Ring hash (Envoy's ketama ring,
https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/load_balancing/load_balancers#ring-hash):
a host owns the arcs that end at its ring entries, so with ``k`` entries per
host its share is a sum of ``k`` uniform spacings. Its load relative to the
mean then has standard deviation ≈ sqrt((N-1)/N / k) (the Beta(k, (N-1)k)
approximation). We want the busiest of ``N`` hosts at most
``RING_HASH_MAX_LOAD`` × mean with probability ``RING_HASH_CONFIDENCE`` over
the (unknown) pod addresses, so we solve for ``k`` with a Bonferroni bound
over the ``N`` hosts:

    k = (N-1)/N · (z / (MAX_LOAD - 1))²,   z = Φ⁻¹(1 - (1 - CONFIDENCE) / N)

which gives ≈2,200 entries per host for 8 pods and ≈3,900 for 64 (the ≈2,000
per pod of the routing reference is the *typical* case; this is the tail).
``tests/unit/xds/test_resources_hashing.py`` re-implements Envoy's ring
construction (xxHash64 of ``"<ip>:<port>_<i>"``) and checks the result.

Limits, on purpose: the bound assumes equal endpoint weights. Envoy gives
the lightest host ``min_ring × w_min / Σw`` entries, so with unequal weights
the light hosts get fewer and their error grows by sqrt(w_mean / w_min)
(≈1.22× for a 1:2 mix). Endpoint weights are EDS data that change with
measured capacity; keying the ring on them would rewrite (and re-warm) the
Cluster on every weight push. The ring also costs memory (16 bytes an entry:
≈4 MB at 64 pods) and is rebuilt on every membership change; past a few
hundred pods Maglev is the better choice.

Maglev (https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/load_balancing_policies/maglev/v3/maglev.proto):
the lookup table must be a prime (Envoy rejects anything else) no larger than
5,000,011; the paper's guidance is a table ≥ 100 × the number of backends for
an imbalance of ≈1 %.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Final

RING_HASH_MAX_LOAD: Final = 1.05
RING_HASH_CONFIDENCE: Final = 0.95
# Envoy's defaults/limits for RingHash.minimum_ring_size / maximum_ring_size.
ENVOY_DEFAULT_MIN_RING_SIZE: Final = 1024
ENVOY_MAX_RING_SIZE: Final = 8 * 1024 * 1024
_RING_GRANULE: Final = 1024

MAGLEV_DEFAULT_TABLE_SIZE: Final = 65537
MAGLEV_MAX_TABLE_SIZE: Final = 5_000_011
MAGLEV_ENTRIES_PER_HOST: Final = 100


def pool_bucket(pool_size: int) -> int:
    """The next power of two ≥ ``pool_size`` (1 for an empty pool)."""
    if pool_size < 0:
        raise ValueError(f"pool size must be >= 0, got {pool_size}")
    return 1 << max(pool_size - 1, 0).bit_length()


def ring_hash_entries_per_host(bucket: int) -> int:
    """Ring entries each of ``bucket`` equally weighted hosts needs (see module doc)."""
    if bucket <= 1:
        return 1  # one host owns the whole ring, whatever its size
    z = NormalDist().inv_cdf(1.0 - (1.0 - RING_HASH_CONFIDENCE) / bucket)
    return math.ceil((bucket - 1) / bucket * (z / (RING_HASH_MAX_LOAD - 1.0)) ** 2)


def ring_hash_minimum_size(bucket: int) -> int:
    """``minimum_ring_size`` for a pool in ``bucket``.

    Envoy gives the lightest host ``ceil(min_weight_share × minimum_ring_size)``
    entries, so with equal weights every host of a pool of ``N ≤ bucket`` pods
    gets at least ``ring_hash_entries_per_host(bucket)``. Rounded up to a
    multiple of 1,024, never below Envoy's default and never above its 8M cap
    (beyond ≈1,300 pods the cap binds: use Maglev there).
    """
    entries = ring_hash_entries_per_host(bucket) * bucket
    rounded = -(-entries // _RING_GRANULE) * _RING_GRANULE
    return min(max(rounded, ENVOY_DEFAULT_MIN_RING_SIZE), ENVOY_MAX_RING_SIZE)


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, math.isqrt(n) + 1, 2))


def next_prime(n: int) -> int:
    """The smallest prime ≥ ``n``."""
    candidate = max(n, 2)
    while not is_prime(candidate):
        candidate += 1
    return candidate


def maglev_table_size(bucket: int) -> int:
    """A prime ≥ 100 × ``bucket``, at least Envoy's default 65,537, at most its cap."""
    wanted = max(MAGLEV_DEFAULT_TABLE_SIZE, MAGLEV_ENTRIES_PER_HOST * bucket)
    return min(next_prime(wanted), MAGLEV_MAX_TABLE_SIZE)


def hash_balance_factor(bounded_load: float) -> int:
    """Envoy's ``hash_balance_factor`` (percent of the mean load, minimum 100).

    https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/load_balancing_policies/common/v3/common.proto
    """
    factor = round(100 * bounded_load)
    if factor < 100:
        raise ValueError(f"bounded load must be >= 1.0 (Envoy minimum 100 %), got {bounded_load}")
    return factor

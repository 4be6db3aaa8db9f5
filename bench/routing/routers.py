"""Envoy's load balancers as the simulation runs them, one instance per proxy.

Each proxy sees only its own requests in flight, as Envoy does. Algorithms follow
Envoy's source: round robin is a cursor with equal weights and an
earliest-deadline-first (EDF) schedule with unequal ones; least request is
power of two choices with equal weights, and an earliest-deadline-first schedule
over ``weight / (active + 1) ^ bias`` with unequal ones (a host's weight is
computed when it is put back in the schedule); Maglev builds Google's lookup
table (size from ``xds.resources.hashing``); the ring hash places
``ring_size / hosts`` points per host; bounded load (``hash_balance_factor``)
caps a host at ``factor × weighted mean load`` and otherwise walks a
hash-seeded sequence of hosts; client-side weighted round robin weights a host
by ``rps / utilization`` from the ORCA report on its last response, recomputed
every ``weight_update_period``, hosts without a report at the mean.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
import zlib
from collections.abc import Sequence

from xds.resources import hashing

__all__ = ["Proxy", "hash_key", "maglev_table", "ring"]


def hash_key(text: str) -> int:
    return zlib.crc32(text.encode()) * 2654435761 % (1 << 32)


def maglev_table(hosts: int, weights: Sequence[float], size: int) -> list[int]:
    """Maglev's lookup table (weighted: a host fills slots in proportion to its weight)."""
    offsets = [hash_key(f"o{h}") % size for h in range(hosts)]
    skips = [hash_key(f"s{h}") % (size - 1) + 1 for h in range(hosts)]
    nexts = [0] * hosts
    table = [-1] * size
    filled = 0
    top = max(weights)
    credit = [0.0] * hosts
    while filled < size:
        for h in range(hosts):
            credit[h] += weights[h] / top
            if credit[h] < 1.0:
                continue
            credit[h] -= 1.0
            while True:
                slot = (offsets[h] + nexts[h] * skips[h]) % size
                nexts[h] += 1
                if table[slot] < 0:
                    table[slot] = h
                    filled += 1
                    break
            if filled == size:
                break
    return table


def ring(hosts: int, weights: Sequence[float], size: int) -> tuple[list[int], list[int]]:
    """A hash ring: sorted points and the host owning each."""
    total = sum(weights)
    points: list[tuple[int, int]] = []
    for h in range(hosts):
        for i in range(max(1, round(size * weights[h] / total))):
            points.append((hash_key(f"{h}_{i}"), h))
    points.sort()
    return [p for p, _ in points], [h for _, h in points]


class Proxy:
    """One Envoy's view: its own in-flight counts and its load balancer's state."""

    def __init__(self, kind: str, weights: Sequence[float], rng: random.Random, *,
                 bounded: float | None = None, bias: float = 1.0,
                 tables: dict[str, object] | None = None) -> None:
        self.kind = kind
        self.n = len(weights)
        self.weights = list(weights)
        self.rng = rng
        self.bounded = bounded
        self.bias = bias
        self.active = [0] * self.n
        self.total_active = 0
        self._cursor = rng.randrange(self.n) if self.n else 0
        self._cumulative: list[float] = []
        self._total = 0.0
        self._edf: list[tuple[float, int, int]] = []
        self._edf_clock = 0.0
        self._counter = 0
        self.orca: list[tuple[float, float] | None] = [None] * self.n  # (rps, utilization)
        self.orca_seen: list[float] = [math.inf] * self.n
        self.orca_weights = [1.0] * self.n
        self.tables = tables or {}
        self._reset_edf()

    # -- weights --------------------------------------------------------------------

    def set_weights(self, weights: Sequence[float]) -> None:
        self.weights = list(weights)
        self._reset_edf()

    def _reset_edf(self) -> None:
        self._total = sum(self.weights)
        self._cumulative = []
        running = 0.0
        for w in self.weights:
            running += w
            self._cumulative.append(running)
        self._equal = len(set(self.weights)) <= 1
        self._edf = []
        for h in range(self.n):
            self._push(h, self.rng.random())

    def _push(self, h: int, jitter: float = 0.0) -> None:
        w = self._effective(h)
        self._counter += 1
        heapq.heappush(self._edf, (self._edf_clock + (1.0 + jitter) / w, self._counter, h))

    def _effective(self, h: int) -> float:
        if self.kind == "orca":
            return max(self.orca_weights[h], 1e-9)
        w = max(self.weights[h], 1e-9)
        if self.kind in ("lr", "hybrid"):
            return w / (self.active[h] + 1) ** self.bias
        return w

    # -- picking --------------------------------------------------------------------

    def pick(self, key: str | None, now: float) -> int:
        kind = self.kind
        if kind == "rr" and self._equal:
            self._cursor = (self._cursor + 1) % self.n
            return self._cursor
        if kind == "random":
            return self._random()
        if kind in ("ring", "maglev") or (kind == "hybrid" and key is not None):
            return self._hashed(key or str(self.rng.random()))
        if kind in ("lr", "hybrid") and self._equal:
            a, b = self.rng.sample(range(self.n), 2) if self.n > 1 else (0, 0)
            return a if self.active[a] < self.active[b] or (
                self.active[a] == self.active[b] and self.rng.random() < 0.5) else b
        return self._edf_pick()

    def _random(self) -> int:
        x = self.rng.random() * self._total
        return min(bisect.bisect(self._cumulative, x), self.n - 1)

    def _edf_pick(self) -> int:
        deadline, _, h = heapq.heappop(self._edf)
        self._edf_clock = deadline
        self._push(h)
        return h

    def _hashed(self, key: str) -> int:
        k = hash_key(key)
        if self.kind == "ring":
            points, owners = self.tables["ring"]  # type: ignore[misc]
            i = bisect.bisect(points, k) % len(points)
            home = owners[i]
        else:
            table: list[int] = self.tables["maglev"]  # type: ignore[assignment]
            home = table[k % len(table)]
        if self.bounded is None or self._fits(home):
            return home
        # The next hosts of a sequence seeded by the key (Envoy walks its hash table).
        probe = random.Random(k)
        for _ in range(4 * self.n):
            h = probe.randrange(self.n)
            if self._fits(h):
                return h
        return home

    def _fits(self, h: int) -> bool:
        share = self.weights[h] / self._total
        assert self.bounded is not None
        limit = math.ceil((self.total_active + 1) * share * self.bounded)
        return self.active[h] + 1 <= limit

    # -- bookkeeping ----------------------------------------------------------------

    def started(self, h: int) -> None:
        self.active[h] += 1
        self.total_active += 1

    def finished(self, h: int) -> None:
        self.active[h] -= 1
        self.total_active -= 1

    def report(self, h: int, report: tuple[float, float], now: float) -> None:
        """An ORCA load report from host ``h`` (in a response's headers)."""
        self.orca[h] = report
        if self.orca_seen[h] == math.inf:
            self.orca_seen[h] = now

    def update_orca(self, now: float, blackout: float) -> None:
        """Client-side weighted round robin's periodic weight update."""
        got = [(h, r) for h, r in enumerate(self.orca)
               if r is not None and now - self.orca_seen[h] >= blackout]
        weights = {h: rps / max(util, 1e-3) for h, (rps, util) in got if rps > 0}
        mean = sum(weights.values()) / len(weights) if weights else 1.0
        self.orca_weights = [weights.get(h, mean) for h in range(self.n)]
        self._reset_edf()


def table_size(hosts: int) -> int:
    return hashing.maglev_table_size(hashing.pool_bucket(hosts))


def ring_size(hosts: int) -> int:
    return hashing.ring_hash_minimum_size(hashing.pool_bucket(hosts))

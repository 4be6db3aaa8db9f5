"""Envoy's load balancers as the simulation runs them, one instance per proxy.

Each proxy sees only its own requests in flight, as Envoy does. Algorithms follow
Envoy's source: round robin is a cursor with equal weights and an
earliest-deadline-first (EDF) schedule with unequal ones; least request is
power of two choices with equal weights (drawn with replacement, ties to the
first), and an earliest-deadline-first schedule
over ``weight / (active + 1) ^ bias`` with unequal ones (a host's weight is
computed when it is put back in the schedule); Maglev builds Google's lookup
table (size from ``xds.resources.hashing``); the ring hash places
``ring_size / hosts`` points per host; bounded load (``hash_balance_factor``)
caps a host at ``factor × weighted mean load`` (Envoy's integer arithmetic) and
otherwise takes the first host not overloaded in a hash-seeded shuffle, else the
least overloaded; hybrid's keyed and keyless requests are two clusters, each
counting only its own requests in flight; client-side weighted round robin weights a host
by ``rps / utilization`` from the ORCA report on its last response, recomputed
every ``weight_update_period``, hosts without a report at the median.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xds.resources import hashing

__all__ = ["Hashing", "Proxy", "hash_key", "maglev_table", "ring", "ring_host", "stand_in"]


def hash_key(text: str) -> int:
    return zlib.crc32(text.encode()) * 2654435761 % (1 << 32)


def maglev_table(hosts: int, weights: Sequence[float], size: int, salt: str = "") -> list[int]:
    """Maglev's lookup table (weighted: a host fills slots in proportion to its weight).

    Envoy hashes each host's address; ``salt`` stands for the addresses (another
    salt, another table: which keys share a pod is a draw, as a new port is)."""
    offsets = [hash_key(f"{salt}o{h}") % size for h in range(hosts)]
    skips = [hash_key(f"{salt}s{h}") % (size - 1) + 1 for h in range(hosts)]
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


def ring(hosts: int, weights: Sequence[float], size: int, salt: str = ""
         ) -> tuple[list[int], list[int]]:
    """A hash ring: sorted points and the host owning each (``salt``: as for Maglev)."""
    total = sum(weights)
    points: list[tuple[int, int]] = []
    for h in range(hosts):
        for i in range(max(1, round(size * weights[h] / total))):
            points.append((hash_key(f"{salt}{h}_{i}"), h))
    points.sort()
    return [p for p, _ in points], [h for _, h in points]


def ring_host(points: list[int], owners: list[int], h: int) -> int:
    """The first ring entry at or above ``h``, wrapping around (Envoy's ketama lookup)."""
    i = bisect.bisect_left(points, h)
    return owners[i if i < len(points) else 0]


@dataclass(frozen=True, eq=False)
class Hashing:
    """A hashing policy's table and hash functions: cheap stand-ins (``stand_in``), or
    Envoy's own over the pods' real addresses (``envoyhash.envoy_hashing``)."""

    key_hash: Callable[[str], int]  # a request's hash from its key
    seeded: Callable[[int], Callable[[int], int]]  # hash -> draw(k) in [0, k) (bounded load)
    maglev: list[int] | None = None
    ring: tuple[list[int], list[int]] | None = None


def stand_in(kind: str, weights: Sequence[float], salt: str = "") -> Hashing:
    """Tables of the right size and weights from a cheap hash (1,000 pods build fast)."""
    n = len(weights)
    if kind == "ring":
        return Hashing(hash_key, lambda h: random.Random(h).randrange,
                       ring=ring(n, weights, ring_size(n), salt))
    return Hashing(hash_key, lambda h: random.Random(h).randrange,
                   maglev=maglev_table(n, weights, table_size(n), salt))


class Proxy:
    """One Envoy's view: its own in-flight counts and its load balancer's state."""

    def __init__(self, kind: str, weights: Sequence[float], rng: random.Random, *,
                 bounded: float | None = None, bias: float = 1.0,
                 hashing: Hashing | None = None) -> None:
        self.kind = kind
        self.n = len(weights)
        self.weights = list(weights)
        self.rng = rng
        self.bounded = bounded
        self.bias = bias
        self.active = [0] * self.n
        self.total_active = 0
        # hybrid's keyed requests go to a cluster of their own (``/affinity``): its hosts
        # are other objects to Envoy, with their own requests-in-flight counters.
        self.affinity = [0] * self.n
        self.affinity_total = 0
        self._cursor = rng.randrange(self.n) if self.n else 0
        self._cumulative: list[float] = []
        self._total = 0.0
        self._edf: list[tuple[float, int, int]] = []
        self._edf_clock = 0.0
        self._counter = 0
        self.orca: list[tuple[float, float] | None] = [None] * self.n  # (rps, utilization)
        self.orca_seen: list[float] = [math.inf] * self.n
        self.orca_weights = [1.0] * self.n
        self.hashing = hashing
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
            return float(w / (self.active[h] + 1) ** self.bias)
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
            return self._hashed(key)
        if kind in ("lr", "hybrid") and self._equal:
            # Envoy's two choices are drawn with replacement (with 4 hosts, one pick in
            # four compares a host with itself) and a tie keeps the first.
            a, b = self.rng.randrange(self.n), self.rng.randrange(self.n)
            return b if self.active[b] < self.active[a] else a
        return self._edf_pick()

    def _random(self) -> int:
        x = self.rng.random() * self._total
        return min(bisect.bisect(self._cumulative, x), self.n - 1)

    def _edf_pick(self) -> int:
        deadline, _, h = heapq.heappop(self._edf)
        self._edf_clock = deadline
        self._push(h)
        return h

    def _hashed(self, key: str | None) -> int:
        hs = self.hashing
        assert hs is not None
        # Without a key Envoy takes a random hash (here: of a random key, in the same range
        # as the table's hashes).
        k = hs.key_hash(key if key is not None else str(self.rng.random()))
        if hs.ring is not None:
            home = ring_host(*hs.ring, k)
        else:
            assert hs.maglev is not None
            home = hs.maglev[k % len(hs.maglev)]
        if self.bounded is None:
            return home
        best, least = home, self._overload(home)
        if least <= 1.0:
            return home
        # Envoy shuffles the hosts with a generator seeded by the hash and takes the first
        # one not overloaded, else the least overloaded.
        order = list(range(self.n))
        draw = hs.seeded(k)
        for i in range(self.n):
            j = i + draw(self.n - i)
            order[i], order[j] = order[j], order[i]
            h = order[i]
            if h == home:
                continue
            factor = self._overload(h)
            if factor <= 1.0:
                return h
            if factor < least:
                best, least = h, factor
        return best

    def _overload(self, h: int) -> float:
        """Envoy's ``hostOverloadFactor``: the host's requests in flight over its slots,
        ``ceil(ceil((cluster's in flight + 1) × factor) × normalized weight)`` (at least 1),
        in integer percent as Envoy computes it; above 1 the host is overloaded."""
        assert self.bounded is not None
        active, total = ((self.affinity, self.affinity_total) if self.kind == "hybrid"
                         else (self.active, self.total_active))
        percent = round(self.bounded * 100)
        total_slots = ((total + 1) * percent + 99) // 100
        slots = max(math.ceil(total_slots * self.weights[h] / self._total), 1)
        return active[h] / slots

    # -- bookkeeping ----------------------------------------------------------------

    def started(self, h: int, key: str | None = None) -> None:
        if self.kind == "hybrid" and key is not None:
            self.affinity[h] += 1
            self.affinity_total += 1
        else:
            self.active[h] += 1
            self.total_active += 1

    def finished(self, h: int, key: str | None = None) -> None:
        if self.kind == "hybrid" and key is not None:
            self.affinity[h] -= 1
            self.affinity_total -= 1
        else:
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
        # Envoy keeps integer weights (uint32) and gives hosts without one the median.
        weights = {h: float(max(1, int(rps / util))) for h, (rps, util) in got
                   if rps > 0 and util > 0}
        ranked = sorted(weights.values())
        k = len(ranked) // 2
        median = (ranked[k] if len(ranked) % 2 else float(int((ranked[k - 1] + ranked[k]) / 2))
                  ) if ranked else 1.0
        self.orca_weights = [weights.get(h, median) for h in range(self.n)]
        self._reset_edf()


def table_size(hosts: int) -> int:
    return hashing.maglev_table_size(hashing.pool_bucket(hosts))


def ring_size(hosts: int) -> int:
    return hashing.ring_hash_minimum_size(hashing.pool_bucket(hosts))

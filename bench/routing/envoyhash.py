"""Envoy's consistent hashing, bit for bit, so the simulation's pods own the same keys.

Which sessions share a pod under ring hash or Maglev is decided by hashes of the
pods' addresses: another address, another table. The simulation's check at 4
pods replays the Envoy runs' requests, so it builds the tables Envoy built from
the same addresses (the pods' ``127.0.0.1:port``) and hashes the same header
values, following Envoy's source:

- a request's hash is xxHash64 of its ``x-session-id`` (seed 0);
- Maglev (``maglev_lb.cc``): hosts sorted by address, offset ``xxHash64(addr) %
  M``, skip ``xxHash64(addr, 1) % (M - 1) + 1``, and a host takes a slot in an
  iteration when ``iteration × weight ≥ target``, its target then growing by the
  largest normalized weight;
- ring hash (``ring_hash_lb.cc``): ``scale = min(ceil(w_min × min_ring) / w_min,
  max_ring)``, host after host ``"<addr>_<i>"`` hashed while the running count is
  below the running target ``Σ scale × w``; a hash goes to the first entry at or
  above it, wrapping around;
- bounded load shuffles the hosts with ``std::mt19937`` seeded by the hash.

xxHash64 matches the reference vectors (``tests/unit/routing/test_envoyhash.py``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from bench.routing.routers import Hashing, ring_size, table_size

__all__ = ["envoy_hashing", "maglev_table", "mt19937", "ring", "xxh64"]

_M = (1 << 64) - 1
_P1 = 11400714785074694791
_P2 = 14029467366897019727
_P3 = 1609587929392839161
_P4 = 9650029242287828579
_P5 = 2870177450012600261


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M


def _round(acc: int, lane: int) -> int:
    return _rotl((acc + lane * _P2) & _M, 31) * _P1 & _M


def _lane(data: bytes, pos: int, size: int = 8) -> int:
    return int.from_bytes(data[pos:pos + size], "little")


def xxh64(data: bytes, seed: int = 0) -> int:
    """xxHash64 (XXH64) of ``data``."""
    n, pos = len(data), 0
    if n >= 32:
        v = [(seed + _P1 + _P2) & _M, (seed + _P2) & _M, seed & _M, (seed - _P1) & _M]
        while pos + 32 <= n:
            v = [_round(v[i], _lane(data, pos + 8 * i)) for i in range(4)]
            pos += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _M
        for lane in v:
            h = ((h ^ _round(0, lane)) * _P1 + _P4) & _M
    else:
        h = (seed + _P5) & _M
    h = (h + n) & _M
    while pos + 8 <= n:
        h = (_rotl(h ^ _round(0, _lane(data, pos)), 27) * _P1 + _P4) & _M
        pos += 8
    if pos + 4 <= n:
        h = (_rotl(h ^ (_lane(data, pos, 4) * _P1 & _M), 23) * _P2 + _P3) & _M
        pos += 4
    while pos < n:
        h = _rotl(h ^ (data[pos] * _P5 & _M), 11) * _P1 & _M
        pos += 1
    h = (h ^ (h >> 33)) * _P2 & _M
    h = (h ^ (h >> 29)) * _P3 & _M
    return h ^ (h >> 32)


def mt19937(seed: int) -> random.Random:
    """A generator whose ``getrandbits(32)`` is ``std::mt19937(seed)()`` (Python's
    generator is the same Mersenne Twister; only its seeding differs)."""
    state = [seed & 0xFFFFFFFF]
    for i in range(1, 624):
        prev = state[-1]
        state.append((1812433253 * (prev ^ (prev >> 30)) + i) & 0xFFFFFFFF)
    rng = random.Random()
    rng.setstate((3, (*state, 624), None))
    return rng


def _normalized(weights: Sequence[int]) -> list[float]:
    total = sum(weights)
    return [w * 1.0 / total for w in weights]


def maglev_table(addresses: Sequence[str], weights: Sequence[int], size: int) -> list[int]:
    """Envoy's Maglev lookup table: slot -> host index (in ``addresses`` order)."""
    norm = _normalized(weights)
    top = max(norm)
    order = sorted(range(len(addresses)), key=lambda h: addresses[h])
    offset = {h: xxh64(addresses[h].encode()) % size for h in order}
    skip = {h: xxh64(addresses[h].encode(), 1) % (size - 1) + 1 for h in order}
    nxt = dict.fromkeys(order, 0)
    target = dict.fromkeys(order, 0.0)
    table = [-1] * size
    filled, iteration = 0, 1
    while filled < size:
        for h in order:
            if filled == size:
                break
            if iteration * norm[h] < target[h]:
                continue
            target[h] += top
            c = (offset[h] + skip[h] * nxt[h]) % size
            while table[c] >= 0:
                nxt[h] += 1
                c = (offset[h] + skip[h] * nxt[h]) % size
            table[c] = h
            nxt[h] += 1
            filled += 1
        iteration += 1
    return table


def ring(addresses: Sequence[str], weights: Sequence[int], min_size: int,
         max_size: int = 8 * 1024 * 1024) -> tuple[list[int], list[int]]:
    """Envoy's ketama ring: sorted entry hashes and the host index owning each."""
    norm = _normalized(weights)
    low = min(norm)
    scale = min(math.ceil(low * min_size) / low, float(max_size))
    entries: list[tuple[int, int]] = []
    current = target = 0.0
    for h, address in enumerate(addresses):
        target += scale * norm[h]
        i = 0
        while current < target:
            entries.append((xxh64(f"{address}_{i}".encode()), h))
            i += 1
            current += 1
    entries.sort(key=lambda e: e[0])
    return [e[0] for e in entries], [e[1] for e in entries]


def _seeded(h: int) -> Callable[[int], int]:
    """Bounded load's draws: ``uniform_int`` over ``std::mt19937(hash)``."""
    rng = mt19937(h)

    def draw(k: int) -> int:
        x = k
        while x >= k:
            x = rng.getrandbits(32) // ((1 << 32) // k)
        return x
    return draw


def _key_hash(key: str) -> int:
    return xxh64(key.encode())


def envoy_hashing(kind: str, addresses: Sequence[str], weights: Sequence[int]) -> Hashing:
    """Envoy's table for ``kind`` (ring or maglev) over ``addresses`` with the pushed
    integer ``weights``, sized as Sluice sizes it (``xds.resources.hashing``)."""
    n = len(addresses)
    if kind == "ring":
        return Hashing(_key_hash, _seeded, ring=ring(addresses, weights, ring_size(n)))
    return Hashing(_key_hash, _seeded, maglev=maglev_table(addresses, weights, table_size(n)))

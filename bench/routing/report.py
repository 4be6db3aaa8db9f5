"""Printing the routing benchmark: tables, the seed's comparison, the floors (pure text)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from bench.routing.stats import RunStats

__all__ = ["check", "fmt", "ratio", "run_table", "seed_table", "summary_table"]

# The seeds' own comparison (GPT-J 6B, 4 replicas, mixed requests).
SEED = {"round robin": (250.0, 450.0, 80.0), "least connections": (180.0, 320.0, 95.0),
        "response-time aware": (170.0, 300.0, 100.0)}


def fmt(x: float, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if math.isinf(x):
        return "∞"
    return f"{x:.{digits}f}"


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) and b != math.inf else \
        math.nan


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2)
                          for i, w in enumerate(widths)) + "|"
    body = ["| " + " | ".join(c.rjust(w) if i else c.ljust(w)
                             for i, (c, w) in enumerate(zip(r, widths, strict=True))) + " |"
            for r in rows]
    return "\n".join([line, rule, *body])


def run_table(results: Mapping[str, RunStats]) -> str:
    header = ["policy", "mean s", "p50 s", "p99 s", "TTFT p99 s", "req/s", "tok/s",
              "goodput", "busiest/mean"]
    rows = [[name, fmt(s.mean), fmt(s.p50), fmt(s.p99), fmt(s.ttft_p99), fmt(s.rps, 1),
             fmt(s.tps, 0), fmt(s.goodput, 1), fmt(s.imbalance)]
            for name, s in results.items()]
    return _table(header, rows)


def summary_table(rows: Mapping[str, Sequence[float]]) -> str:
    header = ["policy", "sat. req/s", "sat. tok/s", "at SLO req/s", "cache hit",
              "cache busiest/mean"]
    body = [[name, fmt(v[0], 1), fmt(v[1], 0), fmt(v[2], 1), fmt(100 * v[3], 0) + " %"
             if not math.isnan(v[3]) else "—", fmt(v[4])] for name, v in rows.items()]
    return _table(header, body)


def seed_table(ours: Mapping[str, tuple[float, float, float]]) -> str:
    """Mean, p99 and throughput as ratios to round robin: the seed's and ours."""
    rr = SEED["round robin"]
    rows = [[f"seed: {name}", fmt(v[0] / rr[0]), fmt(v[1] / rr[1]), fmt(v[2] / rr[2])]
            for name, v in SEED.items()]
    rows += [[name, fmt(v[0]), fmt(v[1]), fmt(v[2])] for name, v in ours.items()]
    return _table(["", "mean / RR", "p99 / RR", "throughput / RR"], rows)


def check(label: str, ok: bool, detail: str) -> str:
    return f"  [{'PASS' if ok else 'FAIL'}] {label}: {detail}"

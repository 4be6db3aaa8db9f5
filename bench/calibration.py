"""Calibration benchmark: false rollbacks, time to detect and time to promote.

    python -m bench.calibration [--runs 1000] [--workers 2] [--seed 7]
                                [--tables compare,promotion]

Two tables. **compare**: simulated canaries with one-minute looks (60 per
run) and a fixed ramp 5 -> 10 -> 20 -> 30 -> 50 % (12 looks per step), run
through four judges on the *same* simulated runs:

* Sluice: the real ``analysis.judge`` look by look (first ROLLBACK counts);
* naive: one-sided z-test (errors: two proportions; latency: Welch on means)
  at 0.05, re-checked every look on cumulative data;
* Kayenta-style: Mann-Whitney / Hodges-Lehmann 98 % interval on per-window
  points (error rate, p95) since the start plus a 25 % effect gate, re-run
  every look;
* Flagger-style: per-window threshold (error rate > 2x the healthy rate, or
  p95 > 1.2x the healthy p95; an empty window is a failed check too), rollback
  after 5 failed checks.

**promotion** (``bench.promotion``): closed-loop canaries whose ramp follows
Sluice's own decisions, at 10 and 100 req/s, with Envoy's default latency
buckets and with those ``sluice bootstrap`` sets, gated on errors, p95
latency or ``slow_rate``: how often and how fast a healthy canary is
promoted, and how often a regression is rolled back.

Not a test: it prints the tables (and the machine it ran on) for the README.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from analysis.classic import KayentaClass, kayenta_classify, two_proportion_z, welch_z
from analysis.judge import Decision, Look, judge, start
from analysis.latency import interpolated_quantile
from analysis.samples import Histogram, Window
from analysis.spec import ExperimentSpec
from bench import promotion
from controlplane.config.experiment import experiment_from_mapping

RAMP = (5.0, 10.0, 20.0, 30.0, 50.0)
LOOK_S = 60.0
# Prometheus native-histogram style bounds (schema 3: 2^(1/8) growth), 16 ms .. 4 s.
BOUNDS = tuple([2 ** (k / 8) / 1000 for k in range(32, 97)] + [math.inf])
LAT_MEDIAN_S = 0.15
LAT_SIGMA = 0.6
P95_Z = 1.6448536269514722


@dataclass(frozen=True)
class Scenario:
    name: str
    rate_per_min: float = 600.0  # 10 req/s
    base_err: float = 0.01
    err_ratio: float = 1.0
    lat_scale: float = 1.0  # multiplies every latency (p95 moves by the same factor)
    gating: str = "errors"  # which metrics gate: errors, latency or both
    looks: int = 60


SCENARIOS = (
    Scenario("A/A errors gate"),
    Scenario("A/A errors+p95 gate", gating="both"),
    Scenario("errors 1.5x", err_ratio=1.5),
    Scenario("errors 2x", err_ratio=2.0),
    Scenario("A/A p95 gate", gating="latency"),
    Scenario("p95 +10%", lat_scale=1.10, gating="latency"),
    Scenario("p95 +25%", lat_scale=1.25, gating="latency"),
    Scenario("A/A sparse 0.1%, 2 req/s", rate_per_min=120.0, base_err=0.001),
    Scenario("sparse 0.1%->0.5%, 2 req/s", rate_per_min=120.0, base_err=0.001, err_ratio=5.0),
)


def experiment(gating: str) -> ExperimentSpec:
    def metric(name: str, kind: str, gate: bool, **extra: object) -> dict[str, object]:
        return {"name": name, "kind": kind, "gating": gate, "minSamples": 300, **extra}

    return _parse(
        {
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Experiment",
            "metadata": {"name": "calibration"},
            "spec": {
                "baseline": "base",
                "candidate": "canary",
                "alpha": 0.05,
                "steps": [{"weight": w, "soak": "12m"} for w in RAMP],
                "metrics": [
                    metric(
                        "errors",
                        "error_rate",
                        gating in ("errors", "both"),
                        harmMargin=0.0,
                        nonInferiorityMargin=0.5,
                        minEffect=0.001,
                    ),
                    metric(
                        "latency-p95",
                        "latency",
                        gating in ("latency", "both"),
                        harmMargin=0.0,
                        nonInferiorityMargin=0.25,
                        minEffect=0.0,
                        quantile=0.95,
                    ),
                ],
            },
        }
    )


def _parse(doc: dict[str, Any]) -> ExperimentSpec:
    return experiment_from_mapping(doc).analysis


@dataclass(frozen=True)
class Sim:
    """Per-window counts, shape (runs, looks[, buckets])."""

    n_c: NDArray[np.int64]
    n_b: NDArray[np.int64]
    x_c: NDArray[np.int64]
    x_b: NDArray[np.int64]
    h_c: NDArray[np.int64]  # per-bucket (not cumulative) latency counts
    h_b: NDArray[np.int64]
    weights: NDArray[np.float64]  # (looks,) canary percent


def _bucket_probs(scale: float) -> NDArray[np.float64]:
    from scipy import stats

    finite = np.asarray(BOUNDS[:-1])
    cdf = stats.lognorm.cdf(finite, s=LAT_SIGMA, scale=LAT_MEDIAN_S * scale)
    probs = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    out: NDArray[np.float64] = probs / probs.sum()
    return out


def simulate(sc: Scenario, runs: int, rng: np.random.Generator) -> Sim:
    per_step = sc.looks // len(RAMP)
    weights = np.repeat(np.asarray(RAMP), per_step)[: sc.looks]
    total = rng.poisson(sc.rate_per_min, (runs, sc.looks))
    n_c = rng.binomial(total, weights[None, :] / 100.0)
    n_b = total - n_c
    x_c = rng.binomial(n_c, min(1.0, sc.base_err * sc.err_ratio))
    x_b = rng.binomial(n_b, sc.base_err)
    h_c = rng.multinomial(n_c, _bucket_probs(sc.lat_scale))
    h_b = rng.multinomial(n_b, _bucket_probs(1.0))
    return Sim(n_c, n_b, x_c, x_b, h_c, h_b, weights)


def _window(sim: Sim, r: int, look: int, version: str) -> Window:
    cand = version == "canary"
    n = int((sim.n_c if cand else sim.n_b)[r, look])
    x = int((sim.x_c if cand else sim.x_b)[r, look])
    h = (sim.h_c if cand else sim.h_b)[r, look]
    w = float(sim.weights[look])
    return Window(
        (look + 1) * LOOK_S,
        version,
        n,
        x,
        histograms={"latency": Histogram(BOUNDS, tuple(int(c) for c in h))},
        weight=w if cand else 100.0 - w,
    )


def run_engine(sim: Sim, spec: ExperimentSpec) -> NDArray[np.int64]:
    """First ROLLBACK look (1-based, 0 = never) per run."""
    runs, looks = sim.n_c.shape
    first = np.zeros(runs, dtype=np.int64)
    for r in range(runs):
        state = start(spec, 0.0)
        for look in range(looks):
            lk = Look(
                (look + 1) * LOOK_S, _window(sim, r, look, "canary"), _window(sim, r, look, "base")
            )
            state, j = judge(state, lk)
            if j.decision is Decision.ROLLBACK:
                first[r] = look + 1
                break
            if j.decision is Decision.PROMOTE:
                break
    return first


def _first_true(hit: NDArray[np.bool_]) -> NDArray[np.int64]:
    any_hit = hit.any(axis=1)
    out: NDArray[np.int64] = np.where(any_hit, hit.argmax(axis=1) + 1, 0)
    return out


_MIDS = np.sqrt(
    np.asarray([BOUNDS[0] / 2**0.125, *BOUNDS[:-1]])
    * np.asarray([*BOUNDS[:-1], BOUNDS[-2] * 2**0.125])
)


def _window_p95(h: NDArray[np.int64]) -> NDArray[np.float64]:
    """Interpolated per-window p95 (NaN for an empty window), shape (runs, looks)."""
    b = np.asarray(BOUNDS)
    out = np.full(h.shape[:2], np.nan)
    cum = np.cumsum(h, axis=2).astype(float)
    for r in range(h.shape[0]):
        for k in range(h.shape[1]):
            if cum[r, k, -1] > 0:
                out[r, k] = interpolated_quantile(b, cum[r, k], 0.95)
    return out


def run_naive(sim: Sim, metric: str) -> NDArray[np.int64]:
    if metric == "errors":
        z = two_proportion_z(
            np.cumsum(sim.x_c, 1),
            np.cumsum(sim.n_c, 1),
            np.cumsum(sim.x_b, 1),
            np.cumsum(sim.n_b, 1),
        )
    else:

        def moments(h: NDArray[np.int64]) -> tuple[NDArray[np.float64], ...]:
            c = np.cumsum(h, axis=1).astype(float)  # (runs, looks, buckets)
            n = c.sum(axis=2)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = (c * _MIDS).sum(axis=2) / n
                var = (c * _MIDS**2).sum(axis=2) / n - mean**2
            return mean, var, n

        mc, vc, nc = moments(sim.h_c)
        mb, vb, nb = moments(sim.h_b)
        z = welch_z(mc, vc, nc, mb, vb, nb)
    return _first_true(z > P95_Z)


def run_kayenta(sim: Sim, metric: str) -> NDArray[np.int64]:
    if metric == "errors":
        with np.errstate(invalid="ignore", divide="ignore"):
            pc, pb = sim.x_c / sim.n_c, sim.x_b / sim.n_b
    else:
        pc, pb = _window_p95(sim.h_c), _window_p95(sim.h_b)
    runs, looks = pc.shape
    first = np.zeros(runs, dtype=np.int64)
    for r in range(runs):
        for k in range(looks):
            ok = np.isfinite(pc[r, : k + 1]) & np.isfinite(pb[r, : k + 1])
            cls = kayenta_classify(pc[r, : k + 1][ok], pb[r, : k + 1][ok])
            if cls is KayentaClass.HIGH:
                first[r] = k + 1
                break
    return first


def run_flagger(sim: Sim, sc: Scenario, metric: str, failures: int = 5) -> NDArray[np.int64]:
    if metric == "errors":
        with np.errstate(invalid="ignore", divide="ignore"):
            value = sim.x_c / sim.n_c
        bad = ~(value <= 2 * sc.base_err)  # NaN (no values) is a failed check
    else:
        healthy_p95 = LAT_MEDIAN_S * math.exp(LAT_SIGMA * P95_Z)
        bad = ~(_window_p95(sim.h_c) <= 1.2 * healthy_p95)
    return _first_true(np.cumsum(bad, axis=1) >= failures)


def _task(args: tuple[int, int, int, int]) -> dict[str, object]:
    row, chunk, runs, seed = args
    sc = SCENARIOS[row]
    rng = np.random.default_rng([seed, row, chunk])
    sim = simulate(sc, runs, rng)
    metric = "latency" if sc.gating == "latency" else "errors"
    return {
        "row": row,
        "engine": run_engine(sim, experiment(sc.gating)),
        "naive": run_naive(sim, metric),
        "kayenta": run_kayenta(sim, metric),
        "flagger": run_flagger(sim, sc, metric),
    }


def _cell(first: NDArray[np.int64]) -> str:
    hit = first[first > 0]
    rate = 100.0 * hit.size / first.size
    if hit.size == 0:
        return f"{rate:5.1f} %          "
    return f"{rate:5.1f} % {hit.mean():4.1f}/{np.percentile(hit, 90):4.0f}"


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}"
    )


def _promotion_task(args: tuple[int, int, int, int]) -> dict[str, object]:
    return promotion.run_task(*args)


def _chunks(rows: int, runs: int, chunk: int, seed: int) -> list[tuple[int, int, int, int]]:
    tasks = []
    for row in range(rows):
        left, k = runs, 0
        while left > 0:
            tasks.append((row, k, min(chunk, left), seed))
            left -= chunk
            k += 1
    return tasks


def _merged(results: list[dict[str, object]], row: int, key: str) -> NDArray[np.int64]:
    return np.concatenate([np.asarray(r[key]) for r in results if r["row"] == row])


def _table(head: tuple[str, ...], width: int = 21) -> None:
    line = f"| {'scenario':{_NAME}} | " + " | ".join(f"{h:{width}}" for h in head) + " |"
    print(line)
    print("|" + "|".join("-" * len(c) for c in line.split("|")[1:-1]) + "|")


_NAME = 47


def print_compare(results: list[dict[str, object]]) -> None:
    print("Compare: % of runs rolled back (A/A rows: false rollbacks; others: detected), "
          "then mean/p90 look of the rollback. Fixed ramp, 12 looks per step.")
    print()
    _table(("Sluice (this engine)", "naive z per look", "Kayenta-style MW", "Flagger-style"))
    for row, sc in enumerate(SCENARIOS):
        cells = [f"{_cell(_merged(results, row, c)):21}"
                 for c in ("engine", "naive", "kayenta", "flagger")]
        print(f"| {sc.name:{_NAME}} | " + " | ".join(cells) + " |")


def print_promotion(results: list[dict[str, object]]) -> None:
    print("Promotion: closed loop (ADVANCE moves the traffic), soak 5 min per step, "
          "earliest promotion at look 25. Cells: % of runs, then mean/p90 look.")
    print()
    _table(("rolled back", "promoted", "holding at look 60"))
    for row, sc in enumerate(promotion.SCENARIOS):
        rb, pr = _merged(results, row, "rollback"), _merged(results, row, "promote")
        held = 100.0 * float(np.mean((rb == 0) & (pr == 0)))
        print(f"| {sc.name:{_NAME}} | {promotion.cell(rb):21} | {promotion.cell(pr):21} | "
              f"{held:5.1f} %{'':14} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.calibration")
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--chunk", type=int, default=125)
    ap.add_argument("--tables", default="compare,promotion",
                    help="comma-separated: compare, promotion")
    args = ap.parse_args(argv)
    tables = {t.strip() for t in args.tables.split(",") if t.strip()}
    t0 = time.perf_counter()
    print(f"Calibration: {args.runs} simulated runs per row, 60 one-minute looks, ramp "
          f"5/10/20/30/50 %, alpha 0.05 (seed {args.seed})")
    print(f"Machine: {machine()}")
    with multiprocessing.Pool(args.workers) as pool:
        if "compare" in tables:
            print()
            print_compare(pool.map(_task, _chunks(len(SCENARIOS), args.runs, args.chunk,
                                                  args.seed)))
        if "promotion" in tables:
            print()
            print_promotion(pool.map(_promotion_task, _chunks(
                len(promotion.SCENARIOS), args.runs, args.chunk, args.seed)))
    print()
    print(f"wall time {time.perf_counter() - t0:.0f} s with {args.workers} worker(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


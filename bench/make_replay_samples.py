"""Write the example replay inputs deterministically from the benchmark's simulator.

    python -m bench.make_replay_samples [OUT_DIR]

Produces ``samples-healthy.jsonl`` (an A/A canary) and
``samples-regression.jsonl`` (errors 2x and every latency +25 %), one line per
version per minute, ramp 5/10/20/30/50 %, 10 req/s, Envoy-style latency in ms.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from bench.calibration import BOUNDS, LOOK_S, Scenario, Sim, simulate


def _lines(sim: Sim) -> list[str]:
    out = []
    keys = [f"{b * 1000:.3f}".rstrip("0").rstrip(".") for b in BOUNDS[:-1]] + ["+Inf"]
    for look in range(sim.n_c.shape[1]):
        w = float(sim.weights[look])
        for version, n, x, h, weight in (
            ("v1", sim.n_b, sim.x_b, sim.h_b, 100.0 - w),
            ("v2", sim.n_c, sim.x_c, sim.h_c, w),
        ):
            cum = np.cumsum(h[0, look])
            # the sum is reconstructed from bucket midpoints (ms), as a scrape would carry
            lows = np.asarray([BOUNDS[0] / 2**0.125, *BOUNDS[:-1]])
            highs = np.asarray([*BOUNDS[:-1], BOUNDS[-2] * 2**0.125])
            total = float(np.sum(h[0, look] * np.sqrt(lows * highs))) * 1000
            obj = {
                "t": (look + 1) * LOOK_S,
                "version": version,
                "weight": weight,
                "requests": int(n[0, look]),
                "errors": int(x[0, look]),
                "latency": {
                    "unit": "ms",
                    "sum": round(total, 1),
                    "buckets": {k: int(c) for k, c in zip(keys, cum, strict=True)},
                },
            }
            out.append(json.dumps(obj, separators=(",", ":")))
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out_dir = Path(args[0] if args else "examples/experiments")
    cases = {
        "samples-healthy.jsonl": (Scenario("healthy"), 11),
        "samples-regression.jsonl": (Scenario("regression", err_ratio=2.0, lat_scale=1.25), 12),
    }
    for name, (sc, seed) in cases.items():
        sim = simulate(sc, 1, np.random.default_rng(seed))
        (out_dir / name).write_text("\n".join(_lines(sim)) + "\n", encoding="utf-8")
        print(f"wrote {out_dir / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

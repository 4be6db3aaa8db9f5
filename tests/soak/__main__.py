"""``python -m tests.soak [--minutes N] [--seed N] [--rate R] [--workdir DIR]`` (``make soak``).

A chaos soak on this machine, loopback only: simulated GPU pods, two Envoys (SotW
and Delta ADS), ``sluice serve`` with a state file, a real Prometheus, an
experiment always running and a bounded client load, while faults are injected at
random times. Prints the figures and every broken invariant; exit status 1 when
one broke. 20 minutes by default; ``--minutes 2`` is what CI runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.soak.soak import Options, run_soak


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0,
                        help="how long faults are injected (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault schedule")
    parser.add_argument("--rate", type=float, default=40.0, help="client requests per second")
    parser.add_argument("--workdir", type=Path,
                        help="keep config, state and logs here (default: a temporary dir)")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 24 * 60:
        parser.error("--minutes must be in (0, 1440]")
    if not 0 < args.rate <= 1000:
        parser.error("--rate must be in (0, 1000]")
    options = Options(args.minutes, args.seed, args.rate, args.workdir)
    try:
        report = asyncio.run(run_soak(options))
    except KeyboardInterrupt:
        print("soak: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    print(report.text())
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())

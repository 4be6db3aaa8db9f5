"""``python -m tests.fuzz [--seconds N] [--target NAME ...] [--engine ...] [--seed N]``
(``make fuzz``): runs every fuzz target for a time budget; prints, per target,
the inputs tried and the distinct crashes found, each with a minimal input.
Exit status 1 when anything crashed.

Engines: ``hypothesis`` (default) runs each target's strategy in batches of
fresh seeds; ``atheris`` (when installed: ``pip install atheris``) drives the
same strategies from libFuzzer with coverage feedback, one process per target.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tests.fuzz.runner import Result, report, run_hypothesis
from tests.fuzz.targets import targets


def main(argv: Sequence[str] | None = None) -> int:
    names = list(targets())
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="time budget per target (default 60)")
    parser.add_argument("--target", action="append", choices=names,
                        help="run only this target (repeatable); default: all")
    parser.add_argument("--engine", choices=["hypothesis", "atheris"], default="hypothesis")
    parser.add_argument("--seed", type=int, default=0, help="first seed (hypothesis engine)")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    chosen = args.target or names
    results: list[Result] = []
    for name in chosen:
        if args.engine == "atheris":
            from tests.fuzz.atheris_engine import run_atheris

            result = run_atheris(name, args.seconds, args.seed)
        else:
            result = run_hypothesis(targets()[name], args.seconds, args.seed)
        print(result.line(), flush=True)
        results.append(result)
    print()
    print(report(results))
    return 1 if any(r.crashes for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

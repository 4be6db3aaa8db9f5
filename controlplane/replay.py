"""``sluice replay``: run an experiment's statistics over recorded windows (offline).

The experiment is read with the same checker as ``sluice serve`` (errors as
``file:line:column: field: message``); references to services are not needed
offline, so an experiment without ``spec.service`` replays too. The samples'
format is ``analysis.replay``'s.
"""

from __future__ import annotations

import argparse
import os
import sys

from analysis.replay import read_samples, replay_file
from analysis.spec import ExperimentSpec
from controlplane.config import load_paths
from controlplane.experiment import EXPERIMENT_KIND, Experiment


def read_experiment(path: str) -> tuple[ExperimentSpec | None, list[str]]:
    """The one Experiment in ``path``, or the messages that say why not."""
    load = load_paths([path])
    problems = [str(e) for e in load.file_errors]
    found: list[Experiment] = []
    for d in load.documents:
        problems.extend(str(e) for e in d.errors)
        if d.kind == EXPERIMENT_KIND and isinstance(d.value, Experiment):
            found.append(d.value)
    if problems:
        return None, problems
    if len(found) != 1:
        return None, [f"{path}: expected one Experiment document, found {len(found)}"]
    return found[0].analysis, []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="sluice replay",
        description="Replay recorded metric windows through the canary judge (offline).",
    )
    ap.add_argument("--experiment", required=True, help="Experiment YAML file")
    ap.add_argument("--compare", action="store_true",
                    help="add a Kayenta-style Mann-Whitney classification per metric")
    ap.add_argument("samples", nargs="+", help="JSONL sample files ('-' for stdin)")
    args = ap.parse_args(argv)
    spec, problems = read_experiment(args.experiment)
    if spec is None:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 2
    failed = False
    for name in args.samples:
        try:
            if name == "-":
                parsed, errors = read_samples("<stdin>", sys.stdin, spec)
            else:
                with open(name, encoding="utf-8") as fh:
                    parsed, errors = read_samples(name, fh, spec)
        except OSError as exc:
            print(f"{name}: {exc.strerror}", file=sys.stderr)
            failed = True
            continue
        if errors:
            for e in errors:
                print(e, file=sys.stderr)
            failed = True
            continue
        try:
            err = replay_file(name, parsed, spec, sys.stdout, args.compare)
        except BrokenPipeError:  # e.g. piped into `head`: stop quietly
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps exit flush quiet
            return 0 if not failed else 2
        if err:
            print(err, file=sys.stderr)
            failed = True
    return 2 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

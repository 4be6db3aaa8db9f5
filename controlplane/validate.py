"""``sluice validate PATH...``: check configuration files and print every error.

Each document is judged on its own (as ``sluice serve`` does: a document with
an error freezes only itself); cross-document rules are checked as if nothing
had served before. Exit 1 when anything has an error; warnings alone exit 0.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

from controlplane.config import LoadResult, ObjectState, load_paths
from controlplane.experiment import EXPERIMENT_KIND, PrometheusSource


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sluice validate",
        description="Check Sluice documents (files, or directories of *.yaml / *.yml). "
        "Prints every error as file:line:column: field.path: message.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="file or directory")
    parser.add_argument("--offline", action="store_true",
                        help="do not check that metrics sources (Prometheus) answer")
    args = parser.parse_args(argv)
    result = load_paths(args.paths)
    assembly = result.standalone
    unreachable = [] if args.offline else _unreachable_sources(result)
    for problem in unreachable:
        print(problem, file=sys.stderr)
    for w in assembly.warnings:
        path = f"{w.path}: " if w.path else ""
        print(f"{w.file}:{w.line}:{w.column}: {path}warning: {w.message}", file=sys.stderr)
    for error in assembly.errors:
        print(error, file=sys.stderr)
    bad = [s for s in assembly.statuses if s.state is not ObjectState.OK]
    for status in bad:
        if status.state is ObjectState.HELD:
            print(f"{status.file}:{status.line}: {status.kind} {status.name}: held: "
                  f"{status.reason}", file=sys.stderr)
    files = _n(len(result.files), "file")
    if assembly.errors or unreachable:
        count = len(assembly.errors) + len(unreachable)
        parts = [f"{count} error{'s' if count != 1 else ''}"]
        invalid = [f"{s.kind} {s.name or '(unnamed)'} ({s.file}:{s.line})" for s in bad
                   if s.state is not ObjectState.HELD]
        if invalid:
            parts.append(f"documents with errors: {', '.join(invalid)}")
        unparsed = sorted({e.file for e in result.file_errors})
        if unparsed:
            parts.append(f"files that did not load: {', '.join(unparsed)}")
        print("; ".join(parts), file=sys.stderr)
        return 1
    services = assembly.state.services
    versions = sum(len(s.versions) for s in services)
    endpoints = sum(len(v.endpoints) for s in services for v in s.versions)
    experiments = len(assembly.of_kind(EXPERIMENT_KIND))
    summary = (f"{_n(len(services), 'service')}, {_n(versions, 'version')}, "
               f"{_n(endpoints, 'endpoint')}")
    if experiments:
        summary += f", {_n(experiments, 'experiment')}"
    if assembly.warnings:
        summary += f" ({_n(len(assembly.warnings), 'warning')})"
    print(f"ok: {summary} in {files}")
    return 0


def _unreachable_sources(result: LoadResult) -> list[str]:
    """Prometheus URLs of experiments that do not answer (2 s each, each URL once)."""
    seen: dict[str, str | None] = {}
    problems = []
    for d in result.documents:
        source = getattr(d.value, "metrics_source", None)
        if not isinstance(source, PrometheusSource):
            continue
        if source.url not in seen:
            seen[source.url] = _probe(source.url)
        if seen[source.url] is not None:
            problems.append(f"{source.at}: cannot reach Prometheus at {source.url}: "
                            f"{seen[source.url]} (check it, or validate with --offline)")
    return problems


def _probe(url: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/-/ready", timeout=2) as r:
            return None if r.status == 200 else f"HTTP {r.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return str(reason)[:120]


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


if __name__ == "__main__":
    raise SystemExit(main())

"""``sluice validate PATH...``: check configuration files and print every error."""

from __future__ import annotations

import argparse
import sys

from controlplane.config import load_paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sluice validate",
        description="Check ModelService files (or directories of *.yaml / *.yml). "
        "Prints every error as file:line:column: field.path: message.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="file or directory")
    args = parser.parse_args(argv)
    result = load_paths(args.paths)
    if result.errors:
        for error in result.errors:
            print(error, file=sys.stderr)
        count = len(result.errors)
        print(f"{count} error{'s' if count != 1 else ''}", file=sys.stderr)
        return 1
    assert result.state is not None
    services = result.state.services
    versions = sum(len(s.versions) for s in services)
    endpoints = sum(len(v.endpoints) for s in services for v in s.versions)
    files = len(result.files)
    print(
        f"ok: {_n(len(services), 'service')}, {_n(versions, 'version')}, "
        f"{_n(endpoints, 'endpoint')} in {_n(files, 'file')}"
    )
    return 0


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


if __name__ == "__main__":
    raise SystemExit(main())

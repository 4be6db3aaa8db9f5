"""The ``sluice`` command (DESIGN §3): serve, validate, bootstrap, replay, schema, status,
promote, abort, pause, resume, demo, report."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable

USAGE = """usage: sluice <command> [options]

commands:
  serve      run the control plane (xDS + admin HTTP), watching config files
  validate   check Sluice YAML; print file:line:column: field.path: message
  bootstrap  print an Envoy bootstrap that connects to Sluice over ADS
  replay     run an experiment's statistics over recorded samples (JSON lines)
  schema     print the JSON Schema of a document kind (ModelService, Experiment)
  status     experiments: phase, step, weights, evidence, decisions
  promote    approve a promotion held by pauseBeforePromotion
  abort      roll an experiment back
  pause      stop an experiment's progress (safety rollbacks still happen)
  resume     let a paused experiment go on
  demo       a whole canary on this machine: pods, Envoy, load, a live view, a report
  report     write an experiment's run as one self-contained HTML file with plots
"""


def serve(argv: list[str]) -> int:
    from controlplane.app import App, ServeOptions, split_address

    parser = argparse.ArgumentParser(prog="sluice serve")
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        metavar="PATH",
        help="YAML file or directory of ModelService and Experiment documents (repeatable); "
        "watched",
    )
    parser.add_argument("--xds-address", default="127.0.0.1:18000", metavar="HOST:PORT")
    parser.add_argument("--admin-address", default="127.0.0.1:19000", metavar="HOST:PORT")
    parser.add_argument("--state", metavar="PATH", help="durable state (SQLite) file")
    parser.add_argument("--api-token-file", metavar="FILE",
                        help="bearer token that admin API mutations need (none: disabled)")
    parser.add_argument("--notify-url", action="append", default=[], metavar="URL",
                        help="webhook for every experiment's phase changes, rollbacks and "
                        "stalls, and for config errors and NACKs (repeatable)")
    parser.add_argument("--notify-secret-file", metavar="FILE",
                        help="sign --notify-url bodies with this secret (HMAC-SHA256)")
    parser.add_argument("--notify-format", choices=["json", "slack"], default="json")
    parser.add_argument("--poll-interval", type=float, default=0.1, metavar="SECONDS",
                        help="how often config files are checked for changes (default 0.1)")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    args = parser.parse_args(argv)
    if not 0.01 <= args.poll_interval <= 60:
        parser.error("--poll-interval: expected seconds between 0.01 and 60")
    try:
        split_address(args.xds_address, "--xds-address")
        split_address(args.admin_address, "--admin-address")
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from controlplane.api_experiments import read_token

    try:
        read_token(args.api_token_file)
    except ValueError as exc:
        parser.error(str(exc))
    from controlplane.experiment import Webhook

    for url in args.notify_url:
        if not url.startswith(("http://", "https://")):
            parser.error(f"--notify-url: expected an http(s) URL, got {url[:60]!r}")
    notify = tuple(Webhook(u, args.notify_secret_file, args.notify_format)
                   for u in args.notify_url)
    options = ServeOptions(
        tuple(args.config), args.xds_address, args.admin_address, args.state,
        poll_interval_s=args.poll_interval, api_token_file=args.api_token_file,
        notify=notify,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await App(options).run(stop)

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"sluice serve: {exc}", file=sys.stderr)
        return 1
    return 0


def schema(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sluice schema")
    parser.add_argument("kind", choices=["ModelService", "Experiment"])
    args = parser.parse_args(argv)
    from controlplane.config import json_schema

    print(json.dumps(json_schema(args.kind), indent=2, sort_keys=True))
    return 0


def _validate(argv: list[str]) -> int:
    from controlplane.validate import main as run

    return run(argv)


def _bootstrap(argv: list[str]) -> int:
    from xds.bootstrap import main as run

    return run(argv)


def _replay(argv: list[str]) -> int:
    from controlplane.replay import main as run

    return run(argv)


def _status(argv: list[str]) -> int:
    from controlplane.cli_experiments import status

    return status(argv)


def _demo(argv: list[str]) -> int:
    from controlplane.demo import main as run

    return run(argv)


def _report(argv: list[str]) -> int:
    from controlplane.report import main as run

    return run(argv)


def _action(verb: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        from controlplane.cli_experiments import action

        return action(verb, argv)

    return run


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "status": _status,
    **{verb: _action(verb) for verb in ("promote", "abort", "pause", "resume")},
    "serve": serve,
    "validate": _validate,
    "bootstrap": _bootstrap,
    "replay": _replay,
    "schema": schema,
    "demo": _demo,
    "report": _report,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if args else 2
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"sluice: unknown command {args[0]!r}\n\n{USAGE}", file=sys.stderr, end="")
        return 2
    return command(args[1:])


if __name__ == "__main__":
    sys.exit(main())

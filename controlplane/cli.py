"""The ``sluice`` command (DESIGN §3): serve, validate, bootstrap, replay, schema, status,
promote, abort, pause, resume, demo, report."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
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
  audit      who changed what through the admin API, and when
  demo       a whole canary on this machine: pods, Envoy, load, a live view, a report
  report     write an experiment's run as one self-contained HTML file with plots
  crds       print the CustomResourceDefinitions of ModelService and Experiment
"""


def serve(argv: list[str]) -> int:
    from controlplane import gcpolicy
    from controlplane.app import App, ServeOptions, split_address
    from controlplane.cores import available_cores

    parser = argparse.ArgumentParser(prog="sluice serve")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="PATH",
        help="YAML file or directory of ModelService and Experiment documents (repeatable); "
        "watched (required unless --kubernetes)",
    )
    parser.add_argument("--kubernetes", action="store_true",
                        help="watch ModelService and Experiment resources, discover endpoints, "
                        "elect a leader (in-cluster credentials, else the kubeconfig)")
    parser.add_argument("--kubeconfig", metavar="PATH", help="with --kubernetes: this kubeconfig")
    parser.add_argument("--advertise-admin", metavar="URL",
                        help="with --kubernetes: how other replicas reach this admin API, for "
                        "forwarding experiment requests to the leader (default: "
                        "http://$POD_IP:ADMIN_PORT)")
    parser.add_argument("--namespace", metavar="NS",
                        help="with --kubernetes: Sluice's namespace, for its Lease and journal "
                        "(default: the pod's own)")
    parser.add_argument("--watch-namespace", metavar="NS",
                        help="with --kubernetes: watch resources in this namespace only "
                        "(default: all)")
    parser.add_argument("--xds-address", default="127.0.0.1:18000", metavar="HOST:PORT")
    parser.add_argument("--admin-address", default="127.0.0.1:19000", metavar="HOST:PORT")
    parser.add_argument("--workers", type=int, default=available_cores(), metavar="N",
                        help="processes that serve xDS on the one port (default: the cores "
                        "this process may use, CPU quota included); this one also runs "
                        "everything else")
    parser.add_argument("--state", metavar="PATH", help="durable state (SQLite) file")
    parser.add_argument("--api-token-file", metavar="FILE",
                        help="bearer token(s) that admin API mutations need (none: disabled); "
                        "one token, or 'NAME TOKEN' per line")
    parser.add_argument("--api-read-token-file", metavar="FILE",
                        help="require a token for the admin API's reads too")
    parser.add_argument("--admin-tls-cert", metavar="FILE", help="HTTPS on the admin port")
    parser.add_argument("--admin-tls-key", metavar="FILE")
    parser.add_argument("--notify-url", action="append", default=[], metavar="URL",
                        help="webhook for every experiment's phase changes, rollbacks and "
                        "stalls, and for config errors and NACKs (repeatable)")
    parser.add_argument("--notify-secret-file", metavar="FILE",
                        help="sign --notify-url bodies with this secret (HMAC-SHA256)")
    parser.add_argument("--notify-format", choices=["json", "slack"], default="json")
    parser.add_argument("--tls-cert", metavar="FILE", help="xDS server certificate (PEM)")
    parser.add_argument("--tls-key", metavar="FILE", help="its private key (PEM)")
    parser.add_argument("--tls-client-ca", metavar="FILE",
                        help="CA whose client certificates proxies must present; a proxy may "
                        "only ask as the node id its certificate names")
    parser.add_argument("--max-streams-per-peer", type=int, default=20_000, metavar="N")
    parser.add_argument("--max-message-bytes", type=int, default=4 * 1024 * 1024, metavar="N")
    parser.add_argument("--max-requests-per-second", type=float, default=50.0, metavar="R",
                        help="sustained xDS requests per stream (bursts of 10x allowed)")
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
    from controlplane.api_auth import read_tokens

    try:
        read_tokens(args.api_token_file)
        read_tokens(args.api_read_token_file, "--api-read-token-file")
    except ValueError as exc:
        parser.error(str(exc))
    if (args.admin_tls_cert is None) != (args.admin_tls_key is None):
        parser.error("--admin-tls-cert and --admin-tls-key go together")
    from controlplane.experiment import Webhook

    for url in args.notify_url:
        if not url.startswith(("http://", "https://")):
            parser.error(f"--notify-url: expected an http(s) URL, got {url[:60]!r}")
    notify = tuple(Webhook(u, args.notify_secret_file, args.notify_format)
                   for u in args.notify_url)
    from xds.limits import StreamLimits
    from xds.tls import TlsFiles

    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    if tls is not None:
        for path in (tls.cert, tls.key, tls.client_ca):
            if path is not None and not os.path.isfile(path):
                parser.error(f"TLS file {path}: not found")
    if min(args.max_streams_per_peer, args.max_message_bytes) < 1 or (
            args.max_requests_per_second <= 0):
        parser.error("limits must be positive")
    limits = StreamLimits(args.max_streams_per_peer, args.max_message_bytes,
                          args.max_requests_per_second, args.max_requests_per_second * 10)
    if not 1 <= args.workers <= 64:
        parser.error(f"--workers: expected 1 to 64, got {args.workers}")
    if not args.config and not args.kubernetes:
        parser.error("--config is required (or --kubernetes)")
    if (args.kubeconfig or args.namespace or args.watch_namespace
            or args.advertise_admin) and not args.kubernetes:
        parser.error("--kubeconfig, --namespace, --watch-namespace and --advertise-admin go "
                     "with --kubernetes")
    from controlplane.kube.options import KubeOptions

    kube = KubeOptions(kubeconfig=args.kubeconfig, namespace=args.namespace,
                       watch_namespace=args.watch_namespace,
                       advertise_admin=args.advertise_admin) if args.kubernetes else None
    options = ServeOptions(
        tuple(args.config), args.xds_address, args.admin_address, args.state,
        kubernetes=kube,
        poll_interval_s=args.poll_interval, api_token_file=args.api_token_file,
        notify=notify, tls=tls, limits=limits, api_read_token_file=args.api_read_token_file,
        workers=args.workers, full_collections=gcpolicy.FullCollections(),
        admin_tls=(args.admin_tls_cert, args.admin_tls_key) if args.admin_tls_cert else None,
    )

    gcpolicy.configure()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await App(options).run(stop)

    from controlplane.kube.client import KubeError

    try:
        asyncio.run(main())
    except (OSError, KubeError) as exc:
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


def _audit(argv: list[str]) -> int:
    from controlplane.cli_experiments import audit

    return audit(argv)


def _demo(argv: list[str]) -> int:
    from controlplane.demo import main as run

    return run(argv)


def _crds(argv: list[str]) -> int:
    argparse.ArgumentParser(
        prog="sluice crds",
        description="Print the ModelService and Experiment CustomResourceDefinitions "
        "(kubectl apply -f -)").parse_args(argv)
    from controlplane.kube.crds import render

    print(render(), end="")
    return 0


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
    "audit": _audit,
    "report": _report,
    "crds": _crds,
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

"""``python -m controlplane.podsim --pod HOST:PORT=SERVICE/VERSION[,option=value...] ...``

Runs simulated GPU model pods in one process until SIGTERM or SIGINT; prints one line
per pod once it is listening. See ``controlplane/podsim/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace

from controlplane.podsim.admin import start_control
from controlplane.podsim.server import start_pods
from controlplane.podsim.spec import POD_OPTIONS, PodSpec, parse_pod

__all__ = ["main"]


def _address(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


async def _serve(specs: Sequence[PodSpec], control: tuple[str, int] | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with start_pods(specs) as pods:
        runner = None
        try:
            if control is not None:
                runner, port = await start_control(pods, *control)
                print(f"podsim control on http://{control[0]}:{port}", flush=True)
            for p in pods:
                s = p.spec
                print(
                    f"podsim {s.service}/{s.version} on http://{s.pod} (gpu {p.gpu.name})",
                    flush=True,
                )
            await stop.wait()
        finally:
            if runner is not None:
                await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m controlplane.podsim",
        description="Simulated GPU model pods (OpenAI API, vLLM metrics, faults).",
    )
    parser.add_argument(
        "--pod",
        action="append",
        required=True,
        metavar="HOST:PORT=SERVICE/VERSION[,option=value...]",
        help=f"a pod to serve (repeatable); options: {POD_OPTIONS}",
    )
    parser.add_argument(
        "--control",
        type=_address,
        metavar="HOST:PORT",
        help="control listener for faults, crash and restart of any pod",
    )
    parser.add_argument("--seed", type=int, help="seed for injected errors (pod i: SEED+i)")
    args = parser.parse_args(argv)
    try:
        specs = [parse_pod(text) for text in args.pod]
    except ValueError as exc:
        parser.error(str(exc))
    if args.seed is not None:
        specs = [
            s if s.seed is not None else replace(s, seed=args.seed + i) for i, s in enumerate(specs)
        ]
    try:
        asyncio.run(_serve(specs, args.control))
    except OSError as exc:
        print(f"podsim: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``sluice status [NAME]`` and ``sluice promote|abort|pause|resume NAME``: the admin API
from a terminal (a human table by default, ``-o json`` for scripts)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

DEFAULT_ADMIN = os.environ.get("SLUICE_ADMIN_ADDRESS", "127.0.0.1:19000")


def _base(address: str) -> str:
    return address if address.startswith(("http://", "https://")) else f"http://{address}"


def _request(method: str, url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, {"error": exc.reason}


def _weights(w: dict[str, float]) -> str:
    return " ".join(f"{k}={v:g}%" for k, v in w.items()) or "-"


def _row(e: dict[str, Any]) -> list[str]:
    steps = e.get("steps") or []
    step = f"{e['step'] + 1}/{len(steps)}" if steps else "-"
    return [e["name"], e.get("service") or "-", e["strategy"], e["phase"], step,
            _weights(e.get("weights") or {}), (e.get("reason") or "")[:70]]


def _table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [head, *rows]]
    return "\n".join(lines)


def _detail(e: dict[str, Any]) -> str:
    out = [_table([_row(e)], ["NAME", "SERVICE", "STRATEGY", "PHASE", "STEP", "WEIGHTS",
                              "REASON"]), ""]
    if e.get("waitingFor"):
        out.append(f"waiting for: {e['waitingFor']}")
    judgment = e.get("judgment") or {}
    metrics = judgment.get("metrics") or []
    if metrics:
        rows = []
        for m in metrics:
            lo, hi = m.get("interval") or [None, None]
            n = m.get("n") or {}
            rows.append([m["name"], m["verdict"], _num(m.get("estimate")),
                         f"{_num(lo)}-{_num(hi)}", _num(m.get("pvalue")),
                         f"{_num(n.get('candidate'))}/{_num(n.get('baseline'))}",
                         (m.get("reason") or "")[:60]])
        out.append(_table(rows, ["METRIC", "VERDICT", "ESTIMATE", "INTERVAL", "P", "N C/B",
                                 "REASON"]))
        out.append("")
    eta = e.get("eta") or {}
    if eta:
        out.append(f"eta: {eta.get('summary', '')}")
        for row in eta.get("metrics", []):
            line = f"  {row['metric']}: {row.get('evidence', '')}"
            if row.get("warning"):
                line += f" -- {row['warning']}"
            out.append(line)
        out.append("")
    if e.get("report"):
        out.append("report: " + json.dumps(e["report"], sort_keys=True))
    decisions = e.get("decisions") or []
    if decisions:
        out.append("decisions:")
        for d in decisions[-15:]:
            out.append(f"  {d['from']:>12} -> {d['to']:<12} step {d['step'] + 1}: "
                       f"{d['reason'][:90]}")
    return "\n".join(out).rstrip()


def _num(x: object) -> str:
    if isinstance(x, int | float):
        return f"{x:.3g}"
    return "-"


def _token(path: str | None) -> str | None:
    token = os.environ.get("SLUICE_API_TOKEN")
    if path:
        with open(path, encoding="utf-8") as fh:
            text = fh.read().strip()
        # a file of NAME TOKEN lines: use the first token
        token = text.splitlines()[0].split()[-1] if text else None
    return token


def audit(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="sluice audit",
                                description="Who tried which mutation, when, and the result.")
    p.add_argument("--admin-address", default=DEFAULT_ADMIN, metavar="HOST:PORT")
    p.add_argument("--token-file", default=os.environ.get("SLUICE_API_TOKEN_FILE"),
                   help="a read or write token, when the server requires one for reads")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    args = p.parse_args(argv)
    try:
        code, body = _request("GET", f"{_base(args.admin_address)}/api/v1/audit?limit="
                              f"{args.limit}", _token(args.token_file))
    except (urllib.error.URLError, OSError) as exc:
        print(f"sluice audit: cannot reach {args.admin_address}: {exc}", file=sys.stderr)
        return 1
    if code != 200:
        print(f"sluice audit: {(body or {}).get('error', code)}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(body, indent=2, sort_keys=True))
        return 0
    import time as _time

    rows = [[_time.strftime("%Y-%m-%d %H:%M:%S", _time.gmtime(e["at"])), e.get("who") or "-",
             e.get("peer") or "-", f"{e['action']} {e['experiment']}", str(e["status"]),
             (e.get("message") or "")[:60]] for e in body["entries"]]
    print(_table(rows, ["WHEN (UTC)", "WHO", "FROM", "WHAT", "STATUS", "RESULT"])
          if rows else "no mutations recorded")
    return 0


def status(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="sluice status", description="Experiments and evidence.")
    p.add_argument("name", nargs="?", help="one experiment (with its metrics and decisions)")
    p.add_argument("--admin-address", default=DEFAULT_ADMIN, metavar="HOST:PORT")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    args = p.parse_args(argv)
    url = f"{_base(args.admin_address)}/api/v1/experiments"
    if args.name:
        url += f"/{args.name}"
    try:
        code, body = _request("GET", url)
    except (urllib.error.URLError, OSError) as exc:
        print(f"sluice status: cannot reach {args.admin_address}: {exc}", file=sys.stderr)
        return 1
    if code != 200:
        print(f"sluice status: {body.get('error', code) if body else code}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(body, indent=2, sort_keys=True))
    elif args.name:
        print(_detail(body))
    else:
        rows = [_row(e) for e in body["experiments"]]
        print(_table(rows, ["NAME", "SERVICE", "STRATEGY", "PHASE", "STEP", "WEIGHTS",
                            "REASON"]) if rows else "no experiments")
    return 0


def action(verb: str, argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog=f"sluice {verb}", description=f"{verb} an experiment.")
    p.add_argument("name")
    p.add_argument("--admin-address", default=DEFAULT_ADMIN, metavar="HOST:PORT")
    p.add_argument("--token-file", default=os.environ.get("SLUICE_API_TOKEN_FILE"),
                   help="file with the bearer token (or SLUICE_API_TOKEN)")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    args = p.parse_args(argv)
    token = os.environ.get("SLUICE_API_TOKEN")
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        except OSError as exc:
            print(f"sluice {verb}: {args.token_file}: {exc.strerror}", file=sys.stderr)
            return 1
    url = f"{_base(args.admin_address)}/api/v1/experiments/{args.name}/{verb}"
    try:
        code, body = _request("POST", url, token)
    except (urllib.error.URLError, OSError) as exc:
        print(f"sluice {verb}: cannot reach {args.admin_address}: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(body, indent=2, sort_keys=True))
    else:
        message = (body or {}).get("message") or (body or {}).get("error") or str(code)
        print(f"{args.name}: {message}", file=sys.stderr if code != 200 else sys.stdout)
    return 0 if code == 200 else 1

"""The routing benchmark's load generator: its own process, so it never shares an event
loop with the simulated pods.

``python -m bench.routing.loadgen``: one job per line of JSON on stdin, one result
line of JSON on stdout. A job::

    {"url": URL, "online": [[t, prompt, output, key, prefix, prefix_tokens], ...],
     "closed": {"concurrency": N, "seconds": S, "requests": [...]},     # optional
     "batch": {"url": URL, "concurrency": N, "seconds": S, "start": T,  # optional
               "requests": [...]},
     "timeout": SECONDS}

``online`` requests are sent open loop at their times; ``closed`` ones by N
clients one after another for S seconds; ``batch`` ones likewise with
``x-priority: batch``, from T seconds on (default 0), waiting ``Retry-After``
when refused. Every request streams
(``"stream": true``): time to first token is when the response headers arrive
(a pod sends them with its first token). A result is ``{"online": [[t_sent,
status, ttft, e2e, pod, output_tokens, index], ...], "closed": [...], "batch": [...]}``
(closed and batch rows have no index); status 0 is a
transport error or a timeout.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

Row = list[Any]


def body(req: Row) -> dict[str, Any]:
    _, prompt, output, _key, prefix, prefix_tokens = req
    out: dict[str, Any] = {"prompt": "x", "max_tokens": output, "stream": True,
                           "sluice_prompt_tokens": prompt}
    if prefix:
        out["sluice_prefix"] = prefix
        out["sluice_prefix_tokens"] = max(1, prefix_tokens)
    return out


async def one(http: aiohttp.ClientSession, url: str, req: Row, start: float,
              extra: dict[str, str] | None = None) -> tuple[Row, float]:
    headers = dict(extra or {})
    if req[3]:
        headers["x-session-id"] = req[3]
    sent = time.monotonic()
    retry = 0.0
    try:
        async with http.post(url, json=body(req), headers=headers) as r:
            ttft = time.monotonic() - sent
            await r.read()
            status = r.status
            pod = r.headers.get("x-sluice-pod")
            if status == 503:
                retry = float(r.headers.get("retry-after", "0") or 0)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return [sent - start, 0, None, None, None, req[2]], 0.0
    return [sent - start, status, ttft, time.monotonic() - sent, pod, req[2]], retry


async def run(job: dict[str, Any]) -> dict[str, list[Row]]:
    timeout = aiohttp.ClientTimeout(total=float(job.get("timeout", 120)))
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    out: dict[str, list[Row]] = {"online": [], "closed": [], "batch": []}
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        start = time.monotonic()
        tasks: list[asyncio.Task[None]] = []

        async def timed(i: int, req: Row) -> None:
            await asyncio.sleep(max(0.0, start + req[0] - time.monotonic()))
            row, _ = await one(http, job["url"], req, start)
            out["online"].append([*row, i])

        async def client(kind: str, spec: dict[str, Any], k: int) -> None:
            reqs = spec["requests"]
            i = k
            extra = {"x-priority": "batch"} if kind == "batch" else None
            url = spec.get("url", job["url"])
            begin = float(spec.get("start", 0.0))
            await asyncio.sleep(max(0.0, start + begin - time.monotonic()))
            while time.monotonic() - start < begin + spec["seconds"]:
                row, retry = await one(http, url, reqs[i % len(reqs)], start, extra)
                out[kind].append(row)
                i += spec["concurrency"]
                if retry:
                    await asyncio.sleep(min(retry, 1.0))

        for i, req in enumerate(job.get("online", [])):
            tasks.append(asyncio.ensure_future(timed(i, req)))
        for kind in ("closed", "batch"):
            spec = job.get(kind)
            for k in range(spec["concurrency"] if spec else 0):
                assert spec is not None
                tasks.append(asyncio.ensure_future(client(kind, spec, k)))
        await asyncio.gather(*tasks)
    return out


def main() -> int:
    for line in sys.stdin:
        if not line.strip():
            continue
        result = asyncio.run(run(json.loads(line)))
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

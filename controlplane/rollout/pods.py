"""I/O with Envoy admin endpoints and model pods during a rollout.

Small and separately testable: how many requests are in flight on some
hosts (Envoy's ``/clusters`` host stats, summed over proxies, or the pod's
own ``vllm:num_requests_running``), whether a pod answers healthy as a given
version, and running a rolling update's hook.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Sequence

import aiohttp

from controlplane.experiment import CommandHook, HttpHook

log = logging.getLogger("sluice.rollout")

_TIMEOUT = aiohttp.ClientTimeout(total=3.0)


async def _get_json(session: aiohttp.ClientSession, url: str) -> object:
    async with session.get(url, timeout=_TIMEOUT) as r:
        r.raise_for_status()
        return await r.json(content_type=None)


async def envoy_active_requests(admin_urls: Sequence[str], cluster: str,
                                hosts: Iterable[str] | None = None) -> int | None:
    """Requests in flight on ``cluster`` (only ``hosts`` "address:port" if given), summed
    over every Envoy; None when no Envoy answered."""
    wanted = set(hosts) if hosts is not None else None
    total, answered = 0, 0
    async with aiohttp.ClientSession() as session:
        for base in admin_urls:
            try:
                body = await _get_json(session, f"{base.rstrip('/')}/clusters?format=json")
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.debug("%s: /clusters failed: %s", base, exc)
                continue
            answered += 1
            total += _active_in(body, cluster, wanted)
    return total if answered else None


def _active_in(body: object, cluster: str, wanted: set[str] | None) -> int:
    if not isinstance(body, dict):
        return 0
    total = 0
    for status in body.get("cluster_statuses", []):
        if not isinstance(status, dict) or status.get("name") != cluster:
            continue
        for host in status.get("host_statuses", []):
            sock = host.get("address", {}).get("socket_address", {})
            key = f"{sock.get('address')}:{sock.get('port_value')}"
            if wanted is not None and key not in wanted:
                continue
            for stat in host.get("stats", []):
                if stat.get("name") == "rq_active":
                    total += int(stat.get("value", 0) or 0)
    return total


async def pod_running_requests(pod: str) -> int | None:
    """The pod's own ``vllm:num_requests_running`` (None when it does not say)."""
    try:
        async with aiohttp.ClientSession() as session, session.get(
                f"http://{pod}/metrics", timeout=_TIMEOUT) as r:
            text = await r.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    found = None
    for line in text.splitlines():
        if line.startswith("vllm:num_requests_running"):
            try:
                found = (found or 0) + int(float(line.rsplit(" ", 1)[1]))
            except ValueError:
                return None
    return found


async def pod_version(pod: str, path: str, header: str) -> str | None:
    """The version a pod reports on a healthy answer to ``path`` (None: not healthy)."""
    try:
        async with aiohttp.ClientSession() as session, session.get(
                f"http://{pod}{path}", timeout=_TIMEOUT) as r:
            if r.status != 200:
                return None
            return r.headers.get(header, "")
    except (aiohttp.ClientError, TimeoutError):
        return None


def _fill(text: str, pod: str, version: str) -> str:
    address, _, port = pod.rpartition(":")
    return (text.replace("{{pod}}", pod).replace("{{address}}", address)
            .replace("{{port}}", port).replace("{{version}}", version))


async def run_hook(hook: CommandHook | HttpHook, pod: str, version: str) -> str | None:
    """Runs the update hook for one pod; None on success, else what went wrong."""
    timeout = hook.timeout_ms / 1000
    if isinstance(hook, CommandHook):
        address, _, port = pod.rpartition(":")
        env = {**os.environ, "SLUICE_POD": pod, "SLUICE_ADDRESS": address, "SLUICE_PORT": port,
               "SLUICE_VERSION": version}
        try:
            proc = await asyncio.create_subprocess_exec(
                *[_fill(a, pod, version) for a in hook.argv], env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            return f"update hook {hook.argv[0]!r} could not start: {exc.strerror or exc}"
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return f"update hook timed out after {timeout:g}s"
        if proc.returncode != 0:
            tail = out.decode(errors="replace").strip()[-200:]
            return f"update hook exited {proc.returncode}: {tail}"
        return None
    url = _fill(hook.url, pod, version)
    body = _fill(hook.body, pod, version) if hook.body is not None else None
    try:
        async with aiohttp.ClientSession() as session, session.request(
                hook.method, url, data=body, timeout=aiohttp.ClientTimeout(total=timeout),
                headers={"content-type": "application/json"} if body else None) as r:
            if not 200 <= r.status < 300:
                return f"update hook {hook.method} {url} answered {r.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"update hook {hook.method} {url} failed: {exc or type(exc).__name__}"
    return None

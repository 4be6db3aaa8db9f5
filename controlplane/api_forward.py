"""Experiment requests reach the replica that runs the experiments (Kubernetes mode).

Every replica serves the admin API behind one Service, but only the leader runs
experiments. A follower forwards ``/api/v1/experiments...`` and ``/api/v1/audit``
to the leader's admin URL, read from the Lease, with the caller's method, path,
query, body and ``Authorization``; the answer comes back as the leader gave it.
A forwarded request is never forwarded again; with no leader known the answer is
503 with ``Retry-After``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import aiohttp
from aiohttp import web

from controlplane.api_auth import Handler

log = logging.getLogger("sluice.api")

FORWARDED = "X-Sluice-Forwarded-By"
PREFIXES = ("/api/v1/experiments", "/api/v1/audit")
TIMEOUT = aiohttp.ClientTimeout(total=30, connect=3)
Leader = Callable[[], tuple[bool, str | None]]  # (this replica leads, the leader's URL)


def unavailable(why: str) -> web.Response:
    return web.json_response({"error": why}, status=503, headers={"Retry-After": "2"})


class Forwarder:
    def __init__(self, leader: Leader, me: str) -> None:
        self.leader = leader
        self.me = me
        self._session: aiohttp.ClientSession | None = None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(PREFIXES):
            return await handler(request)
        leading, url = self.leader()
        if leading:
            return await handler(request)
        if FORWARDED in request.headers:
            return unavailable(f"forwarded by {request.headers[FORWARDED][:80]}, but this "
                               "replica does not lead either (a change of leader); retry")
        if not url:
            return unavailable("this replica does not run the experiments and no leader is "
                               "known yet; retry")
        return await self._forward(request, url)

    async def _forward(self, request: web.Request, url: str) -> web.StreamResponse:
        if self._session is None:
            # The leader's certificate names the Service, not its pod IP: encrypted,
            # not verified (the NetworkPolicy keeps the admin port inside the cluster).
            self._session = aiohttp.ClientSession(
                timeout=TIMEOUT, connector=aiohttp.TCPConnector(ssl=False))
        headers = {FORWARDED: self.me}
        for name in ("Authorization", "Content-Type", "Accept"):
            if name in request.headers:
                headers[name] = request.headers[name]
        try:
            async with self._session.request(
                    request.method, url + request.path_qs, headers=headers,
                    data=await request.read()) as answer:
                body = await answer.read()
                kept = {k: v for k, v in answer.headers.items()
                        if k.lower() in ("content-type", "retry-after", "www-authenticate")}
                return web.Response(body=body, status=answer.status, headers=kept)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("cannot forward %s %s to the leader at %s: %s", request.method,
                        request.path, url, exc)
            return unavailable(f"the leader at {url} did not answer ({type(exc).__name__}); "
                               "retry")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

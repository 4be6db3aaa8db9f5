"""The web status page at ``/`` of the admin server: static HTML, CSS and a small script.

The script polls the read-only JSON APIs (``/api/v1/services``, ``/proxies``,
``/experiments``) every few seconds and draws services, declared and effective
weights, connected proxies and their sync status, and experiments with their
evidence and decisions. It never sends a token: the page only reads. Everything
is served from this package (no CDN), so it works without a network.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from controlplane.http_expect import expect

__all__ = ["ASSETS", "STATIC", "register"]

STATIC = Path(__file__).with_name("static")
ASSETS = {"status.css": "text/css", "status.js": "text/javascript"}
NO_CACHE = {"Cache-Control": "no-cache"}


async def index(_: web.Request) -> web.Response:
    body = (STATIC / "status.html").read_text(encoding="utf-8")
    return web.Response(text=body, content_type="text/html", headers=NO_CACHE)


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    body = (STATIC / name).read_text(encoding="utf-8")
    return web.Response(text=body, content_type=ASSETS[name], headers=NO_CACHE)


def register(app: web.Application) -> None:
    """``GET /`` and ``GET /ui/{name}`` (the page's CSS and script)."""
    app.router.add_get("/", index, expect_handler=expect)
    app.router.add_get("/ui/{name}", asset, expect_handler=expect)

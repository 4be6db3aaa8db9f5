"""Admin HTTP for experiments: read their state and evidence, and act on them.

``GET /api/v1/experiments[/NAME]`` are open like the other reads.
``POST /api/v1/experiments/NAME/{promote,abort,pause,resume}`` change traffic,
so they need ``Authorization: Bearer TOKEN`` with the token from
``--api-token-file``: 401 without a valid token, 403 when the server has no
token file at all (mutations are then disabled, not open).
``GET /api/v1/experiments/NAME/samples.jsonl`` exports the run's windows in
the form ``sluice replay`` reads; ``GET /api/v1/experiments/NAME/looks`` the
run's looks (``?run=`` another run), each with its per-metric evidence.
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from controlplane.rollout.manager import RolloutManager

ACTIONS = ("promote", "abort", "pause", "resume")


def read_token(path: str | None) -> str | None:
    """The bearer token in ``path`` (surrounding whitespace ignored); errors name the file."""
    if path is None:
        return None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"--api-token-file {path}: {exc.strerror or exc}") from exc
    if len(token) < 16:
        raise ValueError(f"--api-token-file {path}: the token must be at least 16 characters")
    return token


class ExperimentsApi:
    def __init__(self, manager: RolloutManager, token: str | None) -> None:
        self.manager = manager
        self.token = token

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/experiments", self.list)
        app.router.add_get("/api/v1/experiments/{name}", self.get)
        app.router.add_get("/api/v1/experiments/{name}/samples.jsonl", self.samples)
        app.router.add_get("/api/v1/experiments/{name}/looks", self.looks)
        for action in ACTIONS:
            app.router.add_post(f"/api/v1/experiments/{{name}}/{action}", self._action(action))

    async def list(self, _: web.Request) -> web.Response:
        return web.json_response({"experiments": self.manager.views()})

    async def get(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        view = self.manager.view(name)
        if view is None:
            return _error(404, f"no experiment named {name!r}")
        view["decisions"] = self.manager.decisions(name, str(view["run"]))
        return web.json_response(view)

    async def samples(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        view = self.manager.view(name)
        if view is None:
            return _error(404, f"no experiment named {name!r}")
        run = request.query.get("run", str(view["run"]))
        lines = [json.dumps(w, allow_nan=False) for look in self.manager.looks(name, run)
                 if look.get("counted") for w in look.get("windows", [])]
        return web.Response(text="\n".join(lines) + ("\n" if lines else ""),
                            content_type="application/x-ndjson")

    async def looks(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        view = self.manager.view(name)
        if view is None:
            return _error(404, f"no experiment named {name!r}")
        run = request.query.get("run", str(view["run"]))
        return web.json_response({"name": name, "run": run, "looks": [
            look_json(look) for look in self.manager.looks(name, run)]})

    def _action(self, action: str):  # type: ignore[no-untyped-def]
        async def handle(request: web.Request) -> web.Response:
            denied = self._denied(request)
            if denied is not None:
                return denied
            name = request.match_info["name"]
            who = request.headers.get("x-sluice-user", "api")[:64]
            status, message = await self.manager.command(name, action, who)
            body = {"message": message, "experiment": self.manager.view(name)}
            return web.json_response(body, status=status)

        return handle

    def _denied(self, request: web.Request) -> web.Response | None:
        if self.token is None:
            return _error(403, "mutations are disabled: start sluice serve with "
                               "--api-token-file to allow them")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 self.token.encode()):
            return web.json_response({"error": "missing or invalid bearer token"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="sluice"'})
        return None


LOOK_METRIC_KEYS = ("name", "kind", "gating", "verdict", "n", "estimate", "interval", "evalue",
                    "pvalue", "alpha", "harmMargin", "nonInferiorityMargin", "reason", "details")


def look_json(look: dict[str, Any]) -> dict[str, Any]:
    """One journaled look without its histograms: time, step, traffic and evidence."""
    judgment = look.get("judgment") or None
    return {
        "t": look.get("t"), "step": look.get("step"), "decision": look.get("decision"),
        "reason": look.get("reason"), "counted": look.get("counted"),
        "excluded": look.get("excluded"),
        "windows": [{k: w.get(k) for k in ("version", "requests", "errors", "weight")}
                    for w in look.get("windows") or []],
        "judgment": None if judgment is None else {
            "weight": judgment.get("weight"), "decision": judgment.get("decision"),
            "metrics": [{k: m.get(k) for k in LOOK_METRIC_KEYS}
                        for m in judgment.get("metrics") or []]},
    }


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)

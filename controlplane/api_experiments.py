"""Admin HTTP for experiments: read their state and evidence, and act on them.

``GET /api/v1/experiments[/NAME]`` are open like the other reads.
``POST /api/v1/experiments/NAME/{promote,abort,pause,resume}`` change traffic,
so they need a write token (``controlplane.api_auth``); every attempt, allowed
or refused, goes to the audit log (``GET /api/v1/audit``, ``sluice audit``).
``GET /api/v1/experiments/NAME/samples.jsonl`` exports the run's windows in
the form ``sluice replay`` reads; ``GET /api/v1/experiments/NAME/looks`` the
run's looks (``?run=`` another run), each with its per-metric evidence.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from controlplane.api_auth import Auth
from controlplane.http_expect import expect
from controlplane.rollout.manager import RolloutManager

ACTIONS = ("promote", "abort", "pause", "resume")


AUDIT = ("audit", "admin")  # journal kind and name of the audit log


class ExperimentsApi:
    def __init__(self, manager: RolloutManager, auth: Auth | str | None) -> None:
        self.manager = manager
        if isinstance(auth, str):
            auth = Auth(write={"token": auth})
        self.auth = auth or Auth()

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/experiments", self.list, expect_handler=expect)
        app.router.add_get("/api/v1/experiments/{name}", self.get, expect_handler=expect)
        app.router.add_get("/api/v1/experiments/{name}/samples.jsonl", self.samples,
                           expect_handler=expect)
        app.router.add_get("/api/v1/experiments/{name}/looks", self.looks, expect_handler=expect)
        app.router.add_get("/api/v1/audit", self.audit, expect_handler=expect)
        for action in ACTIONS:
            app.router.add_post(f"/api/v1/experiments/{{name}}/{action}", self._action(action),
                                expect_handler=expect)

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
            who, denied = self.auth.writer(request)
            name = request.match_info["name"]
            if denied is not None:
                self._audit(request, action, name, denied.status, "refused: no valid token")
                return denied
            status, message = await self.manager.command(name, action, who or "api")
            self._audit(request, action, name, status, message, who)
            body = {"message": message, "experiment": self.manager.view(name)}
            return web.json_response(body, status=status)

        return handle

    def _audit(self, request: web.Request, action: str, name: str, status: int, message: str,
               who: str | None = None) -> None:
        self.manager.journal.append(*AUDIT, {
            "at": time.time(), "who": who, "peer": request.remote,
            "user": request.headers.get("x-sluice-user", "")[:64] or None,
            "action": action, "experiment": name[:128], "status": status,
            "message": message[:300]})

    async def audit(self, request: web.Request) -> web.Response:
        try:
            limit = max(1, min(1000, int(request.query.get("limit", "100"))))
        except ValueError:
            return _error(400, "limit must be an integer")
        return web.json_response({"entries": self.manager.journal.events(*AUDIT, limit=limit)})


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

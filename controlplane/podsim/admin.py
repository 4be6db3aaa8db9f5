"""Admin actions on simulated pods: on each pod's own listener (``/admin/...``) and on
the control listener, which also reaches pods that cannot answer (crashed).

Control listener: ``GET /pods`` (identity, state and faults of every pod), and
``POST /pods/{pod}/faults|crash|restart|version|health`` with ``{pod}`` the pod's index
or ``HOST:PORT``; bodies as for the pod's own ``/admin/...`` routes, plus
``crash {"restartAfterMs": N}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from controlplane.podsim.pod import Pod, PodStateError
from controlplane.podsim.spec import parse_fault_update

__all__ = ["admin_action", "admin_response", "start_control"]


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ValueError("request body must be JSON") from None
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    return body


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


async def admin_action(pod: Pod, action: str, body: dict[str, Any]) -> dict[str, object]:
    """One admin action on a pod (shared by the pod's and the control listener's API)."""
    if action == "faults":
        await pod.apply_faults(body)
        return {**pod.identity(), "faults": pod.faults.as_json()}
    if action == "health":
        healthy = body.get("healthy")
        if set(body) != {"healthy"} or not isinstance(healthy, bool):
            raise ValueError('expected {"healthy": true|false}')
        pod.set_healthy(healthy)
    elif action in ("version", "restart"):
        version, drain, cold = body.get("version"), body.get("drain", True), body.get("coldStartMs")
        known = (
            {"version", "drain", "coldStartMs"}
            if action == "version"
            else {"version", "coldStartMs"}
        )
        if (
            set(body) - known
            or (action == "version" and version is None)
            or not (version is None or (isinstance(version, str) and version))
            or not isinstance(drain, bool)
            or not (cold is None or (_is_number(cold) and cold >= 0))
        ):
            raise ValueError(
                'expected {"version": NAME, "drain": true|false, "coldStartMs": N}'
                if action == "version"
                else 'expected {"version": NAME, "coldStartMs": N} (both optional)'
            )
        cold_ms = None if cold is None else float(cold)
        if action == "version":
            assert isinstance(version, str)
            pod.change_version(version, drain=drain, cold_start_ms=cold_ms)
        else:
            await pod.restart(version, cold_ms)
    elif action == "crash":
        after = body.get("restartAfterMs")
        if set(body) - {"restartAfterMs"} or not (
            after is None or (_is_number(after) and after >= 0)
        ):
            raise ValueError('expected {"restartAfterMs": N} or {}')
        await pod.crash(None if after is None else float(after))
    else:
        raise ValueError(f"unknown action {action!r}")
    return pod.identity()


async def admin_response(request: web.Request, pod: Pod, *, own: bool) -> web.Response:
    action = request.match_info["action"]
    try:
        body = await _json_body(request) if request.can_read_body else {}
        if own and action == "faults" and body.get("crash") is True:
            # The pod is about to reset this very connection: answer first.
            parse_fault_update(body, pod.faults)
            response = web.json_response({**pod.identity(), "state": "crashed"})
            await response.prepare(request)
            await response.write_eof()
            await pod.apply_faults(body)
            return response
        result = await admin_action(pod, action, body)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except PodStateError as exc:
        return web.json_response({"error": str(exc)}, status=409)
    # A version change goes on in the background: 202, poll ``GET /`` or ``/health``.
    return web.json_response(result, status=202 if action == "version" else 200)


async def start_control(pods: Sequence[Pod], host: str, port: int) -> tuple[web.AppRunner, int]:
    """The control listener; returns its runner (``cleanup()`` to stop) and bound port."""

    async def list_pods(_: web.Request) -> web.Response:
        return web.json_response(
            [{"index": i, **p.identity(), "faults": p.faults.as_json()} for i, p in enumerate(pods)]
        )

    async def act(request: web.Request) -> web.Response:
        key = request.match_info["pod"]
        for i, pod in enumerate(pods):
            if key in (str(i), pod.pod):
                return await admin_response(request, pod, own=False)
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/pods", list_pods)
    app.router.add_post("/pods/{pod}/{action:faults|crash|restart|version|health}", act)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])

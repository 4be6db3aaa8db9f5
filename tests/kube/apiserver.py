"""A local Kubernetes API server double, for the real ``kubernetes`` client over HTTP.

It behaves like kube-apiserver where Sluice depends on it: one global
``resourceVersion`` counter set by the server on every write, ``uid`` and
``creationTimestamp`` on create, ``generation`` bumped by spec changes; list
and watch with label selectors, per namespace or across all; watch from a
version (its missed events first), bookmarks, ``timeoutSeconds``, and
``410 Gone`` for a version older than the kept history; the ``status``
subresource separated from the rest (a PUT of the object keeps its status, a
PUT of ``/status`` changes only the status); PUT, merge PATCH, DELETE, and
``409 Conflict`` on a stale ``resourceVersion`` or an existing name.

It runs in a thread with its own event loop (the client under test blocks).
The test drives the cluster's other actors (kubelet, controllers) with the
thread-safe helpers ``put``/``remove``, and the faults with ``compact``,
``drop_watches``, ``forbid`` and ``block`` (a port per replica, see ``port``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.kube.selectors import matches

Obj = dict[str, Any]

# plural -> (group/version, kind, namespaced); every one has a status subresource.
KINDS: dict[str, tuple[str, str, bool]] = {
    "pods": ("v1", "Pod", True),
    "nodes": ("v1", "Node", False),
    "configmaps": ("v1", "ConfigMap", True),
    "services": ("v1", "Service", True),
    "endpointslices": ("discovery.k8s.io/v1", "EndpointSlice", True),
    "leases": ("coordination.k8s.io/v1", "Lease", True),
    "modelservices": ("sluice.dev/v1alpha1", "ModelService", True),
    "experiments": ("sluice.dev/v1alpha1", "Experiment", True),
    "httproutes": ("gateway.networking.k8s.io/v1", "HTTPRoute", True),
    "virtualservices": ("networking.istio.io/v1", "VirtualService", True),
    "destinationrules": ("networking.istio.io/v1", "DestinationRule", True),
}
NO_STATUS = {"configmaps", "leases"}  # no status subresource: PUT writes everything


def status(code: int, reason: str, message: str) -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def _reply(code: int, reason: str, message: str) -> web.Response:
    return web.json_response(status(code, reason, message), status=code)


@dataclass
class _Watch:
    plural: str
    namespace: str | None
    selector: str
    port: int
    queue: asyncio.Queue[Obj | None] = field(default_factory=asyncio.Queue)


class ApiServer:
    def __init__(self, history: int = 10_000, bookmark_interval: float = 0.5) -> None:
        self.history = history
        self.bookmark_interval = bookmark_interval
        self.objects: dict[tuple[str, str, str], Obj] = {}  # (plural, ns, name) -> object
        self.events: list[tuple[int, str, str, Obj]] = []  # (rv, plural, type, object)
        self.rv = 1
        self.compacted = 0  # watches from a version below this get 410 Gone
        self.requests: list[tuple[int, str, str]] = []  # (port, method, path?query)
        self.forbidden: set[tuple[str, str]] = set()  # (verb, plural)
        self.blocked: set[int] = set()
        self._watches: list[_Watch] = []
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- lifecycle

    def __enter__(self) -> ApiServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        assert ready.wait(10), "API server double did not start"
        self.url = self.port()
        return self

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        ready.set()
        loop.run_forever()
        loop.close()

    async def _shutdown(self) -> None:
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    def port(self) -> str:
        """A new listening port on 127.0.0.1 (one per replica, so ``block`` can cut one off)."""
        async def add() -> int:
            assert self._runner is not None
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

        assert self._loop is not None
        number = asyncio.run_coroutine_threadsafe(add(), self._loop).result(10)
        return f"http://127.0.0.1:{number}"

    # -- the test's levers (thread-safe)

    def block(self, url: str, blocked: bool = True) -> None:
        """Cut a port off (connections closed unanswered, its watches ended) or restore it."""
        number = int(url.rsplit(":", 1)[1])
        with self._lock:
            (self.blocked.add if blocked else self.blocked.discard)(number)
            if blocked:
                for w in self._watches:
                    if w.port == number:
                        self._post(w, None)

    def forbid(self, verb: str, plural: str, forbidden: bool = True) -> None:
        with self._lock:
            (self.forbidden.add if forbidden else self.forbidden.discard)((verb, plural))

    def compact(self) -> None:
        """Forget the event history: a watch from any earlier version gets 410 Gone."""
        with self._lock:
            self.events.clear()
            self.compacted = self.rv

    def drop_watches(self) -> None:
        with self._lock:
            for w in self._watches:
                self._post(w, None)

    def get(self, plural: str, namespace: str, name: str) -> Obj | None:
        with self._lock:
            found = self.objects.get((plural, namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def put(self, obj: Obj) -> Obj:
        """Create or replace as the cluster itself would (status included, no checks)."""
        plural = _plural(obj["kind"])
        meta = obj.setdefault("metadata", {})
        ns = meta.get("namespace", "") if KINDS[plural][2] else ""
        with self._lock:
            old = self.objects.get((plural, ns, meta["name"]))
            return self._write(plural, ns, copy.deepcopy(obj), old)

    def remove(self, kind: str, namespace: str, name: str) -> None:
        plural = _plural(kind)
        with self._lock:
            old = self.objects.pop((plural, namespace, name), None)
            if old is not None:
                self._record(plural, "DELETED", self._bump(old))

    # -- storage (under the lock)

    def _bump(self, obj: Obj) -> Obj:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        return obj

    def _write(self, plural: str, ns: str, obj: Obj, old: Obj | None) -> Obj:
        group_version, kind, namespaced = KINDS[plural]
        obj["apiVersion"], obj["kind"] = group_version, kind
        meta = obj["metadata"]
        if namespaced:
            meta["namespace"] = ns
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            meta["generation"] = 1
        else:
            for kept in ("uid", "creationTimestamp"):
                meta[kept] = old["metadata"][kept]
            generation = old["metadata"].get("generation", 1)
            changed = {k: v for k, v in obj.items() if k not in ("metadata", "status")} != {
                k: v for k, v in old.items() if k not in ("metadata", "status")}
            meta["generation"] = generation + (1 if changed else 0)
        self._bump(obj)
        self.objects[(plural, ns, meta["name"])] = obj
        self._record(plural, "MODIFIED" if old is not None else "ADDED", obj)
        return copy.deepcopy(obj)

    def _record(self, plural: str, kind: str, obj: Obj) -> None:
        self.events.append((self.rv, plural, kind, copy.deepcopy(obj)))
        if len(self.events) > self.history:
            dropped = self.events.pop(0)
            self.compacted = dropped[0]
        for w in self._watches:
            if w.plural == plural and _selected(obj, w.namespace, w.selector):
                self._post(w, {"type": kind, "object": copy.deepcopy(obj)})

    def _post(self, w: _Watch, event: Obj | None) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(w.queue.put_nowait, event)

    # -- HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        port = int(sockname[1]) if sockname else 0
        self.requests.append((port, request.method, request.path_qs))
        if port in self.blocked:  # the network is cut: the connection ends unanswered
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=503)
        parsed = _parse(request.path)
        if parsed is None:
            return _reply(404, "NotFound", f"the server could not find {request.path}")
        plural, ns, name, sub = parsed
        watch = request.query.get("watch") in ("true", "1")
        verb = {"GET": "watch" if watch else "get" if name else "list", "POST": "create",
                "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(request.method, "")
        if (verb, plural) in self.forbidden:
            where = f' in the namespace "{ns}"' if ns else " at the cluster scope"
            return _reply(403, "Forbidden", f'{plural} is forbidden: User "system:serviceaccount:'
                          f'sluice:sluice" cannot {verb} resource "{plural}"{where}')
        if watch:
            return await self._watch(request, plural, ns or None, port)
        body = await request.json() if request.method in ("PUT", "PATCH", "POST") else None
        with self._lock:
            if name is None and request.method == "GET":
                return self._list(request, plural, ns or None)
            if name is None and request.method == "POST":
                assert body is not None
                return self._create(plural, ns, body)
            if name is None:
                return _reply(405, "MethodNotAllowed", request.method)
            return self._item(request, plural, ns, name, sub, body)

    def _list(self, request: web.Request, plural: str, ns: str | None) -> web.Response:
        selector = request.query.get("labelSelector", "")
        items = [copy.deepcopy(o) for (p, _, _), o in sorted(self.objects.items())
                 if p == plural and _selected(o, ns, selector)]
        group_version, kind, _ = KINDS[plural]
        return web.json_response({"kind": f"{kind}List", "apiVersion": group_version,
                                  "metadata": {"resourceVersion": str(self.rv)},
                                  "items": items})

    def _create(self, plural: str, ns: str, body: Obj) -> web.Response:
        name = (body.get("metadata") or {}).get("name")
        if not name:
            return _reply(422, "Invalid", "metadata.name: Required value")
        if (plural, ns, name) in self.objects:
            return _reply(409, "AlreadyExists", f'{plural} "{name}" already exists')
        if plural not in NO_STATUS:
            body.pop("status", None)  # status is written through /status only
        body["metadata"] = {k: v for k, v in body["metadata"].items()
                            if k not in ("resourceVersion", "uid", "generation")}
        return web.json_response(self._write(plural, ns, body, None), status=201)

    def _item(self, request: web.Request, plural: str, ns: str, name: str, sub: str | None,
              body: Obj | None) -> web.Response:
        old = self.objects.get((plural, ns, name))
        if old is None:
            return _reply(404, "NotFound", f'{plural} "{name}" not found')
        if request.method == "GET":
            return web.json_response(copy.deepcopy(old))
        if request.method == "DELETE":
            del self.objects[(plural, ns, name)]
            gone = self._bump(copy.deepcopy(old))
            self._record(plural, "DELETED", gone)
            return web.json_response(gone)
        assert body is not None
        if request.method == "PATCH":
            if "merge-patch" not in request.content_type and "strategic" not in \
                    request.content_type:
                return _reply(415, "UnsupportedMediaType", request.content_type)
            target = copy.deepcopy(old)
            _merge(target, {"status": body.get("status")} if sub == "status" else
                   {k: v for k, v in body.items() if k != "status" or plural in NO_STATUS})
            new = target
        else:
            given = str((body.get("metadata") or {}).get("resourceVersion", ""))
            if not given:
                return _reply(422, "Invalid", "metadata.resourceVersion: Invalid value: 0x0: "
                              "must be specified for an update")
            if given != old["metadata"]["resourceVersion"]:
                return _reply(409, "Conflict", f'Operation cannot be fulfilled on {plural} '
                              f'"{name}": the object has been modified; please apply your '
                              "changes to the latest version and try again")
            if sub == "status":
                new = copy.deepcopy(old)
                new["status"] = body.get("status")
            else:
                new = copy.deepcopy(body)
                if plural not in NO_STATUS:
                    new.pop("status", None)
                    if "status" in old:
                        new["status"] = copy.deepcopy(old["status"])
                meta = new.setdefault("metadata", {})
                meta["name"] = name
        return web.json_response(self._write(plural, ns, new, old))

    async def _watch(self, request: web.Request, plural: str, ns: str | None,
                     port: int) -> web.StreamResponse:
        selector = request.query.get("labelSelector", "")
        since = request.query.get("resourceVersion", "")
        bookmarks = request.query.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(request.query.get("timeoutSeconds", "1800"))
        w = _Watch(plural, ns, selector, port)
        with self._lock:
            if since not in ("", "0") and int(since) < self.compacted:
                backlog: list[Obj] = [{"type": "ERROR", "object": status(
                    410, "Expired", f"too old resource version: {since} ({self.compacted})")}]
            elif since in ("", "0"):
                backlog = [{"type": "ADDED", "object": copy.deepcopy(o)}
                           for (p, _, _), o in sorted(self.objects.items())
                           if p == plural and _selected(o, ns, selector)]
            else:
                backlog = [{"type": t, "object": copy.deepcopy(o)} for rv, p, t, o in self.events
                           if rv > int(since) and p == plural and _selected(o, ns, selector)]
            gone = bool(backlog) and backlog[0]["type"] == "ERROR"
            if not gone:
                self._watches.append(w)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        deadline = time.monotonic() + timeout
        try:
            for event in backlog:
                await response.write(json.dumps(event).encode() + b"\n")
            while not gone and time.monotonic() < deadline and port not in self.blocked:
                left = min(self.bookmark_interval, deadline - time.monotonic())
                try:
                    event = await asyncio.wait_for(w.queue.get(), max(0.01, left))
                except TimeoutError:
                    if bookmarks:
                        with self._lock:
                            mark = {"type": "BOOKMARK", "object": {
                                "kind": KINDS[plural][1], "apiVersion": KINDS[plural][0],
                                "metadata": {"resourceVersion": str(self.rv)}}}
                        await response.write(json.dumps(mark).encode() + b"\n")
                    continue
                if event is None:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with self._lock:
                if w in self._watches:
                    self._watches.remove(w)
        if port in self.blocked and request.transport is not None:
            request.transport.close()
            return response
        with contextlib.suppress(ConnectionError):  # the client went away first
            await response.write_eof()
        return response


def _plural(kind: str) -> str:
    return next(p for p, (_, k, _) in KINDS.items() if k == kind)


def _parse(path: str) -> tuple[str, str, str | None, str | None] | None:
    """``(plural, namespace or "", name, subresource)`` of a resource path."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        rest = parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        rest = parts[3:]
    else:
        return None
    ns = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        ns, rest = rest[1], rest[2:]
    if not rest or rest[0] not in KINDS or len(rest) > 3:
        return None
    return rest[0], ns, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None


def _selected(obj: Obj, ns: str | None, selector: str) -> bool:
    meta = obj.get("metadata") or {}
    if ns is not None and meta.get("namespace", "") != ns:
        return False
    return matches(selector, meta.get("labels") or {})


def _merge(target: Obj, patch: Obj) -> None:
    """RFC 7386 JSON merge patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)

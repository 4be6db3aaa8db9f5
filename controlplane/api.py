"""Admin HTTP: health, readiness, metrics, and the JSON API (DESIGN §3 contract).

Read-only views over the store and the xDS server; nothing here mutates state.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web

from controlplane import statuspage
from controlplane.api_auth import Auth
from controlplane.api_experiments import ExperimentsApi
from controlplane.api_forward import Forwarder
from controlplane.config import service_to_dict
from controlplane.consistency import consistency
from controlplane.http_expect import catch_unmatched, expect
from controlplane.metrics import Metrics
from controlplane.model import (
    MODEL_SERVICE_KIND,
    cluster_name,
    listener_name,
    route_config_name,
)
from controlplane.openapi import openapi_document
from controlplane.proxy_rows import parse_filter, proxy_rows, sort_rows
from controlplane.store import Store
from controlplane.worker_pool import WorkerPool
from xds.server import XdsServer


def _num(x: float) -> float | int:
    """Whole percents print as integers in JSON."""
    return int(x) if float(x).is_integer() else x


class AdminApi:
    def __init__(self, store: Store, xds: XdsServer, metrics: Metrics,
                 experiments: ExperimentsApi | None = None, auth: Auth | None = None,
                 tls: tuple[str, str] | None = None,
                 workers: WorkerPool | None = None) -> None:
        self.store = store
        self.workers = workers  # the other xDS processes (sluice serve --workers)
        self.xds = xds
        self.metrics = metrics
        self.experiments = experiments
        self.auth = auth or Auth()
        self.tls = tls
        # Kubernetes mode: per discovered version, its source, endpoint count and notes.
        self.discovery_view: Callable[[str], dict[str, Any]] | None = None
        # Kubernetes mode: a follower hands experiment requests to the leader.
        self.forwarder: Forwarder | None = None
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        middlewares = [self.auth.middleware]
        if self.forwarder is not None:
            middlewares.append(self.forwarder.middleware)
        app = web.Application(middlewares=middlewares, client_max_size=64 * 1024)
        app.router.add_get("/healthz", self.healthz, expect_handler=expect)
        app.router.add_get("/readyz", self.readyz, expect_handler=expect)
        app.router.add_get("/metrics", self.prometheus, expect_handler=expect)
        app.router.add_get("/api/v1/services", self.services, expect_handler=expect)
        app.router.add_get("/api/v1/proxies", self.proxies, expect_handler=expect)
        app.router.add_get("/api/v1/services/{name}/consistency", self.consistency,
                           expect_handler=expect)
        app.router.add_get("/api/v1/openapi.json", self.openapi, expect_handler=expect)
        if self.experiments is not None:
            self.experiments.routes(app)
        statuspage.register(app)
        catch_unmatched(app)
        return app

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.tls)
        site = web.TCPSite(self._runner, host, port, ssl_context=context)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.forwarder is not None:
            await self.forwarder.close()

    async def openapi(self, _: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    async def healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, _: web.Request) -> web.Response:
        if self.store.ready:
            return web.Response(text="ready\n")
        waiting = [s.name for s in self.store.sources() if not s.synced]
        lines = [f"waiting for sources: {', '.join(waiting)}"] if waiting else []
        lines += [f"{key}: {message}" for key, message in self.store.conditions().items()]
        return web.Response(status=503, text="\n".join(lines) + "\n")

    async def prometheus(self, _: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Format": "prometheus-text-0.0.4"},
        )

    async def services(self, _: web.Request) -> web.Response:
        services = []
        declared = {s.name: s for s in self.store.declared.services}
        for service in self.store.state.services:
            override = self.store.override(service.name)
            status = self.store.status_of(MODEL_SERVICE_KIND, service.name)
            services.append(
                {
                    "name": service.name,
                    "weights": {v.name: _num(v.weight) for v in service.versions},
                    "declaredWeights": {v.name: _num(v.weight)
                                        for v in declared[service.name].versions},
                    "weightsSetBy": override.owner if override else "config",
                    "document": status.to_json() if status else None,
                    "envoy": {
                        "listener": listener_name(service.name),
                        "routeConfiguration": route_config_name(service.name),
                        "clusters": {
                            v.name: cluster_name(service.name, v.name) for v in service.versions
                        },
                    },
                    "spec": service_to_dict(declared[service.name])["spec"],
                }
            )
            if self.discovery_view is not None and (found := self.discovery_view(service.name)):
                services[-1]["discovery"] = found
        body: dict[str, Any] = {
            "revision": self.store.revision,
            "snapshot": self.xds.cache.snapshot.version,
            "services": services,
            "documents": [s.to_json() for s in self.store.statuses()],
            "sources": [
                {
                    "name": s.name,
                    "synced": s.synced,
                    "valid": not s.errors,
                    "servingRevision": s.revision,
                    "rejectedLoads": s.rejected_loads,
                    "files": list(s.files),
                    "errors": [str(e) for e in s.errors],
                    "warnings": [str(e) for e in s.warnings],
                }
                for s in self.store.sources()
            ],
        }
        return web.json_response(body)

    async def consistency(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            service = self.store.state.service(name)
        except KeyError:
            return web.json_response({"error": f"no service named {name!r}"}, status=404)
        remote = await self.workers.query("consistency", service) if self.workers else []
        body = await consistency(service, self.xds.cache.snapshot, self.xds.proxies.values(),
                                 remote)
        return web.json_response(body)

    async def proxies(self, request: web.Request) -> web.Response:
        try:
            only = parse_filter({k: request.query[k] for k in request.query},
                                request.query.getall("node", []))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        proxies = proxy_rows(self.xds.proxies.values(), 0, only)
        if self.workers is not None:
            proxies += await self.workers.query("proxies", proxy_filter=only)
        proxies = sort_rows(proxies)
        shown = proxies[:only.limit] if only.limit is not None else proxies
        return web.json_response({"proxies": shown, "total": len(proxies)})

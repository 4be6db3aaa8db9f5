"""Raw JSON calls and watch streams through the official ``kubernetes`` client.

The typed models of the client cost a deserialization per object and drop
fields they do not know; Sluice reads objects as JSON instead, through the
client's ``ApiClient`` (credentials, TLS, token refresh, proxies), on any
resource described by a ``Resource``. Calls block: callers run them in a
thread (informers have their own; one-off writes use ``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as _k8s_config
from kubernetes.watch import watch as _k8s_watch

log = logging.getLogger("sluice.kube")

# Untyped parts of the client, used through Any.
k8s_config: Any = _k8s_config
iter_resp_lines: Any = _k8s_watch.iter_resp_lines
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None,
             sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
        if sub is not None:
            base += f"/{sub}"
        return base

    def describe(self, namespace: str | None) -> str:
        group = self.group or "core"
        where = f" in namespace {namespace}" if namespace else " in every namespace" \
            if self.namespaced else ""
        return f"{self.plural}.{group}{where}"


PODS = Resource("", "v1", "pods", "Pod")
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap")
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
MODEL_SERVICES = Resource("sluice.dev", "v1alpha1", "modelservices", "ModelService")
EXPERIMENTS = Resource("sluice.dev", "v1alpha1", "experiments", "Experiment")
HTTP_ROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
VIRTUAL_SERVICES = Resource("networking.istio.io", "v1", "virtualservices", "VirtualService")
DESTINATION_RULES = Resource("networking.istio.io", "v1", "destinationrules",
                             "DestinationRule")


class KubeError(Exception):
    """The API server refused (status set) or could not be reached (status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message

    def describe(self) -> str:
        if self.status == 403:
            return f"forbidden by RBAC: {self.message}"
        if self.status == 0:
            return f"API server unreachable: {self.message}"
        return str(self)


def own_namespace(default: str = "default") -> str:
    """The namespace this pod runs in (its service account's), else ``default``."""
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as fh:
            return fh.read().strip() or default
    except OSError:
        return default


class WatchStream:
    """One watch request: an iterator of decoded events; ``close`` from any thread."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def __iter__(self) -> Iterator[Obj]:
        for line in iter_resp_lines(self._response):
            if line.strip():
                yield json.loads(line)

    def close(self) -> None:
        response = self._response
        sock = getattr(getattr(response, "connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):  # unblocks a read in another thread
                sock.shutdown(socket.SHUT_RDWR)
        try:
            response.release_conn()
        except Exception:  # closing must not fail
            log.debug("closing a watch response failed", exc_info=True)


class Kube:
    """Any resource as JSON; every failure is a ``KubeError``."""

    def __init__(self, api: k8s.ApiClient, timeout: tuple[float, float] = (3.0, 10.0)) -> None:
        self.api = api
        self.timeout = timeout

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        """In-cluster credentials when running in a pod (and no kubeconfig is given),
        else the kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``)."""
        configuration = k8s.Configuration()
        try:
            if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                k8s_config.load_incluster_config(client_configuration=configuration)
            else:
                k8s_config.load_kube_config(config_file=kubeconfig, context=context,
                                            client_configuration=configuration)
        except Exception as exc:  # ConfigException, a missing or unreadable file
            raise KubeError(0, "NoCredentials", f"no Kubernetes credentials: not in a pod, "
                            f"and the kubeconfig cannot be used ({exc})") from exc
        return cls(k8s.ApiClient(configuration))

    def with_timeout(self, timeout: tuple[float, float]) -> Kube:
        """The same client with other timeouts (writes on the event loop keep them short)."""
        return Kube(self.api, timeout)

    @classmethod
    def at(cls, host: str, timeout: tuple[float, float] = (3.0, 10.0)) -> Kube:
        """A plain-HTTP API server (tests, ``kubectl proxy``)."""
        configuration = k8s.Configuration(host=host)
        return cls(k8s.ApiClient(configuration), timeout)

    def close(self) -> None:
        api: Any = self.api
        api.close()

    # -- calls

    def _call(self, method: str, path: str, query: list[tuple[str, str]] | None = None,
              body: Any = None, content_type: str = "application/json",
              timeout: Any = None) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            request = self.api.param_serialize(method, path, query_params=query or [],
                                               header_params=headers, body=body,
                                               auth_settings=["BearerToken"])
            return self.api.call_api(*request, _request_timeout=timeout or self.timeout)
        except k8s.ApiException as exc:
            raise KubeError(exc.status or 0, exc.reason or "", str(exc.body or exc)) from exc
        except Exception as exc:  # urllib3, sockets, TLS: not reachable
            raise KubeError(0, "Unreachable", f"{type(exc).__name__}: {exc}") from exc

    def request(self, method: str, path: str, query: list[tuple[str, str]] | None = None,
                body: Any = None, content_type: str = "application/json") -> Obj:
        response = self._call(method, path, query, body, content_type)
        try:
            data = response.read()
        except Exception as exc:
            raise KubeError(0, "Unreachable", f"{type(exc).__name__}: {exc}") from exc
        if not 200 <= response.status <= 299:
            raise _error(response.status, data)
        decoded: Obj = json.loads(data) if data else {}
        return decoded

    def list(self, resource: Resource, namespace: str | None = None,
             label_selector: str | None = None) -> Obj:
        query = [("labelSelector", label_selector)] if label_selector else []
        return self.request("GET", resource.path(namespace), query)

    def get(self, resource: Resource, namespace: str | None, name: str) -> Obj | None:
        try:
            return self.request("GET", resource.path(namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, resource: Resource, namespace: str | None, body: Obj) -> Obj:
        return self.request("POST", resource.path(namespace), body=body)

    def replace(self, resource: Resource, namespace: str | None, name: str, body: Obj,
                sub: str | None = None) -> Obj:
        """PUT; a stale ``metadata.resourceVersion`` is a 409 Conflict."""
        return self.request("PUT", resource.path(namespace, name, sub), body=body)

    def patch(self, resource: Resource, namespace: str | None, name: str, body: Obj,
              sub: str | None = None) -> Obj:
        return self.request("PATCH", resource.path(namespace, name, sub), body=body,
                            content_type="application/merge-patch+json")

    def delete(self, resource: Resource, namespace: str | None, name: str) -> bool:
        try:
            self.request("DELETE", resource.path(namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def watch(self, resource: Resource, namespace: str | None, label_selector: str | None,
              resource_version: str, timeout_seconds: int) -> WatchStream:
        query = [("watch", "true"), ("allowWatchBookmarks", "true"),
                 ("resourceVersion", resource_version),
                 ("timeoutSeconds", str(timeout_seconds))]
        if label_selector:
            query.append(("labelSelector", label_selector))
        # The read timeout outlives the server's own: a silent stream is a dead one.
        response = self._call("GET", resource.path(namespace), query,
                              timeout=(self.timeout[0], timeout_seconds + 15))
        if not 200 <= response.status <= 299:
            data = response.read()
            raise _error(response.status, data)
        return WatchStream(response.response)


def _error(status: int, data: bytes | None) -> KubeError:
    reason, message = "", (data or b"").decode("utf-8", "replace")[:500]
    try:
        body = json.loads(data or b"{}")
    except ValueError:
        body = {}
    if isinstance(body, dict):
        reason = str(body.get("reason", ""))
        message = str(body.get("message", message))
    return KubeError(status, reason, message)


def label_selector(labels: tuple[tuple[str, str], ...] | dict[str, str]) -> str:
    pairs = labels.items() if isinstance(labels, dict) else labels
    return ",".join(f"{k}={v}" for k, v in sorted(pairs))


def status_error(body: Obj) -> KubeError:
    """A watch ``ERROR`` event's Status object."""
    return KubeError(int(body.get("code", 0) or 0), str(body.get("reason", "")),
                     str(body.get("message", "")))

"""The ADS gRPC server (grpc.aio): thin I/O around the sans-IO stream machines.

Each stream is one task that owns its machine. Requests are parsed with the
wire views (``xds._wire``), never as full Envoy messages; responses are
assembled from pre-serialized resource bytes. A stream that sends garbage or
breaks the protocol ends with INVALID_ARGUMENT; the others carry on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError

from xds._wire import wire_pb2
from xds.cache import SnapshotCache
from xds.delta import DeltaRequest, DeltaResponse, DeltaStream
from xds.limits import (
    AdmissionQueue,
    StreamLimits,
    TokenBucket,
    default_push_limit,
    peer_host,
)
from xds.protocol import (
    ACKED,
    ErrorDetail,
    ProtocolError,
    Response,
    SotwStream,
    TypeStatus,
)
from xds.quiet import QuietDeltaStream, TypeVersions
from xds.requests import SotwRequests
from xds.sharing import SharedSotwStream, SharedViews
from xds.snapshot import Snapshot
from xds.tls import TlsFiles, authorize, server_credentials

log = logging.getLogger("sluice.xds")

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
SOTW_METHOD = "StreamAggregatedResources"
DELTA_METHOD = "DeltaAggregatedResources"


class XdsObserver(Protocol):
    """Where the server reports what it does (metrics live in controlplane)."""

    def pushed(self, type_url: str, variant: str) -> None: ...
    def acked(self, type_url: str, variant: str) -> None: ...
    def nacked(self, type_url: str, variant: str) -> None: ...
    def converged(self, seconds: float) -> None: ...
    def stream_error(self, reason: str) -> None: ...


class NullObserver:
    def pushed(self, type_url: str, variant: str) -> None:
        pass

    def acked(self, type_url: str, variant: str) -> None:
        pass

    def nacked(self, type_url: str, variant: str) -> None:
        pass

    def converged(self, seconds: float) -> None:
        pass

    def stream_error(self, reason: str) -> None:
        pass


@dataclass
class ProxyInfo:
    stream_id: int
    node_id: str
    node_cluster: str
    user_agent: str
    variant: str  # "sotw" | "delta"
    connected_at: float  # wall clock, for display
    machine: SotwStream | DeltaStream
    converged_on: str | None = None  # snapshot version this proxy last fully ACKed
    acked_since_check: bool = False  # convergence can only change on an ACK
    admin_url: str | None = None  # node metadata "sluice.dev/admin", when announced

    def status(self) -> list[TypeStatus]:
        return self.machine.status()


class _Wake:
    """Marker put on a stream's queue when a new snapshot is installed."""


class XdsServer:
    def __init__(
        self,
        cache: SnapshotCache,
        observer: XdsObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        push_limit: int | None = None,
        admission: AdmissionQueue | None = None,
        extra_handlers: tuple[grpc.GenericRpcHandler, ...] = (),
        tls: TlsFiles | None = None,
        limits: StreamLimits | None = None,
        stream_ids: tuple[int, int] = (0, 1),
        reuse_port: bool = False,
    ) -> None:
        self.cache = cache
        self.observer: XdsObserver = observer or NullObserver()
        self.clock = clock
        self._push_slots = asyncio.Semaphore(push_limit or default_push_limit())
        self.admission = admission or AdmissionQueue()
        # Other services on the same port (the load reporting service, ``xds.lrs``).
        self.extra_handlers = extra_handlers
        self.tls = tls
        self.limits = limits or StreamLimits()
        self._per_peer: dict[str, int] = {}
        self._server: grpc.aio.Server | None = None
        # Stream ids are offset + k × step, so processes serving one port never share one.
        self._next_id, self._id_step = stream_ids
        # Several processes accept on one port (``sluice serve --workers``), or only this one.
        self.reuse_port = reuse_port
        self.proxies: dict[int, ProxyInfo] = {}
        self.stopping = False  # stop() was called: open streams are about to be cancelled
        self._handlers: set[asyncio.Task[Any]] = set()  # the tasks serving open streams
        self.active_streams = 0
        # When a stream last opened or was pushed to (``clock``): housekeeping that
        # stalls the loop (a full garbage collection) waits for a quiet moment.
        self.last_activity = clock()
        # Views, response bytes and names shared by streams in the same state.
        self.shared = SharedViews()
        self.sotw_requests = SotwRequests(canonical=self.shared.names.frozen)
        self.type_versions = TypeVersions()

    # -- lifecycle ------------------------------------------------------------

    async def start(self, address: str) -> int:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.limits.max_message_bytes),
                ("grpc.max_send_message_length", 256 * 1024 * 1024),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.so_reuseport", 1 if self.reuse_port else 0),
                *self.admission.channel_args(),
            ]
        )
        handlers = {
            SOTW_METHOD: grpc.stream_stream_rpc_method_handler(self._sotw),
            DELTA_METHOD: grpc.stream_stream_rpc_method_handler(self._delta),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(ADS_SERVICE, handlers), *self.extra_handlers)
        )
        if self.tls is not None:
            port: int = server.add_secure_port(address, server_credentials(self.tls))
        else:
            port = server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"cannot bind the xDS server to {address}")
        await server.start()
        self._server = server
        return port

    async def stop(self, grace: float = 1.0) -> None:
        self.stopping = True
        await end_streams(self._handlers, grace)
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
            log.info("%s", self.shared.summary())
            log.info("%s", self.type_versions.summary())

    # -- handlers -------------------------------------------------------------

    async def _sotw(self, requests: AsyncIterator[bytes], context: Any) -> None:
        await self._ended_by_stop(self._serve(requests, context, "sotw"))

    async def _delta(self, requests: AsyncIterator[bytes], context: Any) -> None:
        await self._ended_by_stop(self._serve(requests, context, "delta"))

    async def _ended_by_stop(self, serving: Coroutine[Any, Any, None]) -> None:
        """Streams never end by themselves. ``stop`` ends them here, so the RPC completes
        before the server goes: left to grpc.aio, each one would be cancelled outside
        the handler and logged as an unhandled error."""
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await serving
        except asyncio.CancelledError:
            if not self.stopping:
                raise
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _serve(self, requests: AsyncIterator[bytes], context: Any, variant: str) -> None:
        peer = peer_host(context.peer())
        if self._per_peer.get(peer, 0) >= self.limits.max_streams_per_peer:
            self.observer.stream_error("TooManyStreamsPerPeer")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"more than {self.limits.max_streams_per_peer} streams from "
                                f"{peer}")
            return
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        try:
            await self._serve_stream(requests, context, variant)
        finally:
            left = self._per_peer.get(peer, 1) - 1
            if left > 0:
                self._per_peer[peer] = left
            else:
                self._per_peer.pop(peer, None)

    async def _serve_stream(self, requests: AsyncIterator[bytes], context: Any,
                            variant: str) -> None:
        queue: asyncio.Queue[bytes | _Wake | BaseException | None] = asyncio.Queue()
        woken = False
        bucket = TokenBucket(self.limits.requests_per_s, self.limits.request_burst,
                             self.clock())

        def on_snapshot(_: Snapshot) -> None:
            nonlocal woken
            if not woken:  # coalesce: a stream that is behind gets the latest only
                woken = True
                queue.put_nowait(_Wake())

        async def read() -> None:
            try:
                async for raw in requests:
                    queue.put_nowait(raw)
                queue.put_nowait(None)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # the client vanished mid-stream
                queue.put_nowait(exc)

        self._next_id += self._id_step
        stream_id = self._next_id
        self.last_activity = self.clock()
        self.active_streams += 1
        unsubscribe = self.cache.subscribe(on_snapshot)
        reader = asyncio.create_task(read())
        info: ProxyInfo | None = None
        # Requests that came before the first snapshot, answered in order once it is in
        # (its Wake comes after every request queued before it was installed).
        held: list[bytes] = []
        replay: collections.deque[bytes] = collections.deque()
        try:
            while True:
                item = replay.popleft() if replay else await queue.get()
                if item is None or isinstance(item, BaseException):
                    return
                if isinstance(item, _Wake):
                    woken = False
                    if held:
                        replay.extend(held)
                        held.clear()
                        continue
                    if info is None:
                        continue
                    out = info.machine.on_snapshot(self.cache.snapshot)
                elif held or not self.cache.ready:
                    held.append(item)
                    continue
                else:
                    if not bucket.take(self.clock()):
                        self.observer.stream_error("RequestRate")
                        log.warning("stream %d (%s): more than %g requests/s; disconnected",
                                    stream_id, variant, self.limits.requests_per_s)
                        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                            f"more than {self.limits.requests_per_s:g} "
                                            "requests per second on one stream")
                        return
                    first = info is None
                    try:
                        info, out = self._on_request(stream_id, variant, info, item)
                    except (ProtocolError, DecodeError) as exc:
                        self.observer.stream_error(type(exc).__name__)
                        log.warning("stream %d (%s): %s", stream_id, variant, exc)
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                        return
                    denied = (authorize(info.node_id, _auth(context))
                              if first and self.tls is not None else None)
                    if denied is not None:
                        self.observer.stream_error("PermissionDenied")
                        log.warning("stream %d (%s): %s", stream_id, variant, denied)
                        await context.abort(grpc.StatusCode.PERMISSION_DENIED, denied)
                        return
                await self._write(context, info, out)
        finally:
            reader.cancel()
            unsubscribe()
            self.proxies.pop(stream_id, None)
            self.active_streams -= 1

    def _on_request(
        self, stream_id: int, variant: str, info: ProxyInfo | None, raw: bytes
    ) -> tuple[ProxyInfo, list[Response] | list[DeltaResponse]]:
        now = self.clock()
        if variant == "sotw":
            decoded = self.sotw_requests.decode(raw)
            node_bytes = decoded.node
        else:
            dview = wire_pb2.DeltaDiscoveryRequestView.FromString(raw)
            node_bytes = dview.node
        if info is None:
            # Rule 12: only the first request is sure to carry the node.
            info = self._register(stream_id, variant, node_bytes)
        if variant == "sotw":
            assert isinstance(info.machine, SotwStream)
            out: list[Response] | list[DeltaResponse] = info.machine.on_request(
                decoded.request, now)
        else:
            assert isinstance(info.machine, DeltaStream)
            derr = dview.error_detail if dview.HasField("error_detail") else None
            dreq = DeltaRequest(
                dview.type_url,
                # the machine keeps these names, so map them to the snapshot's strings
                self.shared.names.strings(self.cache.snapshot, dview.resource_names_subscribe),
                self.shared.names.strings(self.cache.snapshot, dview.resource_names_unsubscribe),
                tuple(dview.initial_resource_versions.items()),
                dview.response_nonce,
                ErrorDetail(derr.code, derr.message) if derr is not None else None,
            )
            out = info.machine.on_request(dreq, now)
        for type_url, event in info.machine.events:
            if event == ACKED:
                info.acked_since_check = True
                self.observer.acked(type_url, variant)
            else:
                self.observer.nacked(type_url, variant)
        info.machine.events.clear()
        return info, out

    def _register(self, stream_id: int, variant: str, node_bytes: bytes) -> ProxyInfo:
        node = wire_pb2.NodeView.FromString(node_bytes)
        if not node.id:
            raise ProtocolError("the first request of a stream must carry node.id")
        snapshot = self.cache.snapshot
        machine: SotwStream | DeltaStream = (
            SharedSotwStream(snapshot, self.shared)
            if variant == "sotw"
            else QuietDeltaStream(snapshot, self.type_versions)
        )
        agent = f"{node.user_agent_name}/{node.user_agent_version}".strip("/")
        info = ProxyInfo(stream_id, node.id, node.cluster, agent, variant, time.time(), machine,
                         admin_url=_admin_url(node))
        self.proxies[stream_id] = info
        log.info("stream %d: %s (%s) connected over %s", stream_id, node.id, agent, variant)
        return info

    async def _write(
        self, context: Any, info: ProxyInfo | None, out: list[Response] | list[DeltaResponse]
    ) -> None:
        if info is None:
            return
        if out:
            self.last_activity = self.clock()
        for response in out:
            payload = self.shared.bodies.encode(response)
            if info.converged_on is None:
                # Admission bounds the first pushes of new streams (a connect storm);
                # a stream that has converged once only gets changes.
                async with self._push_slots:
                    await context.write(payload)
            else:
                await context.write(payload)
            self.observer.pushed(response.type_url, info.variant)
        if not info.acked_since_check:
            return
        info.acked_since_check = False
        snapshot = self.cache.snapshot
        if info.converged_on != snapshot.version and info.machine.converged():
            info.converged_on = snapshot.version
            if self.cache.changed_at is not None:
                self.observer.converged(max(0.0, self.clock() - self.cache.changed_at))


async def end_streams(handlers: set[asyncio.Task[Any]], timeout: float) -> None:
    """Cancels the tasks serving open streams (their handlers return on it while the
    server is stopping) and waits for their RPCs to complete."""
    tasks = list(handlers)
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=max(0.1, timeout))


ADMIN_METADATA_KEY = "sluice.dev/admin"


def _auth(context: Any) -> dict[str, list[bytes]]:
    try:
        return dict(context.auth_context())
    except Exception:  # an in-process test double without one
        return {}


def _admin_url(node: Any) -> str | None:
    """The admin URL a proxy announces, when it is a plain http(s) URL."""
    field = node.metadata.fields.get(ADMIN_METADATA_KEY) if node.HasField("metadata") else None
    if field is None or field.WhichOneof("kind") != "string_value":
        return None
    url = str(field.string_value)
    if not url.startswith(("http://", "https://")) or len(url) > 256 or any(
            c.isspace() for c in url):
        return None
    return url


def encode(response: Response | DeltaResponse) -> bytes:
    """The whole response in one encoding: the reference that ``xds.sharing``'s shared
    bodies (built once, nonce appended per stream) are checked against."""
    if isinstance(response, Response):
        return wire_pb2.DiscoveryResponseView(
            version_info=response.version_info,
            resources=[r.any_bytes for r in response.resources],
            type_url=response.type_url,
            nonce=response.nonce,
        ).SerializeToString()
    return wire_pb2.DeltaDiscoveryResponseView(
        system_version_info=response.system_version_info,
        resources=[r.delta_bytes for r in response.resources],
        type_url=response.type_url,
        nonce=response.nonce,
        removed_resources=response.removed,
    ).SerializeToString()

"""Envoy's Load Reporting Service (LRS): proxies report per-endpoint load to us.

``envoy.service.load_stats.v3.LoadReportingService/StreamLoadStats`` on the
same gRPC server as ADS (the bootstrap's ``cluster_manager.load_stats_config``
points at the ``sluice_xds`` cluster). On a stream's first request Sluice
answers once: every cluster (``send_all_clusters``), per endpoint
(``report_endpoint_granularity``), every ``interval``. Envoy then sends one
``LoadStatsRequest`` per interval with, per cluster and endpoint, requests
issued, completed (successful, error) since the last report and in progress
now. https://www.envoyproxy.io/docs/envoy/latest/api-v3/service/load_stats/v3/lrs.proto

Envoy 1.40 repeats its full ``Node`` (≈61 KB) in *every* ``LoadStatsRequest``;
betterproto2 takes 20-50 ms to parse that, so requests are read here with a
small protobuf wire reader that skips the node (read once per stream, with the
wire view) and decodes only the few fields used. ``decode_load_stats`` is pure
and tested against betterproto2's encoding.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from envoy_data_plane.envoy.service.load_stats import v3 as lrs_v3
from google.protobuf.message import DecodeError

from xds._wire import wire_pb2
from xds.server import end_streams

log = logging.getLogger("sluice.lrs")

LRS_SERVICE = "envoy.service.load_stats.v3.LoadReportingService"
LRS_METHOD = "StreamLoadStats"
MAX_COUNT = 1 << 40  # larger counts are garbage, not load


class WireError(ValueError):
    """Bytes that are not a well-formed LoadStatsRequest."""


@dataclass(frozen=True)
class EndpointLoad:
    """One endpoint of one cluster, as one proxy saw it over one report interval."""

    address: str  # "IP:port" ("[IPv6]:port"), as ``Endpoint.key``
    issued: int
    successful: int
    errors: int
    in_progress: int


@dataclass(frozen=True)
class ClusterLoad:
    cluster: str
    interval_s: float  # what the report covers
    endpoints: tuple[EndpointLoad, ...]


# A sink receives (node id, what one request reported); it must not block.
LoadSink = Callable[[str, list[ClusterLoad]], None]


# --------------------------------------------------------------------------- wire reading


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of every field: an int for varints, bytes for the rest."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, kind = tag >> 3, tag & 7
        if kind == 0:
            value, pos = _varint(buf, pos)
            yield number, value
        elif kind == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise WireError("truncated field")
            yield number, buf[pos:pos + size]
            pos += size
        elif kind in (1, 5):
            width = 8 if kind == 1 else 4
            if pos + width > len(buf):
                raise WireError("truncated field")
            yield number, buf[pos:pos + width]
            pos += width
        else:
            raise WireError(f"unsupported wire type {kind}")


def _address(buf: bytes) -> str:
    # Address.socket_address = 1; SocketAddress.address = 2, port_value = 3.
    host, port = "", 0
    for number, value in fields(buf):
        if number == 1 and isinstance(value, bytes):
            for n, v in fields(value):
                if n == 2 and isinstance(v, bytes):
                    host = v.decode("utf-8", "replace")
                elif n == 3 and isinstance(v, int):
                    port = v
    if not host:
        raise WireError("endpoint without a socket address")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _count(value: int | bytes) -> int:
    if not isinstance(value, int) or value > MAX_COUNT:
        raise WireError(f"implausible count {value!r}")
    return value


def _endpoint(buf: bytes) -> EndpointLoad:
    # UpstreamEndpointStats: address 1, successful 2, in_progress 3, error 4, issued 7.
    address, counts = "", {2: 0, 3: 0, 4: 0, 7: 0}
    for number, value in fields(buf):
        if number == 1 and isinstance(value, bytes):
            address = _address(value)
        elif number in counts:
            counts[number] = _count(value)
    if not address:
        raise WireError("endpoint stats without an address")
    return EndpointLoad(address, counts[7], counts[2], counts[4], counts[3])


def _duration(buf: bytes) -> float:
    seconds = nanos = 0
    for number, value in fields(buf):
        if number == 1 and isinstance(value, int):
            seconds = value
        elif number == 2 and isinstance(value, int):
            nanos = value
    return seconds + nanos / 1e9


def _cluster(buf: bytes) -> ClusterLoad:
    # ClusterStats: cluster_name 1, upstream_locality_stats 2, load_report_interval 4;
    # UpstreamLocalityStats.upstream_endpoint_stats = 7.
    name, interval, endpoints = "", 0.0, []
    for number, value in fields(buf):
        if number == 1 and isinstance(value, bytes):
            name = value.decode("utf-8", "replace")
        elif number == 4 and isinstance(value, bytes):
            interval = _duration(value)
        elif number == 2 and isinstance(value, bytes):
            endpoints += [_endpoint(v) for n, v in fields(value)
                          if n == 7 and isinstance(v, bytes)]
    return ClusterLoad(name, interval, tuple(endpoints))


def decode_load_stats(raw: bytes) -> tuple[bytes, list[ClusterLoad]]:
    """A LoadStatsRequest: its node's bytes (b"" when absent) and its cluster stats."""
    node, clusters = b"", []
    for number, value in fields(raw):
        if number == 1 and isinstance(value, bytes):
            node = value
        elif number == 2 and isinstance(value, bytes):
            clusters.append(_cluster(value))
    return node, clusters


def load_stats_response(interval_s: float) -> bytes:
    return bytes(lrs_v3.LoadStatsResponse(
        send_all_clusters=True,
        load_reporting_interval=datetime.timedelta(seconds=interval_s),
        report_endpoint_granularity=True,
    ))


# --------------------------------------------------------------------------- the service


class LoadReportingService:
    """Streams of load reports; every decoded report goes to ``sink``."""

    def __init__(self, sink: LoadSink, interval_s: float = 1.0) -> None:
        self.sink = sink
        self.interval_s = interval_s
        self.streams = 0
        self.reports = 0
        self.garbage = 0  # requests that could not be decoded
        self.stopping = False  # set before the server stops
        self._handlers: set[asyncio.Task[Any]] = set()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(LRS_SERVICE, {
            LRS_METHOD: grpc.stream_stream_rpc_method_handler(self._stream),
        })

    async def close(self, timeout: float = 0.5) -> None:
        """Ends every open stream (before the server stops; see ``end_streams``)."""
        self.stopping = True
        await end_streams(self._handlers, timeout)

    async def _stream(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        node_id = ""
        self.streams += 1
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            async for raw in requests:
                try:
                    node, clusters = decode_load_stats(raw)
                    if not node_id:
                        node_id = wire_pb2.NodeView.FromString(node).id if node else ""
                        yield load_stats_response(self.interval_s)
                except (WireError, ValueError, DecodeError) as exc:
                    self.garbage += 1
                    log.warning("load report from %s: %s", node_id or "?", exc)
                    continue
                self.reports += 1
                if clusters and node_id:
                    self.sink(node_id, clusters)
        except asyncio.CancelledError:
            # ``close`` ends the stream this way before the server stops.
            if not self.stopping:
                raise
        finally:
            self.streams -= 1
            if task is not None:
                self._handlers.discard(task)

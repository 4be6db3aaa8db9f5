"""Simulated ADS clients for the convergence benchmark (``bench.xds_convergence``).

One process, one asyncio loop, N aggregated xDS streams multiplexed over a few
gRPC channels. Each stream behaves like an Envoy configured with
``set_node_on_first_message_only``: it sends a small ``Node`` once, asks for all
clusters and listeners (wildcard), then for the ClusterLoadAssignment of every
cluster it received and the route configuration of every listener, and ACKs
every response with its nonce, version and the names it holds.

The client side is kept cheap on purpose (it shares the machine with the
control plane): responses are parsed with the wire views of ``xds._wire``
(resources stay opaque bytes), and resource names are read once per distinct
resource and shared by every stream.

Protocol with the harness (line-oriented, one JSON object per line):

stdin
  ``{"cmd": "mark", "id": K, "type": "route"|"endpoint"|...}``
      remember, per stream, how many responses of that type it has seen; report
      when every stream has ACKed a newer one.
  ``{"cmd": "stats"}``  report this process's CPU time.
  ``{"cmd": "quit"}``   close every stream and exit.
stdout
  ``{"event": "synced", "t_start": ..., "t_synced": ..., "streams": N,
  "first_push": [seconds, ...], "t_first_open": ..., "t_last_open": ...}``
      once every stream has ACKed a response of all four types; ``first_push``:
      per stream, from opening it to its first response (how long the control
      plane took to admit it when all connect at once); ``t_first_open`` and
      ``t_last_open``: when the first and the last stream was opened (all
      streams open together: a connect storm).
  ``{"event": "converged", "id": K, "acks": [t, ...], "missing": M}``
      ``acks``: per stream, the wall time (``time.time()``) at which it sent
      the ACK of the first response of that type after the mark.
  ``{"event": "marked", "id": K}``  the mark is in place (write the change now).
  ``{"event": "stats", "cpu_s": ...}``
  ``{"event": "error", "message": ...}``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import grpc

from controlplane import gcpolicy
from xds._wire import wire_pb2
from xds.sharing import nonce_field

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
SOTW_PATH = f"/{ADS_SERVICE}/StreamAggregatedResources"
DELTA_PATH = f"/{ADS_SERVICE}/DeltaAggregatedResources"

_PREFIX = "type.googleapis.com/"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
TYPES = {"cluster": CLUSTER, "endpoint": ENDPOINT, "listener": LISTENER, "route": ROUTE}
ALL_TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def field1_string(message: bytes) -> str:
    """Field 1 (``name`` of a Cluster/Listener/ClusterLoadAssignment) of a message."""
    pos = 0
    end = len(message)
    while pos < end:
        key, pos = _varint(message, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(message, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(message, pos)
            if number == 1:
                return message[pos : pos + length].decode()
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return ""


# Resource bytes → name, shared by every stream (each resource version is
# parsed once in this process, as the control plane serializes it once).
_NAMES: dict[bytes, str] = {}


def sotw_name(any_bytes: bytes) -> str:
    name = _NAMES.get(any_bytes)
    if name is None:
        name = field1_string(wire_pb2.AnyView.FromString(any_bytes).value)
        _NAMES[any_bytes] = name
    return name


def delta_name(resource_bytes: bytes) -> str:
    name = _NAMES.get(resource_bytes)
    if name is None:
        name = wire_pb2.ResourceView.FromString(resource_bytes).name
        _NAMES[resource_bytes] = name
    return name


# (type, version, id(names)) → (names, request without nonce); names are shared lists
# (``shared_names``), so streams in one state hit one entry.
_ACK_BODIES: dict[tuple[str, str, int], tuple[list[str], bytes]] = {}
_NAME_LISTS: dict[tuple[str, ...], list[str]] = {}
NO_NAMES: list[str] = []  # wildcard subscriptions (CDS, LDS)


def shared_names(names: list[str]) -> list[str]:
    """One list object per distinct subscription (never mutated by a stream)."""
    key = tuple(names)
    found = _NAME_LISTS.get(key)
    if found is None:
        if len(_NAME_LISTS) > 4096:
            _NAME_LISTS.clear()
        found = _NAME_LISTS[key] = names
    return found


def route_for_listener(listener: str) -> str:
    # Sluice names a service's listener "<service>/listener" and its route
    # configuration "<service>/routes" (controlplane.model).
    return listener.rsplit("/", 1)[0] + "/routes"


class Mark:
    def __init__(self, mark_id: int, type_url: str, pending: int) -> None:
        self.id = mark_id
        self.type_url = type_url
        self.pending = pending
        self.acks: list[float | None] = []


class Fleet:
    """Shared bookkeeping for all streams; the harness talks to it."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.unsynced = count
        self.t_start = time.time()
        self.mark: Mark | None = None
        self.streams: list[Stream] = []
        self.synced_event = asyncio.Event()

    def emit(self, obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def stream_synced(self) -> None:
        self.unsynced -= 1
        if self.unsynced == 0:
            self.emit(
                {
                    "event": "synced",
                    "t_start": self.t_start,
                    "t_synced": time.time(),
                    "streams": self.count,
                    "first_push": [s.t_first - s.t_opened for s in self.streams],
                    # The storm's spread: when the first and the last stream opened.
                    "t_first_open": min(s.t_opened for s in self.streams),
                    "t_last_open": max(s.t_opened for s in self.streams),
                }
            )
            self.synced_event.set()

    def start_mark(self, mark_id: int, type_url: str) -> None:
        mark = Mark(mark_id, type_url, len(self.streams))
        mark.acks = [None] * len(self.streams)
        for s in self.streams:
            s.mark_base = s.counts[type_url]
        self.mark = mark
        self.emit({"event": "marked", "id": mark_id})

    def stream_acked(self, stream: Stream, type_url: str, t: float) -> None:
        mark = self.mark
        if mark is None or type_url != mark.type_url:
            return
        if mark.acks[stream.index] is None and stream.counts[type_url] > stream.mark_base:
            mark.acks[stream.index] = t
            mark.pending -= 1
            if mark.pending == 0:
                self.finish_mark()

    def finish_mark(self) -> None:
        mark = self.mark
        if mark is None:
            return
        self.mark = None
        acks = [a for a in mark.acks if a is not None]
        self.emit(
            {
                "event": "converged",
                "id": mark.id,
                "acks": acks,
                "missing": len(mark.acks) - len(acks),
            }
        )


class Stream:
    def __init__(self, fleet: Fleet, index: int, node_id: str, delta: bool) -> None:
        self.fleet = fleet
        self.index = index
        self.node = wire_pb2.NodeView(
            id=node_id,
            cluster="bench",
            user_agent_name="sluice-bench",
            user_agent_version="1",
        ).SerializeToString()
        self.delta = delta
        self.counts = dict.fromkeys(ALL_TYPES, 0)
        self.mark_base = 0
        self.synced = False
        # SotW: per type the last version/nonce received and the names we hold.
        self.version: dict[str, str] = {}
        self.nonce: dict[str, str] = {}
        self.names: dict[str, list[str]] = {ENDPOINT: [], ROUTE: []}
        # Delta: per type the set of resource names held.
        self.held: dict[str, set[str]] = {t: set() for t in ALL_TYPES}
        self.call: Any = None
        self.sent_node = False
        self.t_opened = 0.0
        self.t_first = 0.0

    # -- requests -----------------------------------------------------------

    def _node(self) -> bytes:
        if self.sent_node:
            return b""
        self.sent_node = True
        return self.node

    def sotw_request(self, type_url: str, names: list[str], ack: bool = True) -> bytes:
        if ack and self.sent_node:
            # Streams in one state send the same ACK but for the nonce: encode the
            # rest once per (type, version, names) and append the nonce (field 5
            # comes last, as protobuf writers order fields).
            version = self.version.get(type_url, "")
            key = (type_url, version, id(names))
            found = _ACK_BODIES.get(key)
            if found is None or found[0] is not names:
                body = wire_pb2.DiscoveryRequestView(
                    version_info=version, resource_names=names, type_url=type_url
                ).SerializeToString()
                if len(_ACK_BODIES) > 4096:
                    _ACK_BODIES.clear()
                found = _ACK_BODIES[key] = (names, body)
            return found[1] + nonce_field(self.nonce.get(type_url, ""))
        msg = wire_pb2.DiscoveryRequestView(
            version_info=self.version.get(type_url, "") if ack else "",
            resource_names=names,
            type_url=type_url,
            response_nonce=self.nonce.get(type_url, "") if ack else "",
        )
        node = self._node()
        if node:
            msg.node = node
        return msg.SerializeToString()

    def delta_request(
        self,
        type_url: str,
        nonce: str = "",
        subscribe: list[str] | None = None,
        unsubscribe: list[str] | None = None,
    ) -> bytes:
        msg = wire_pb2.DeltaDiscoveryRequestView(
            type_url=type_url,
            response_nonce=nonce,
            resource_names_subscribe=subscribe or [],
            resource_names_unsubscribe=unsubscribe or [],
        )
        node = self._node()
        if node:
            msg.node = node
        return msg.SerializeToString()

    # -- the stream ---------------------------------------------------------

    async def run(self, channel: grpc.aio.Channel) -> None:
        path = DELTA_PATH if self.delta else SOTW_PATH
        method = channel.stream_stream(path)  # bytes in, bytes out
        self.call = call = method()
        self.t_opened = time.time()
        if self.delta:
            await call.write(self.delta_request(CLUSTER))
            await call.write(self.delta_request(LISTENER))
        else:
            await call.write(self.sotw_request(CLUSTER, NO_NAMES))
            await call.write(self.sotw_request(LISTENER, NO_NAMES))
        while True:
            raw = await call.read()
            if raw is grpc.aio.EOF:
                return
            if self.delta:
                type_url = await self.on_delta(call, raw)
            else:
                type_url = await self.on_sotw(call, raw)
            t = time.time()
            if not self.t_first:
                self.t_first = t
            self.counts[type_url] += 1
            if not self.synced and all(self.counts.values()):
                self.synced = True
                self.fleet.stream_synced()
            self.fleet.stream_acked(self, type_url, t)

    async def on_sotw(self, call: Any, raw: bytes) -> str:
        resp = wire_pb2.DiscoveryResponseView.FromString(raw)
        type_url = resp.type_url
        self.version[type_url] = resp.version_info
        self.nonce[type_url] = resp.nonce
        if type_url == CLUSTER:
            wanted = sorted(sotw_name(r) for r in resp.resources)
            await call.write(self.sotw_request(CLUSTER, NO_NAMES))
            if wanted != self.names[ENDPOINT]:
                self.names[ENDPOINT] = wanted = shared_names(wanted)
                await call.write(self.sotw_request(ENDPOINT, wanted))
        elif type_url == LISTENER:
            wanted = sorted(route_for_listener(sotw_name(r)) for r in resp.resources)
            await call.write(self.sotw_request(LISTENER, NO_NAMES))
            if wanted != self.names[ROUTE]:
                self.names[ROUTE] = wanted = shared_names(wanted)
                await call.write(self.sotw_request(ROUTE, wanted))
        else:
            await call.write(self.sotw_request(type_url, self.names[type_url]))
        return type_url

    async def on_delta(self, call: Any, raw: bytes) -> str:
        resp = wire_pb2.DeltaDiscoveryResponseView.FromString(raw)
        type_url = resp.type_url
        held = self.held[type_url]
        for r in resp.resources:
            held.add(delta_name(r))
        held.difference_update(resp.removed_resources)
        await call.write(self.delta_request(type_url, nonce=resp.nonce))
        if type_url in (CLUSTER, LISTENER):
            child = ENDPOINT if type_url == CLUSTER else ROUTE
            wanted = set(held) if type_url == CLUSTER else {route_for_listener(n) for n in held}
            have = set(self.names[child])
            add, drop = sorted(wanted - have), sorted(have - wanted)
            if add or drop:
                self.names[child] = sorted(wanted)
                await call.write(self.delta_request(child, subscribe=add, unsubscribe=drop))
        return type_url


async def read_commands(fleet: Fleet, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while not stop.is_set():
        line = await reader.readline()
        if not line:
            stop.set()
            return
        try:
            cmd = json.loads(line)
        except ValueError:
            fleet.emit({"event": "error", "message": f"bad command {line!r}"})
            continue
        what = cmd.get("cmd")
        if what == "mark":
            fleet.start_mark(int(cmd["id"]), TYPES[cmd["type"]])
        elif what == "finish":
            fleet.finish_mark()  # report what arrived so far (the harness timed out)
        elif what == "stats":
            t = os.times()
            fleet.emit({"event": "stats", "cpu_s": t.user + t.system})
        elif what == "quit":
            stop.set()
            return


async def main_async(args: argparse.Namespace) -> int:
    # The fleet's state is one large heap, as the control plane's: the same
    # collector thresholds keep full collections from stalling both on 2 shared cores.
    gcpolicy.configure()
    fleet = Fleet(args.clients)
    channels = []
    per = max(1, args.per_channel)
    for _ in range((args.clients + per - 1) // per):
        channels.append(
            grpc.aio.insecure_channel(
                args.xds_address,
                options=[
                    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
                    # Separate TCP connections per channel, as separate proxies would.
                    ("grpc.use_local_subchannel_pool", 1),
                ],
            )
        )
    stop = asyncio.Event()
    tasks = []
    for i in range(args.clients):
        s = Stream(fleet, i, f"{args.id_prefix}-{i:05d}", args.delta)
        fleet.streams.append(s)
    for s in fleet.streams:
        tasks.append(asyncio.create_task(s.run(channels[s.index // per])))
    commands = asyncio.create_task(read_commands(fleet, stop))
    waiter = asyncio.create_task(stop.wait())
    try:
        pending = set(tasks) | {waiter}
        while not stop.is_set():
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is waiter:
                    continue
                exc = task.exception()
                if exc is not None and not stop.is_set():
                    fleet.emit({"event": "error", "message": f"stream ended: {exc!r}"})
                    stop.set()
            if not (pending - {waiter}):
                break
    finally:
        for s in fleet.streams:
            if s.call is not None:
                s.call.cancel()
        for task in tasks:
            task.cancel()
        commands.cancel()
        waiter.cancel()
        await asyncio.gather(*tasks, commands, waiter, return_exceptions=True)
        for channel in channels:
            await channel.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ads_clients")
    parser.add_argument("--xds-address", required=True, metavar="HOST:PORT")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--per-channel", type=int, default=50, help="streams per gRPC channel")
    parser.add_argument("--delta", action="store_true", help="Delta ADS instead of SotW")
    parser.add_argument("--id-prefix", default="sim")
    args = parser.parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())

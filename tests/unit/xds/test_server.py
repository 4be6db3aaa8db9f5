"""The gRPC edge, in-process: bad clients end alone, state is released,
bytes are shared between streams, the node is read from the first request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from tests.unit.xds.worlds import C, E, world
from xds._wire import wire_pb2 as w
from xds.cache import SnapshotCache
from xds.server import ADS_SERVICE, DELTA_METHOD, SOTW_METHOD, XdsServer

SOTW = f"/{ADS_SERVICE}/{SOTW_METHOD}"
DELTA = f"/{ADS_SERVICE}/{DELTA_METHOD}"
NODE = w.NodeView(id="proxy-1", cluster="test").SerializeToString()


def sotw_request(type_url: str, nonce: str = "", node: bytes = b"", **kw: object) -> bytes:
    return w.DiscoveryRequestView(
        type_url=type_url,
        response_nonce=nonce,
        node=node,
        **kw,  # type: ignore[arg-type]
    ).SerializeToString()


class Client:
    """A raw ADS stream: write bytes, read decoded response views."""

    def __init__(self, channel: grpc.aio.Channel, method: str = SOTW) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        call = channel.stream_stream(method)

        async def requests() -> AsyncIterator[bytes]:
            while (item := await self.queue.get()) is not None:
                yield item

        self.call = call(requests())

    async def send(self, raw: bytes) -> None:
        await self.queue.put(raw)

    async def recv(self) -> w.DiscoveryResponseView:
        raw = await asyncio.wait_for(self.call.read(), 5)
        assert raw is not grpc.aio.EOF
        return w.DiscoveryResponseView.FromString(raw)

    async def status(self) -> grpc.StatusCode:
        return await asyncio.wait_for(self.call.code(), 5)  # type: ignore[no-any-return]


async def connected_and_acked(
    channel: grpc.aio.Channel,
) -> tuple[Client, w.DiscoveryResponseView]:
    """A SotW stream that received the clusters and ACKed them."""
    client = Client(channel)
    await client.send(sotw_request(C, node=NODE))
    cds = await client.recv()
    await client.send(sotw_request(C, nonce=cds.nonce, version_info=cds.version_info))
    return client, cds


@pytest.fixture
async def served() -> AsyncIterator[tuple[XdsServer, grpc.aio.Channel]]:
    cache = SnapshotCache()
    cache.set(world({"chat/v1": "c1", "chat/v2": "c2"}, {"chat": {"chat/v1": 90, "chat/v2": 10}}))
    server = XdsServer(cache)
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield server, channel
    await channel.close()
    await server.stop(0)


async def wait_streams(server: XdsServer, count: int) -> None:
    for _ in range(200):
        if server.active_streams == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{server.active_streams} streams open, expected {count}")


async def test_garbage_ends_only_that_stream_and_releases_its_state(
    served: tuple[XdsServer, grpc.aio.Channel],
) -> None:
    server, channel = served
    good = Client(channel)
    await good.send(sotw_request(C, node=NODE))
    first = await good.recv()
    assert len(first.resources) == 2
    bad = Client(channel)
    await bad.send(b"\xff\xff\xff not protobuf")
    assert await bad.status() == grpc.StatusCode.INVALID_ARGUMENT
    await wait_streams(server, 1)
    # the good stream carries on: an EDS request is still answered
    await good.send(sotw_request(E, resource_names=["chat/v1"]))
    eds = await good.recv()
    assert eds.type_url == E
    await good.queue.put(None)
    await wait_streams(server, 0)
    assert server.cache.subscriber_count == 0
    assert server.proxies == {}


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (sotw_request("type.googleapis.com/not.a.Type", node=NODE), "unsupported"),
        (sotw_request("", node=NODE), "type_url"),
        (sotw_request(C), "node.id"),
    ],
)
async def test_protocol_violations_end_the_stream_with_invalid_argument(
    served: tuple[XdsServer, grpc.aio.Channel], raw: bytes, why: str
) -> None:
    server, channel = served
    client = Client(channel)
    await client.send(raw)
    assert await client.status() == grpc.StatusCode.INVALID_ARGUMENT
    assert why in (await client.call.details() or "")
    await wait_streams(server, 0)


async def test_client_vanishing_mid_stream_releases_state(
    served: tuple[XdsServer, grpc.aio.Channel],
) -> None:
    server, channel = served
    clients = [Client(channel) for _ in range(5)]
    for i, client in enumerate(clients):
        node = w.NodeView(id=f"p{i}").SerializeToString()
        await client.send(sotw_request(C, node=node))
        await client.recv()
    await wait_streams(server, 5)
    assert server.cache.subscriber_count == 5
    for client in clients:
        client.call.cancel()
    await wait_streams(server, 0)
    assert server.cache.subscriber_count == 0
    assert server.proxies == {}


async def test_rule12_node_is_read_from_the_first_request_only(
    served: tuple[XdsServer, grpc.aio.Channel],
) -> None:
    server, channel = served
    client, _ = await connected_and_acked(channel)
    await client.send(sotw_request(E, resource_names=["chat/v1"]))  # no node: fine
    eds = await client.recv()
    assert eds.type_url == E
    [info] = server.proxies.values()
    assert (info.node_id, info.node_cluster) == ("proxy-1", "test")
    await client.queue.put(None)


async def test_every_stream_gets_the_same_preserialized_bytes(
    served: tuple[XdsServer, grpc.aio.Channel],
) -> None:
    server, channel = served
    seen = []
    for i in range(3):
        client = Client(channel)
        await client.send(sotw_request(C, node=w.NodeView(id=f"p{i}").SerializeToString()))
        seen.append(list((await client.recv()).resources))
        await client.queue.put(None)
    assert seen[0] == seen[1] == seen[2]
    snapshot = server.cache.snapshot
    assert seen[0] == [r.any_bytes for r in snapshot.resources(C).values()]


async def test_new_snapshot_reaches_open_streams(
    served: tuple[XdsServer, grpc.aio.Channel],
) -> None:
    server, channel = served
    client, cds = await connected_and_acked(channel)
    await asyncio.sleep(0.05)
    server.cache.set(world({"chat/v1": "c1", "chat/v2": "c2", "chat/v3": "c3"}, {}))
    update = await client.recv()
    assert len(update.resources) == 3 and update.version_info != cds.version_info
    await client.queue.put(None)


async def test_delta_stream_answers_and_rejects_garbage(
    served: tuple[XdsServer, grpc.aio.Channel],
) -> None:
    server, channel = served
    client = Client(channel, DELTA)
    await client.send(w.DeltaDiscoveryRequestView(node=NODE, type_url=C).SerializeToString())
    raw = await asyncio.wait_for(client.call.read(), 5)
    response = w.DeltaDiscoveryResponseView.FromString(raw)
    names = sorted(w.ResourceView.FromString(r).name for r in response.resources)
    assert names == ["chat/v1", "chat/v2"]
    await client.send(b"\x0a\xff")  # truncated length-delimited field
    assert await client.status() == grpc.StatusCode.INVALID_ARGUMENT
    await wait_streams(server, 0)


async def test_no_answer_before_the_first_snapshot_then_answers_in_order() -> None:
    """A proxy that reconnects to a control plane that has just started is not told
    that every resource is gone: it waits for the first snapshot of loaded config."""
    cache = SnapshotCache()
    server = XdsServer(cache)
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        sotw, delta = Client(channel), Client(channel, DELTA)
        await sotw.send(sotw_request(C, node=NODE))
        await delta.send(w.DeltaDiscoveryRequestView(type_url=C, node=NODE).SerializeToString())
        await wait_streams(server, 2)
        first = asyncio.ensure_future(sotw.call.read())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(first), 0.3)
        cache.set(world({"chat/v1": "c1"}, {"chat": {"chat/v1": 100}}))
        cds = w.DiscoveryResponseView.FromString(await asyncio.wait_for(first, 5))
        assert cds.type_url == C and len(cds.resources) == 1
        raw = await asyncio.wait_for(delta.call.read(), 5)
        assert len(w.DeltaDiscoveryResponseView.FromString(raw).resources) == 1
    finally:
        await channel.close()
        await server.stop(0)


def test_the_first_install_makes_the_cache_ready_even_when_empty() -> None:
    cache = SnapshotCache()
    heard: list[object] = []
    cache.subscribe(heard.append)
    assert not cache.ready
    assert cache.set(cache.snapshot) is False  # same version as the empty start ...
    assert cache.ready and len(heard) == 1  # ... but now it is configuration, and told
    assert cache.set(cache.snapshot) is False and len(heard) == 1

"""mTLS on the xDS port and per-stream limits: who may ask, and how much."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.unit.xds.certs import Authority, Issued
from tests.unit.xds.test_server import Client, sotw_request, wait_streams
from tests.unit.xds.worlds import C, world
from xds._wire import wire_pb2 as w
from xds.cache import SnapshotCache
from xds.limits import StreamLimits
from xds.server import NullObserver, XdsServer
from xds.tls import TlsFiles, authorize, peer_names


def node(node_id: str) -> bytes:
    return w.NodeView(id=node_id, cluster="test").SerializeToString()


class Pki:
    def __init__(self, tmp: Path) -> None:
        self.ca = Authority(tmp, "ca")
        self.other = Authority(tmp, "other-ca")
        self.server = self.ca.issue("server", dns=("localhost",))
        files = tmp / "live"
        files.mkdir()
        self.live = TlsFiles(str(files / "server.crt"), str(files / "server.key"),
                             str(files / "client-ca.crt"))
        self.install(self.server, self.ca.path)

    def install(self, server: Issued, client_ca: Path) -> None:
        shutil.copy(server.cert, self.live.cert)
        shutil.copy(server.key, self.live.key)
        assert self.live.client_ca is not None
        shutil.copy(client_ca, self.live.client_ca)


def channel(port: int, ca: Path, client: Issued | None) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None)
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", creds,
                                   options=[("grpc.ssl_target_name_override", "localhost")])


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[XdsServer, int, Pki]]:
    pki = Pki(tmp_path)
    cache = SnapshotCache()
    cache.set(world({"chat/v1": "c1"}, {"chat": {"chat/v1": 100}}))
    server = XdsServer(cache, tls=pki.live)
    port = await server.start("127.0.0.1:0")
    yield server, port, pki
    await server.stop(0)


async def ask(ch: grpc.aio.Channel, node_id: str) -> tuple[grpc.StatusCode | None, Client]:
    client = Client(ch)
    await client.send(sotw_request(C, node=node(node_id)))
    try:
        await client.recv()
    except (grpc.aio.AioRpcError, AssertionError):
        return await client.status(), client
    return None, client


async def test_a_proxy_asks_only_as_the_node_its_certificate_names(tls_server) -> None:  # type: ignore[no-untyped-def]
    _, port, pki = tls_server
    cert = pki.ca.issue("a", dns=("node-a",))
    async with channel(port, pki.ca.path, cert) as ch:
        assert (await ask(ch, "node-a"))[0] is None
        assert (await ask(ch, "node-b"))[0] is grpc.StatusCode.PERMISSION_DENIED
    spiffe = pki.ca.issue("s", uris=("spiffe://example.org/ns/llm/sa/gw/node-s",))
    async with channel(port, pki.ca.path, spiffe) as ch:
        assert (await ask(ch, "node-s"))[0] is None


@pytest.mark.parametrize("who", ["no certificate", "another CA", "expired"])
async def test_clients_without_a_valid_certificate_are_refused(tls_server, who: str) -> None:  # type: ignore[no-untyped-def]
    _, port, pki = tls_server
    client = {"no certificate": None, "another CA": pki.other.issue("x", dns=("node-a",)),
              "expired": pki.ca.issue("old", dns=("node-a",), expired=True)}[who]
    async with channel(port, pki.ca.path, client) as ch:
        status, _ = await ask(ch, "node-a")
        assert status is grpc.StatusCode.UNAVAILABLE


async def test_rotated_files_apply_to_new_streams_and_old_ones_keep_working(
        tls_server) -> None:  # type: ignore[no-untyped-def]
    server, port, pki = tls_server
    old_client = pki.ca.issue("a", dns=("node-a",))
    async with channel(port, pki.ca.path, old_client) as old:
        status, stream = await ask(old, "node-a")
        assert status is None
        # rotate everything: a new CA signs the server and the clients from now on
        new_ca = Authority(pki.ca.directory, "new-ca")
        pki.install(new_ca.issue("server2", dns=("localhost",)), new_ca.path)
        new_client = new_ca.issue("a2", dns=("node-a",))
        async with channel(port, new_ca.path, new_client) as fresh:
            assert (await ask(fresh, "node-a"))[0] is None
        async with channel(port, pki.ca.path, old_client) as stale:
            assert (await ask(stale, "node-a"))[0] is grpc.StatusCode.UNAVAILABLE
        # the stream opened before the rotation is still served
        await stream.send(sotw_request(C, node=node("node-a")))
        await wait_streams(server, 1)


def test_names_come_from_dns_and_uri_sans() -> None:
    ctx = {"transport_security_type": [b"ssl"],
           "x509_subject_alternative_name": [b"gw-1", b"spiffe://d/ns/x/gw-2"]}
    assert peer_names(ctx) == ["gw-1", "gw-2"]
    assert authorize("gw-2", ctx) is None
    denied = authorize("gw-3", ctx)
    assert denied is not None and "gw-1, gw-2" in denied
    assert authorize("anything", {}) is None  # plaintext: nothing to check


class Errors(NullObserver):
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def stream_error(self, reason: str) -> None:
        self.reasons.append(reason)


async def test_a_stream_that_floods_requests_is_cut_off_and_others_are_not() -> None:
    cache = SnapshotCache()
    cache.set(world({"chat/v1": "c1"}, {"chat": {"chat/v1": 100}}))
    errors = Errors()
    server = XdsServer(cache, observer=errors,
                       limits=StreamLimits(requests_per_s=5, request_burst=10))
    port = await server.start("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            calm = Client(ch)
            await calm.send(sotw_request(C, node=node("calm")))
            await calm.recv()
            flood = Client(ch)
            for _ in range(50):
                await flood.send(sotw_request(C, node=node("flood")))
            # the client may see its own failed writes (INTERNAL) before the server's status
            assert await flood.status() in (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                            grpc.StatusCode.INTERNAL)
            assert errors.reasons == ["RequestRate"]
            await wait_streams(server, 1)
            await calm.send(sotw_request(C, node=node("calm")))  # still served
    finally:
        await server.stop(0)


async def test_too_many_streams_from_one_peer_are_refused() -> None:
    cache = SnapshotCache()
    cache.set(world({"chat/v1": "c1"}, {"chat": {"chat/v1": 100}}))
    server = XdsServer(cache, limits=StreamLimits(max_streams_per_peer=2))
    port = await server.start("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            clients = [Client(ch) for _ in range(2)]
            for i, c in enumerate(clients):
                await c.send(sotw_request(C, node=node(f"n{i}")))
                await c.recv()
            third = Client(ch)
            await third.send(sotw_request(C, node=node("n3")))
            assert await third.status() is grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await server.stop(0)


async def test_an_oversized_request_is_refused() -> None:
    cache = SnapshotCache()
    cache.set(world({"chat/v1": "c1"}, {"chat": {"chat/v1": 100}}))
    server = XdsServer(cache, limits=StreamLimits(max_message_bytes=1024))
    port = await server.start("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            big = Client(ch)
            await big.send(sotw_request(C, node=node("x" * 4000)))
            assert await big.status() is grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await server.stop(0)

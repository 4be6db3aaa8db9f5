"""A reconnect storm, in-process: every stream that arrives at once is admitted
and gets its first push; none is dropped while it waits to be admitted.

grpc.aio takes one incoming call from gRPC core per turn of the event loop, so
streams that arrive together wait in core's queue of calls the application has
not picked up yet. With core's defaults a queue of more than 1,000 calls loses
some of them (CANCELLED, nothing logged); ``XdsServer`` sizes that queue for a
fleet (see ``xds.limits.AdmissionQueue``). Here every stream is opened before
the event loop gets back to the server, so all of them queue at once.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from tests.unit.xds.worlds import C, world
from xds._wire import wire_pb2 as w
from xds.cache import SnapshotCache
from xds.limits import AdmissionQueue
from xds.server import ADS_SERVICE, SOTW_METHOD, XdsServer

SOTW = f"/{ADS_SERVICE}/{SOTW_METHOD}"
STREAMS = 1_500  # more than gRPC core's default queue (1,000) lets through
PER_CHANNEL = 100
GUARD_S = 120.0  # a hang guard, not a timing assertion


def first_request(i: int) -> bytes:
    node = w.NodeView(id=f"proxy-{i:04d}", cluster="storm").SerializeToString()
    return w.DiscoveryRequestView(type_url=C, node=node).SerializeToString()


async def test_streams_arriving_at_once_all_get_their_first_push() -> None:
    cache = SnapshotCache()
    cache.set(world({"chat/v1": "c1", "chat/v2": "c2"}, {"chat": {"chat/v1": 90, "chat/v2": 10}}))
    server = XdsServer(cache)
    port = await server.start("127.0.0.1:0")
    channels = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(STREAMS // PER_CHANNEL)
    ]
    calls = [channels[i // PER_CHANNEL].stream_stream(SOTW)() for i in range(STREAMS)]
    settled = asyncio.Event()  # every stream has its first push or has failed
    left = STREAMS

    async def first_push(i: int) -> str:
        call = calls[i]
        try:
            await call.write(first_request(i))
            raw = await call.read()
        except grpc.aio.AioRpcError as exc:
            # a stream the server dropped: the read ends CANCELLED, or the
            # write fails first (INTERNAL, "Internal error from Core")
            return f"stream {i}: {exc.code().name} {exc.details()!r}"
        if raw is grpc.aio.EOF:
            return f"stream {i}: ended by the server ({(await call.code()).name})"
        response = w.DiscoveryResponseView.FromString(raw)
        if response.type_url != C or len(response.resources) != 2:
            got = f"{response.type_url} x{len(response.resources)}"
            return f"stream {i}: unexpected first push {got}"
        return "ok"

    async def one(i: int) -> str:
        nonlocal left
        outcome = await first_push(i)
        left -= 1
        if left == 0:
            settled.set()
        await settled.wait()  # keep it open: the storm is concurrent streams
        return outcome

    try:
        # All tasks start in the same turn of the loop: the streams are on the
        # wire before the server has had more than a few turns to admit any.
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(one(i) for i in range(STREAMS))), GUARD_S
        )
        failures = [o for o in outcomes if o != "ok"]
        assert failures == [], f"{len(failures)} of {STREAMS} streams failed: {failures[:5]}"
        assert len(server.proxies) == STREAMS
    finally:
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close()
        await server.stop(0)


def test_admission_queue_channel_args_replace_cores_dropping_defaults() -> None:
    queue = AdmissionQueue(max_streams=5_000, max_wait_s=90)
    args = dict(queue.channel_args())
    # soft limit == hard limit: no random early drop below the bound
    assert args["grpc.server.max_pending_requests"] == 5_000
    assert args["grpc.server.max_pending_requests_hard_limit"] == 5_000
    assert args["grpc.server_max_unrequested_time_in_server"] == 90


@pytest.mark.parametrize(("streams", "wait"), [(0, 60), (10, 0)])
def test_admission_queue_rejects_nonsense(streams: int, wait: int) -> None:
    with pytest.raises(ValueError):
        AdmissionQueue(max_streams=streams, max_wait_s=wait)

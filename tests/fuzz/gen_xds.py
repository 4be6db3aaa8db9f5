"""xDS inputs: DiscoveryRequest / DeltaDiscoveryRequest bytes, well-formed or not.

Requests are built as wire views from parts an Envoy could send (served type
URLs, names the snapshots hold, nonces and versions the stream has sent) mixed
with junk, then serialized, and sometimes damaged byte by byte or replaced by
random bytes. ``SNAPSHOTS`` are small consistent configurations the streams
switch between (clusters appear and vanish, weights change).
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from tests.unit.xds.worlds import world
from xds import typeurls
from xds._wire import wire_pb2 as w
from xds.snapshot import Snapshot

TYPES = (typeurls.CLUSTER, typeurls.ENDPOINT, typeurls.LISTENER, typeurls.ROUTE)
SNAPSHOTS: tuple[Snapshot, ...] = (
    world({"chat/v1": "c1", "chat/v2": "c2"}, {"chat": {"chat/v1": 90, "chat/v2": 10}}),
    world({"chat/v1": "c1", "chat/v2": "c2"}, {"chat": {"chat/v1": 50, "chat/v2": 50}}),
    world({"chat/v1": "c1b", "chat/v3": "c3"}, {"chat": {"chat/v1": 100, "chat/v3": 0}},
          {"chat/v1": "eps-b", "chat/v3": "e3"}),
    world({"chat/v2": "c2"}, {"chat": {"chat/v2": 100}, "other": {"chat/v2": 1}}),
    world({}),
)
NAMES = ("chat/v1", "chat/v2", "chat/v3", "chat", "other", "chat-listener", "other-listener",
         "*", "", "nope")

_text = st.text(max_size=20)


def type_urls() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(TYPES), st.sampled_from(TYPES), st.sampled_from(
        ["", "type.googleapis.com/envoy.config.core.v3.Node", typeurls.CLUSTER + "x"]), _text)


def names() -> st.SearchStrategy[list[str]]:
    return st.lists(st.one_of(st.sampled_from(NAMES), _text), max_size=5)


def node(first: bool) -> st.SearchStrategy[bytes]:
    view = st.builds(
        w.NodeView,
        id=st.sampled_from(["gw-0", "gw-1"]) if first else st.sampled_from(["", "gw-0"]),
        cluster=_text, user_agent_name=st.sampled_from(["envoy", ""]),
        user_agent_version=_text,
    ).map(lambda n: n.SerializeToString())
    return st.one_of(view, st.just(b""), st.binary(max_size=40))


def _error() -> st.SearchStrategy[w.StatusView | None]:
    return st.one_of(st.none(), st.builds(w.StatusView, code=st.integers(-(2**31), 2**31 - 1),
                                          message=st.text(max_size=200)))


def _pick(seen: Sequence[str]) -> st.SearchStrategy[str]:
    options = [st.just(""), _text]
    if seen:
        options += [st.sampled_from(list(seen))] * 3
    return st.one_of(*options)


@st.composite
def sotw_request(draw: st.DrawFn, first: bool, nonces: Sequence[str],
                 versions: Sequence[str]) -> bytes:
    error = draw(_error())
    view = w.DiscoveryRequestView(
        version_info=draw(_pick(versions)),
        node=draw(node(first)) if first or draw(st.booleans()) else b"",
        resource_names=draw(names()),
        type_url=draw(type_urls()),
        response_nonce=draw(_pick(nonces)),
    )
    if error is not None:
        view.error_detail.CopyFrom(error)
    return draw(damaged(view.SerializeToString()))


@st.composite
def delta_request(draw: st.DrawFn, first: bool, nonces: Sequence[str],
                  versions: Sequence[str]) -> bytes:
    error = draw(_error())
    initial = draw(st.dictionaries(st.sampled_from(NAMES), _pick(versions), max_size=4))
    view = w.DeltaDiscoveryRequestView(
        node=draw(node(first)) if first or draw(st.booleans()) else b"",
        type_url=draw(type_urls()),
        resource_names_subscribe=draw(names()),
        resource_names_unsubscribe=draw(names()),
        initial_resource_versions=initial if first or draw(st.booleans()) else {},
        response_nonce=draw(_pick(nonces)),
    )
    if error is not None:
        view.error_detail.CopyFrom(error)
    return draw(damaged(view.SerializeToString()))


@st.composite
def damaged(draw: st.DrawFn, raw: bytes) -> bytes:
    """Mostly ``raw`` as is; sometimes bytes flipped, cut or appended; rarely random bytes."""
    roll = draw(st.integers(0, 19))
    if roll == 0:
        return draw(st.binary(max_size=200))
    if roll > 3:
        return raw
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(["flip", "cut", "append", "insert"]))
        at = draw(st.integers(0, len(data)))
        if edit == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "cut":
            del data[at:at + draw(st.integers(1, 8))]
        elif edit == "append":
            data += draw(st.binary(min_size=1, max_size=16))
        else:
            data[at:at] = draw(st.sampled_from([b"\x0a\xff\xff\xff\xff\x0f", b"\x32\x00",
                                                b"\x22\x05", b"\x80", b"\xff" * 10]))
    return bytes(data)


def wire_bytes() -> st.SearchStrategy[bytes]:
    """Bytes for the wire views alone: requests of either kind, damaged or random."""
    return st.one_of(
        sotw_request(True, ["1", "2"], ["v"]),
        delta_request(True, ["1", "2"], ["v"]),
        st.binary(max_size=300),
        st.integers(1, 200).map(_nested_struct),
    )


def _nested_struct(depth: int) -> bytes:
    """A NodeView whose metadata nests ``depth`` levels of Struct (recursion limits)."""
    inner = b""
    for _ in range(depth):
        # Value{struct_value(5): Struct{fields(1): entry{key(1): "k", value(2): inner}}}
        entry = b"\x0a\x01k" + b"\x12" + _varint(len(inner)) + inner
        struct = b"\x0a" + _varint(len(entry)) + entry
        inner = b"\x2a" + _varint(len(struct)) + struct
    entry = b"\x0a\x01k\x12" + _varint(len(inner)) + inner
    metadata = b"\x0a" + _varint(len(entry)) + entry
    return b"\x0a\x02id\x1a" + _varint(len(metadata)) + metadata


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)

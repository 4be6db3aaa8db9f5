"""Decoding SotW requests through the ACK cache gives what a full decode gives.

Requests are written with their fields in any order, with or without node,
nonce and error detail, and with resource names made of the bytes a nonce
field is made of, so a name can end with what looks like the nonce.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from xds._wire import wire_pb2 as w
from xds.protocol import ErrorDetail, Request
from xds.requests import SotwRequests

TYPES = ("type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
         "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment")
# "*" is the nonce's tag byte, "\x01"-"\x03" its possible lengths.
pieces = st.sampled_from(["a", "b", "*", "\x01", "\x02", "7", "12", "svc/routes"])
texts = st.lists(pieces, max_size=4).map("".join)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, Request, bytes]:
    type_url = draw(st.sampled_from(TYPES))
    version = draw(st.sampled_from(["", "v1", "v2"]))
    names = draw(st.lists(texts, max_size=4))
    nonce = draw(st.sampled_from(["", "7", "12", "*", "\x017"]))
    error = draw(st.none() | st.builds(ErrorDetail, st.integers(0, 16), texts))
    node = draw(st.sampled_from([b"", w.NodeView(id="proxy-1").SerializeToString()]))
    parts = [w.DiscoveryRequestView(type_url=type_url).SerializeToString(),
             w.DiscoveryRequestView(version_info=version).SerializeToString(),
             w.DiscoveryRequestView(response_nonce=nonce).SerializeToString(),
             w.DiscoveryRequestView(node=node).SerializeToString()]
    parts += [w.DiscoveryRequestView(resource_names=[n]).SerializeToString() for n in names]
    if error is not None:
        detail = w.DiscoveryRequestView()
        detail.error_detail.code = error.code
        detail.error_detail.message = error.message
        parts.append(detail.SerializeToString())
    if draw(st.booleans()):
        parts = draw(st.permutations(parts))
    raw = b"".join(parts)
    # What the writer meant, read back in full (repeated names keep wire order).
    view = w.DiscoveryRequestView.FromString(raw)
    meant = Request(type_url, version, tuple(view.resource_names), nonce, error)
    return raw, meant, node


@settings(max_examples=400, deadline=None)
@given(st.lists(requests(), min_size=1, max_size=30), st.integers(1, 8))
def test_cached_decoding_equals_full_decoding(batch: list[tuple[bytes, Request, bytes]],
                                              max_entries: int) -> None:
    decoder = SotwRequests(max_entries=max_entries)
    for _ in range(2):  # the second pass decodes from a warm cache
        for raw, meant, node in batch:
            decoded = decoder.decode(raw)
            assert decoded.request == meant
            assert decoded.request.response_nonce == meant.response_nonce
            assert decoded.node == node
            names = decoded.request.name_set
            assert names is None or names == frozenset(meant.resource_names)


def ack(nonce: str, names: list[str]) -> bytes:
    return w.DiscoveryRequestView(type_url=TYPES[0], version_info="v1", resource_names=names,
                                  response_nonce=nonce).SerializeToString()


def test_acks_that_differ_only_in_nonce_share_one_decoding() -> None:
    shared: list[frozenset[str]] = []

    def canonical(names: frozenset[str]) -> frozenset[str]:
        shared.append(names)
        return names

    decoder = SotwRequests(canonical=canonical)
    names = [f"svc{i:03d}/routes" for i in range(100)]
    first = decoder.decode(ack("1", names)).request
    others = [decoder.decode(ack(str(n), names)).request for n in range(2, 50)]
    assert decoder.misses == 1 and decoder.hits == 48
    assert len(shared) == 1
    assert all(o.name_set is others[0].name_set for o in others)
    assert [o.response_nonce for o in others] == [str(n) for n in range(2, 50)]
    assert first.resource_names == tuple(names)


def test_a_name_that_ends_like_a_nonce_is_never_taken_for_one() -> None:
    # The nonce field comes first; the last name ends with the bytes of that nonce field.
    nonce = w.DiscoveryRequestView(response_nonce="7").SerializeToString()
    name = "x" + nonce.decode()
    raw = nonce + w.DiscoveryRequestView(type_url=TYPES[0], resource_names=[name]
                                         ).SerializeToString()
    decoder = SotwRequests()
    for _ in range(3):
        request = decoder.decode(raw).request
        assert request.resource_names == (name,) and request.response_nonce == "7"
    assert decoder.hits == 0

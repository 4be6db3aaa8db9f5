"""Decoding SotW DiscoveryRequests, with ACKs that repeat one another decoded once.

After a push, every proxy in the same state answers with the same ACK: the same
version, type and resource names (an RDS or EDS subscription often lists a
hundred names), and a nonce of its own. Decoding the names into Python strings
and a set costs more than the rest of handling the ACK, once per proxy.

Proxies (Envoy, gRPC, this project's clients) write fields in field-number order,
so the nonce (field 5) ends the request when no error detail (field 6) follows.
The bytes before it are the key of a small cache of decoded requests; a hit
costs a hash of those bytes. A request is cached only when the bytes before its
nonce decode by themselves to a request without node, nonce or error: then the
request is exactly those fields plus its nonce, whatever the other bytes hold.
Everything else (the first request with its node, NACKs, any other field order)
is decoded in full, as before.

Wire format: https://protobuf.dev/programming-guides/encoding/
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from google.protobuf.message import DecodeError

from xds._wire import wire_pb2
from xds.protocol import ErrorDetail, Request
from xds.sharing import nonce_field  # field 5 in requests as in responses


@dataclass(frozen=True)
class Decoded:
    request: Request
    node: bytes  # the serialized Node, b"" when the request has none


class SotwRequests:
    """Decodes requests; remembers up to ``max_entries`` distinct ACK bodies."""

    def __init__(self, max_entries: int = 4096,
                 canonical: Callable[[frozenset[str]], frozenset[str]] | None = None) -> None:
        self.max_entries = max_entries
        # Maps a name set to the one instance streams share (``xds.sharing.Names``).
        self._canonical = canonical or (lambda names: names)
        self._cache: dict[bytes, Request] = {}
        self.hits = 0
        self.misses = 0

    def decode(self, raw: bytes) -> Decoded:
        view = wire_pb2.DiscoveryRequestView.FromString(raw)
        if view.node or view.HasField("error_detail"):
            return Decoded(_request(view), view.node)
        nonce = view.response_nonce
        suffix = nonce_field(nonce)
        if not raw.endswith(suffix):
            return Decoded(_request(view), b"")
        body = raw[: len(raw) - len(suffix)] if suffix else raw
        cached = self._cache.get(body)
        if cached is not None:
            self.hits += 1
            if nonce:
                cached = Request(cached.type_url, cached.version_info, cached.resource_names,
                                 nonce, None, cached.name_set)
            return Decoded(cached, b"")
        self.misses += 1
        request = _request(view)
        if not suffix or _body_alone(body, request):
            if len(self._cache) >= self.max_entries:
                self._cache.clear()  # a new push makes the old bodies useless anyway
            shared = request.name_set
            if shared is not None:
                shared = self._canonical(shared)
            self._cache[body] = Request(request.type_url, request.version_info,
                                        request.resource_names, "", None, shared)
        return Decoded(request, b"")


def _body_alone(body: bytes, request: Request) -> bool:
    """Whether ``body`` decodes to ``request`` without its nonce (see module doc)."""
    try:
        alone = wire_pb2.DiscoveryRequestView.FromString(body)
    except DecodeError:  # ends inside a field: the nonce bytes were part of it
        return False
    if alone.response_nonce or alone.node or alone.HasField("error_detail"):
        return False
    return _request(alone) == replace(request, response_nonce="")


def _request(view: wire_pb2.DiscoveryRequestView) -> Request:
    error = view.error_detail if view.HasField("error_detail") else None
    names = tuple(view.resource_names)
    return Request(
        view.type_url,
        view.version_info,
        names,
        view.response_nonce,
        ErrorDetail(error.code, error.message) if error is not None else None,
        frozenset(names),
    )

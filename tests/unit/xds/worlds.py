"""Synthetic snapshots and an Envoy-like client for the stream-machine tests."""

from __future__ import annotations

from collections.abc import Mapping

from xds import typeurls
from xds.cache import encode
from xds.protocol import Request, Response
from xds.snapshot import Resource, Snapshot

C, E, L, R = typeurls.CLUSTER, typeurls.ENDPOINT, typeurls.LISTENER, typeurls.ROUTE


def res(type_url: str, name: str, body: str, refs: frozenset[str] = frozenset()) -> Resource:
    return encode(type_url, name, body.encode(), refs)


def world(
    clusters: Mapping[str, str],
    routes: Mapping[str, Mapping[str, int]] | None = None,
    endpoints: Mapping[str, str] | None = None,
) -> Snapshot:
    """clusters: name → body; routes: route name → {cluster: weight}; one
    listener per route; endpoints default to one body per cluster."""
    routes = routes or {}
    endpoints = endpoints if endpoints is not None else {c: f"eps-{c}" for c in clusters}
    return Snapshot.of(
        {
            C: [res(C, n, b, frozenset({n})) for n, b in clusters.items()],
            E: [res(E, n, b) for n, b in endpoints.items()],
            L: [res(L, f"{r}-listener", r, frozenset({r})) for r in routes],
            R: [res(R, r, repr(sorted(w.items())), frozenset(w)) for r, w in routes.items()],
        }
    )


def ack(resp: Response, names: tuple[str, ...] = ()) -> Request:
    return Request(resp.type_url, resp.version_info, names, resp.nonce)


def by_type(responses: list[Response]) -> dict[str, Response]:
    out: dict[str, Response] = {}
    for r in responses:
        assert r.type_url not in out, "one response per type per step"
        out[r.type_url] = r
    return out


def names(resp: Response) -> list[str]:
    return [r.name for r in resp.resources]

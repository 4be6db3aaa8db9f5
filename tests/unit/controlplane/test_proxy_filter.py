"""GET /api/v1/proxies filters: parsing the query, and which streams' rows are kept."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.proxy_rows import MAX_LIMIT, ProxyFilter, parse_filter, proxy_rows
from tests.unit.xds.worlds import C, world
from xds.protocol import Request, SotwStream
from xds.server import ProxyInfo

SNAPSHOT = world({"a": "1"})


def stream(node: str, cluster: str, synced: bool, stream_id: int) -> ProxyInfo:
    machine = SotwStream(SNAPSHOT)
    [response] = machine.on_request(Request(C), 0.0)
    if synced:
        machine.on_request(Request(C, response.version_info, (), response.nonce), 0.0)
    return ProxyInfo(stream_id, node, cluster, "test/1", "sotw", 0.0, machine)


FLEET = [stream(f"n{i}", "gw" if i % 2 else "side", i % 3 == 0, i) for i in range(12)]


@given(st.sets(st.sampled_from([f"n{i}" for i in range(14)])),
       st.none() | st.sampled_from(["gw", "side", "other"]), st.none() | st.booleans())
def test_rows_are_exactly_the_matching_streams(nodes: set[str], cluster: str | None,
                                               synced: bool | None) -> None:
    only = ProxyFilter(frozenset(nodes), cluster, synced)
    every = {r["stream"]: r for r in proxy_rows(FLEET)}
    kept = {r["stream"] for r in proxy_rows(FLEET, 3, only)}
    assert kept == {
        s for s, r in every.items()
        if (not nodes or r["id"] in nodes) and (cluster is None or r["cluster"] == cluster)
        and (synced is None or r["synced"] is synced)}
    assert all(r["worker"] == 3 for r in proxy_rows(FLEET, 3, only))


def test_synced_rows_are_the_acked_streams() -> None:
    rows = proxy_rows(FLEET, 0, ProxyFilter(synced=True))
    assert sorted(r["id"] for r in rows) == ["n0", "n3", "n6", "n9"]


def test_parse_filter_reads_every_parameter() -> None:
    got = parse_filter({"node": "b", "cluster": "gw", "synced": "false", "limit": "7"},
                       ["a", "b"])
    assert got == ProxyFilter(frozenset({"a", "b"}), "gw", False, 7)
    assert parse_filter({}, []) == ProxyFilter()


@pytest.mark.parametrize(("query", "says"), [
    ({"nodes": "a"}, "unknown query parameter 'nodes'"),
    ({"synced": "yes"}, "synced: expected true or false, got 'yes'"),
    ({"limit": "0"}, "limit: expected an integer from 1"),
    ({"limit": "-3"}, "limit: expected an integer"),
    ({"limit": str(MAX_LIMIT + 1)}, "limit: expected an integer"),
    ({"limit": "ten"}, "limit: expected an integer"),
    ({"limit": "\u00b2"}, "limit: expected an integer"),  # a digit to str.isdigit, not to int
])
def test_bad_parameters_are_named(query: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("(", r"\(")):
        parse_filter(query, [])

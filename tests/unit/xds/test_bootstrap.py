"""``sluice bootstrap``: the YAML it prints and its command line.

That Envoy accepts the output is checked in tests/integration/test_envoy_accepts.py.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
import yaml

from xds.bootstrap import (
    ADMIN_METADATA_KEY,
    POD_LATENCY_BUCKETS_S,
    UPSTREAM_RQ_TIME_BUCKETS_MS,
    UPSTREAM_RQ_TIME_MATCH,
    main,
    parse_host_port,
    render_bootstrap,
)


def _load(**kwargs: Any) -> dict[str, Any]:
    args = {"node_id": "gw-1", "xds_host": "127.0.0.1", "xds_port": 18000, **kwargs}
    doc = yaml.safe_load(render_bootstrap(**args))
    assert isinstance(doc, dict)
    return doc


def test_node_and_ads() -> None:
    doc = _load(node_cluster="gateways")
    assert doc["node"] == {"id": "gw-1", "cluster": "gateways"}
    dyn = doc["dynamic_resources"]
    ads = dyn["ads_config"]
    assert ads["api_type"] == "GRPC"
    assert ads["transport_api_version"] == "V3"
    assert ads["grpc_services"] == [{"envoy_grpc": {"cluster_name": "sluice_xds"}}]
    assert ads["set_node_on_first_message_only"] is True
    assert dyn["cds_config"] == {"ads": {}, "resource_api_version": "V3"}
    assert dyn["lds_config"] == {"ads": {}, "resource_api_version": "V3"}


def test_delta() -> None:
    assert _load(delta=True)["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"


def test_xds_cluster_is_http2_with_keepalive() -> None:
    [cluster] = _load()["static_resources"]["clusters"]
    assert cluster["name"] == "sluice_xds"
    assert cluster["type"] == "STATIC"
    assert cluster["connect_timeout"] == "1s"
    opts = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert opts["@type"] == (
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    )
    assert "http2_protocol_options" in opts["explicit_http_config"]
    assert cluster["upstream_connection_options"]["tcp_keepalive"]["keepalive_time"] == 30
    [endpoint] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 18000,
    }


def test_hostname_uses_strict_dns() -> None:
    [cluster] = _load(xds_host="sluice.sluice-system.svc")["static_resources"]["clusters"]
    assert cluster["type"] == "STRICT_DNS"


def test_admin_only_when_given() -> None:
    assert "admin" not in _load()
    doc = _load(admin_host="127.0.0.1", admin_port=9901)
    assert doc["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 9901,
    }
    assert doc["layered_runtime"]["layers"] == [{"name": "admin", "admin_layer": {}}]


def test_admin_address_is_announced_in_node_metadata() -> None:
    assert "metadata" not in _load()["node"]
    doc = _load(admin_host="127.0.0.1", admin_port=9901)
    assert doc["node"]["metadata"] == {ADMIN_METADATA_KEY: "http://127.0.0.1:9901"}
    assert ADMIN_METADATA_KEY == "sluice.dev/admin"
    v6 = _load(admin_host="::1", admin_port=9901)
    assert v6["node"]["metadata"][ADMIN_METADATA_KEY] == "http://[::1]:9901"


def test_request_time_buckets_for_sluice_clusters() -> None:
    doc = _load()
    assert doc["stats_flush_interval"] == "1s"
    [rule] = doc["stats_config"]["histogram_bucket_settings"]
    assert rule["buckets"] == list(UPSTREAM_RQ_TIME_BUCKETS_MS)
    rx = re.compile(rule["match"]["safe_regex"]["regex"])
    assert rule["match"]["safe_regex"]["regex"] == UPSTREAM_RQ_TIME_MATCH
    assert rx.search("cluster.chat/v1.upstream_rq_time")
    assert rx.search("cluster.my-svc/canary-2.upstream_rq_time")
    for other in (
        "cluster.chat/v1.external.upstream_rq_time",
        "cluster.chat/v1.upstream_rq_timeout",
        "cluster.sluice_xds.upstream_rq_time",
        "cluster.chat/v1.upstream_cx_connect_ms",
    ):
        assert not rx.search(other), other


@pytest.mark.parametrize(
    ("bounds", "lo", "hi"),
    [(UPSTREAM_RQ_TIME_BUCKETS_MS, 1, 600_000), (POD_LATENCY_BUCKETS_S, 0.001, 90.0)],
)
def test_bucket_layouts_are_about_ten_percent_apart(
    bounds: tuple[float, ...], lo: float, hi: float
) -> None:
    assert len(bounds) <= 100
    assert (bounds[0], bounds[-1]) == (lo, hi)
    ratios = [b / a for a, b in itertools.pairwise(bounds)]
    assert all(r > 1 for r in ratios)
    dense = ratios[3:] if bounds is UPSTREAM_RQ_TIME_BUCKETS_MS else ratios  # 1, 2, 5, 10 ms
    assert max(dense) < 1.17
    # Envoy's default bounds are 2-5x apart: a +10 % p95 shift can hide inside one bucket
    assert sum(1 for b in bounds if 100 <= b * (1 if lo == 1 else 1000) <= 1000) >= 20
    for b in bounds:  # two significant digits: circllhist keeps no more in Envoy
        assert float(f"{b:.2g}") == b


def test_admin_host_without_port_is_an_error() -> None:
    with pytest.raises(ValueError, match="together"):
        render_bootstrap("n", "127.0.0.1", 1, admin_host="127.0.0.1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:18000", ("127.0.0.1", 18000)),
        ("sluice.default.svc:443", ("sluice.default.svc", 443)),
        ("[::1]:9901", ("::1", 9901)),
    ],
)
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize(
    "text", ["nope", ":80", "host:", "host:0", "host:65536", "host:http", "::1:80", "[zz]:80"]
)
def test_parse_host_port_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_host_port(text)


def test_main_prints_the_bootstrap(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--node-id",
        "gw-1",
        "--xds-address",
        "127.0.0.1:18000",
        "--admin-address",
        "127.0.0.1:9901",
        "--delta",
        "--cluster",
        "edge",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out == render_bootstrap("gw-1", "127.0.0.1", 18000, "127.0.0.1", 9901, True, "edge")


def test_main_bad_address_exits_2_with_reason(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--node-id", "gw-1", "--xds-address", "localhost"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "sluice bootstrap" in err
    assert "--xds-address" in err
    assert "HOST:PORT" in err


def test_main_requires_node_id(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--xds-address", "127.0.0.1:18000"])
    assert exc.value.code == 2
    assert "--node-id" in capsys.readouterr().err

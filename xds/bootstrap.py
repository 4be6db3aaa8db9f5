"""``sluice bootstrap``: the Envoy bootstrap that connects a proxy to Sluice over ADS.

Envoy config reference:
https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/bootstrap/v3/bootstrap.proto

The document is written by hand as a plain dict (then YAML) rather than via
the generated ``Bootstrap`` message: betterproto2's ``to_dict`` renames fields
whose proto names contain digits (``consecutive_5xx`` → ``consecutive_5_xx``),
which Envoy rejects. ``tests/integration/test_envoy_accepts.py`` checks the
output with the real ``envoy --mode validate``.

Statistics (what ``analysis.providers`` reads):

- ``stats_config.histogram_bucket_settings`` gives the per-cluster
  ``upstream_rq_time`` of Sluice's clusters (``<service>/<version>``) the
  bounds in :data:`UPSTREAM_RQ_TIME_BUCKETS_MS`: 20 per decade, two
  significant digits, about 12 % apart (at most 17 %), from 10 ms to 10 min,
  with 1, 2 and 5 ms below. Envoy's default bounds (0.5, 1, 5, 10, 25, 50,
  100, 250, ... ms) are 2 to 5 times apart, so a +10 % shift of the p95 can
  fall inside one bucket and be invisible to a test on bucket counts. Envoy
  records this histogram in whole milliseconds and keeps about two
  significant digits internally, so finer bounds below 10 ms or a third digit
  would add buckets, not resolution. 100 bounds per cluster.
- ``stats_flush_interval: 1s``. Envoy merges histograms into what its admin
  endpoint shows only at a stats flush (counters are live), so a histogram
  read between flushes lags the counters by up to one interval: with the
  default 5 s that skews 8 % of a one-minute window's latency samples into
  the next window; with 1 s, under 2 %. A flush merges each histogram once per
  worker, which is cheap next to the traffic of a gateway that needs it.
- Pods should export TTFT and inter-token latency with the same kind of
  layout, in seconds: :data:`POD_LATENCY_BUCKETS_S` (1 ms to 90 s, 100
  bounds). vLLM's defaults (``vllm:time_to_first_token_seconds``: ..., 0.25,
  0.5, 0.75, 1, 2.5, 5, ...) are as coarse as Envoy's.

With ``--admin-address``, the node announces its admin endpoint in its
metadata under :data:`ADMIN_METADATA_KEY` (``sluice.dev/admin``), as
``http://HOST:PORT``, so that the control plane can read the stats of every
connected Envoy. An unspecified host (``0.0.0.0``, ``::``) is announced as
given; a reader substitutes the proxy's peer address for it.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

XDS_CLUSTER = "sluice_xds"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_TLS_CONTEXT = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"

ADMIN_METADATA_KEY = "sluice.dev/admin"
STATS_FLUSH_INTERVAL = "1s"
# Two significant digits, 20 per decade (tenths of the mantissa).
_MANTISSAS = (10, 11, 12, 14, 16, 18, 20, 22, 25, 28, 32, 36, 40, 45, 50, 56, 63, 71, 80, 90)


def _per_decade(first_decade: int, last_decade: int) -> tuple[int, ...]:
    """The mantissas times ``10**(e - first_decade)`` for e in [first, last] (integers)."""
    return tuple(
        m * 10 ** (e - first_decade)
        for e in range(first_decade, last_decade + 1)
        for m in _MANTISSAS
    )


# Bounds (ms) of every Sluice cluster's upstream_rq_time; +Inf is implicit.
UPSTREAM_RQ_TIME_BUCKETS_MS: tuple[int, ...] = (
    1, 2, 5,
    *_per_decade(1, 4),  # 10 ms .. 90 s
    *(b * 10_000 for b in _MANTISSAS[:16]),  # 100 s .. 560 s
    600_000,
)  # fmt: skip
# The layout pods should use for TTFT and inter-token latency (seconds).
POD_LATENCY_BUCKETS_S: tuple[float, ...] = tuple(b / 10_000 for b in _per_decade(0, 4))
# Sluice's clusters only (``<service>/<version>``, and a hybrid version's
# ``<service>/<version>/affinity``, which analysis sums with it; DNS labels: no
# dots), not the ``.internal`` / ``.external`` / ``.canary`` variants of the same
# histogram.
UPSTREAM_RQ_TIME_MATCH = r"^cluster\.[^./]+/[^./]+(/affinity)?\.upstream_rq_time$"


def stats_settings() -> dict[str, Any]:
    """The bootstrap's ``stats_flush_interval`` and ``stats_config`` (see the module doc)."""
    return {
        "stats_flush_interval": STATS_FLUSH_INTERVAL,
        "stats_config": {
            "histogram_bucket_settings": [
                {
                    "match": {"safe_regex": {"regex": UPSTREAM_RQ_TIME_MATCH}},
                    "buckets": list(UPSTREAM_RQ_TIME_BUCKETS_MS),
                }
            ]
        },
    }


def admin_url(host: str, port: int) -> str:
    """``http://HOST:PORT`` (IPv6 in brackets): the value under ``ADMIN_METADATA_KEY``."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _ads_config_source() -> dict[str, Any]:
    return {"ads": {}, "resource_api_version": "V3"}


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _xds_cluster(host: str, port: int) -> dict[str, Any]:
    return {
        "name": XDS_CLUSTER,
        # STATIC needs an IP literal; a name (a Kubernetes Service) is resolved
        # and re-resolved by STRICT_DNS.
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": "1s",
        # xDS is gRPC, so HTTP/2 to the control plane. The HTTP/2 PING keepalive
        # notices a dead control plane (or a silently dropped NAT/LB mapping)
        # within seconds, and TCP keepalive covers the idle connection below it.
        "typed_extension_protocol_options": {
            _HTTP_OPTIONS: {
                "@type": f"type.googleapis.com/{_HTTP_OPTIONS}",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": {"interval": "30s", "timeout": "5s"}
                    }
                },
            }
        },
        "upstream_connection_options": {
            "tcp_keepalive": {"keepalive_time": 30, "keepalive_interval": 10, "keepalive_probes": 3}
        },
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _socket_address(host, port)}}]}
            ],
        },
    }


@dataclass(frozen=True)
class ClientTls:
    """mTLS to the control plane: the proxy's certificate and the CA that signed Sluice's."""

    cert: str
    key: str
    ca: str


def _tls_socket(tls: ClientTls, server_name: str) -> dict[str, Any]:
    """Verify the server against the CA and present the proxy's certificate.

    https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/transport_sockets/tls/v3/tls.proto
    """
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": f"type.googleapis.com/{_TLS_CONTEXT}",
            "sni": server_name,
            "common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"filename": tls.cert},
                                      "private_key": {"filename": tls.key}}],
                "validation_context": {"trusted_ca": {"filename": tls.ca}},
                "alpn_protocols": ["h2"],
            },
        },
    }


def bootstrap_config(
    node_id: str,
    xds_host: str,
    xds_port: int,
    admin_host: str | None = None,
    admin_port: int | None = None,
    delta: bool = False,
    node_cluster: str = "sluice",
    tls: ClientTls | None = None,
) -> dict[str, Any]:
    """The bootstrap as a dict (what ``render_bootstrap`` dumps)."""
    if not node_id:
        raise ValueError("node id must not be empty")
    if (admin_host is None) != (admin_port is None):
        raise ValueError("admin host and admin port go together")
    config: dict[str, Any] = {
        "node": {"id": node_id, "cluster": node_cluster},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
                # Envoy otherwise repeats its full Node (≈60 KB) in every
                # DiscoveryRequest; the protocol only guarantees it on the
                # first one anyway (xds_protocol, "Node" in DiscoveryRequest).
                "set_node_on_first_message_only": True,
            },
            "cds_config": _ads_config_source(),
            "lds_config": _ads_config_source(),
        },
        "static_resources": {"clusters": [_xds_cluster(xds_host, xds_port)]},
        # Per-endpoint load reports (LRS) to the same server: what the
        # response_time policy and the offline class's cap are computed from.
        "cluster_manager": {"load_stats_config": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
        }},
        **stats_settings(),
    }
    if tls is not None:
        config["static_resources"]["clusters"][0]["transport_socket"] = _tls_socket(tls,
                                                                                    xds_host)
    if admin_host is not None and admin_port is not None:
        config["node"]["metadata"] = {ADMIN_METADATA_KEY: admin_url(admin_host, admin_port)}
        config["admin"] = {"address": _socket_address(admin_host, admin_port)}
        # An admin runtime layer lets an operator override the per-cluster
        # runtime keys Sluice sets (slow start aggression, active request
        # bias) with POST /runtime_modify, without a push.
        config["layered_runtime"] = {"layers": [{"name": "admin", "admin_layer": {}}]}
    return config


def render_bootstrap(
    node_id: str,
    xds_host: str,
    xds_port: int,
    admin_host: str | None = None,
    admin_port: int | None = None,
    delta: bool = False,
    node_cluster: str = "sluice",
    tls: ClientTls | None = None,
) -> str:
    """Envoy bootstrap YAML that fetches everything else from Sluice over (Delta) ADS."""
    config = bootstrap_config(
        node_id, xds_host, xds_port, admin_host, admin_port, delta, node_cluster, tls
    )
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def parse_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` → (host, port); raises ``ValueError`` with the reason."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not _is_ip(host):
            raise ValueError(f"not an IPv6 address in {value!r}")
    elif ":" in host:
        raise ValueError(f"write IPv6 addresses as [ADDRESS]:PORT, got {value!r}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be 1..65535, got {port_text!r} in {value!r}")
    return host, int(port_text)


def _host_port(value: str) -> tuple[str, int]:
    try:
        return parse_host_port(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sluice bootstrap",
        description="Print an Envoy bootstrap (YAML) that connects to Sluice over ADS.",
    )
    parser.add_argument("--node-id", required=True, help="Envoy node id (unique per proxy)")
    parser.add_argument(
        "--xds-address",
        required=True,
        type=_host_port,
        metavar="HOST:PORT",
        help="Sluice's xDS gRPC address",
    )
    parser.add_argument(
        "--admin-address",
        type=_host_port,
        metavar="HOST:PORT",
        help="Envoy admin address (keep it on 127.0.0.1)",
    )
    parser.add_argument("--delta", action="store_true", help="use Delta (incremental) ADS")
    parser.add_argument("--cluster", default="sluice", help="Envoy node cluster (default: sluice)")
    parser.add_argument("--tls-cert", metavar="FILE", help="the proxy's client certificate")
    parser.add_argument("--tls-key", metavar="FILE", help="its private key")
    parser.add_argument("--tls-ca", metavar="FILE", help="CA that signed Sluice's certificate")
    args = parser.parse_args(argv)
    if not args.node_id:
        parser.error("--node-id must not be empty")
    given = [x is not None for x in (args.tls_cert, args.tls_key, args.tls_ca)]
    if any(given) and not all(given):
        parser.error("--tls-cert, --tls-key and --tls-ca go together")
    tls = ClientTls(args.tls_cert, args.tls_key, args.tls_ca) if all(given) else None
    xds_host, xds_port = args.xds_address
    admin_host, admin_port = args.admin_address if args.admin_address else (None, None)
    sys.stdout.write(
        render_bootstrap(
            args.node_id, xds_host, xds_port, admin_host, admin_port, args.delta, args.cluster,
            tls,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

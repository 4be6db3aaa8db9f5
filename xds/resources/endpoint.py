"""ClusterLoadAssignment (EDS) per model version.

The endpoints of a version change often (pods come and go, weights follow
measured capacity), and betterproto2 needs ≈0.3 ms to serialize one
``LbEndpoint`` (it compiles a pydantic validator per message on every
``bytes()``), ≈290 ms for 1,000 endpoints. So besides the message builder
there is ``serialize_load_assignment``, which writes the same bytes directly
in the protobuf wire format (https://protobuf.dev/programming-guides/encoding/)
and memoizes each endpoint's encoding on the frozen ``Endpoint``. Unit and
Hypothesis tests hold it byte-for-byte to ``bytes(build_load_assignment(...))``.
"""

from __future__ import annotations

import functools

from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.config.endpoint import v3 as endpoint_v3
from envoy_data_plane.google import protobuf as pb

from controlplane.model import Endpoint, EndpointHealth
from xds.resources._common import socket_address

# Labels go where Envoy's subset load balancer and ``metadata_match`` look.
# https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/core/v3/base.proto#envoy-v3-api-msg-config-core-v3-metadata
LB_METADATA_NAMESPACE = "envoy.lb"

# https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/core/v3/health_check.proto#enum-config-core-v3-healthstatus
# UNKNOWN lets active health checking decide; DRAINING stops new requests while
# in-flight generations finish.
HEALTH_STATUS = {
    EndpointHealth.UNKNOWN: core.HealthStatus.UNKNOWN,
    EndpointHealth.HEALTHY: core.HealthStatus.HEALTHY,
    EndpointHealth.UNHEALTHY: core.HealthStatus.UNHEALTHY,
    EndpointHealth.DRAINING: core.HealthStatus.DRAINING,
}


def build_lb_endpoint(endpoint: Endpoint) -> endpoint_v3.LbEndpoint:
    lb_endpoint = endpoint_v3.LbEndpoint(
        endpoint=endpoint_v3.Endpoint(address=socket_address(endpoint.address, endpoint.port)),
        health_status=HEALTH_STATUS[endpoint.health],
        # Envoy requires >= 1; the weight carries GPU capacity.
        load_balancing_weight=endpoint.weight,
    )
    if endpoint.labels:
        lb_endpoint.metadata = core.Metadata(
            filter_metadata={
                LB_METADATA_NAMESPACE: pb.Struct(
                    fields={k: pb.Value(string_value=v) for k, v in endpoint.labels}
                )
            }
        )
    return lb_endpoint


# An endpoint's ``zone`` label (Kubernetes discovery sets it from the node's
# topology.kubernetes.io/zone) becomes its Envoy locality, so Envoy's stats, zone-aware
# routing and locality-weighted balancing see where each pod runs.
# https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/core/v3/base.proto#config-core-v3-locality
ZONE_LABEL = "zone"


def zone_of(endpoint: Endpoint) -> str:
    return next((v for k, v in endpoint.labels if k == ZONE_LABEL), "")


def locality_groups(endpoints: tuple[Endpoint, ...]) -> list[tuple[int, str, list[Endpoint]]]:
    """Endpoints by (priority, zone): priorities dense-ranked from 0 (Envoy wants no gap),
    zones sorted within a priority ("" for none), each group in the given order.

    A version whose endpoints all have one priority is priority 0, whatever that
    priority is (an experiment may move endpoints between versions).
    """
    levels = sorted({e.priority for e in endpoints}) or [0]
    rank = {p: i for i, p in enumerate(levels)}
    groups: dict[tuple[int, str], list[Endpoint]] = {}
    for e in endpoints:
        groups.setdefault((rank[e.priority], zone_of(e)), []).append(e)
    if not groups:
        return [(0, "", [])]
    return [(priority, zone, groups[(priority, zone)]) for priority, zone in sorted(groups)]


def build_load_assignment(
    cluster: str, endpoints: tuple[Endpoint, ...], overprovisioning_factor: int | None = None
) -> endpoint_v3.ClusterLoadAssignment:
    """One LocalityLbEndpoints per priority and zone (see ``locality_groups``).

    https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/load_balancing/priority
    """
    cla = endpoint_v3.ClusterLoadAssignment(
        cluster_name=cluster,
        endpoints=[
            endpoint_v3.LocalityLbEndpoints(
                locality=core.Locality(zone=zone) if zone else None,
                lb_endpoints=[build_lb_endpoint(e) for e in group], priority=priority
            )
            for priority, zone, group in locality_groups(endpoints)
        ],
    )
    if overprovisioning_factor is not None:
        cla.policy = endpoint_v3.ClusterLoadAssignmentPolicy(
            overprovisioning_factor=overprovisioning_factor
        )
    return cla


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(field_number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): tag, length, payload."""
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def _varint_field(field_number: int, value: int) -> bytes:
    """A varint field (wire type 0)."""
    return _varint(field_number << 3) + _varint(value)


def _struct_of_strings(pairs: tuple[tuple[str, str], ...]) -> bytes:
    # google.protobuf.Struct: map<string, Value> fields = 1; a map entry is
    # {key = 1, value = 2}, both always written. Value.string_value = 3 sits in
    # a oneof, so it is written even when empty.
    return b"".join(
        _len_field(1, _len_field(1, k.encode()) + _len_field(2, _len_field(3, v.encode())))
        for k, v in pairs
    )


@functools.lru_cache(maxsize=65_536)
def _lb_endpoint_bytes(endpoint: Endpoint) -> bytes:
    """``bytes(build_lb_endpoint(endpoint))`` without building the message.

    LbEndpoint: endpoint = 1, health_status = 2, metadata = 3,
    load_balancing_weight = 4 (UInt32Value {value = 1}). Endpoint: address = 1;
    Address: socket_address = 1; SocketAddress: address = 2, port_value = 3
    (a oneof member, so written even when 0); protocol TCP = 0 is the default.
    Metadata: map<string, Struct> filter_metadata = 1.
    """
    socket = _len_field(2, endpoint.address.encode()) if endpoint.address else b""
    socket += _varint_field(3, endpoint.port)
    out = _len_field(1, _len_field(1, _len_field(1, socket)))
    status = HEALTH_STATUS[endpoint.health].value
    if status:
        out += _varint_field(2, status)
    if endpoint.labels:
        entry = _len_field(1, LB_METADATA_NAMESPACE.encode()) + _len_field(
            2, _struct_of_strings(endpoint.labels)
        )
        out += _len_field(3, _len_field(1, entry))
    weight = _varint_field(1, endpoint.weight) if endpoint.weight else b""
    return out + _len_field(4, weight)


def serialize_load_assignment(
    cluster: str, endpoints: tuple[Endpoint, ...], overprovisioning_factor: int | None = None
) -> bytes:
    """``bytes(build_load_assignment(cluster, endpoints, overprovisioning_factor))``.

    ClusterLoadAssignment: cluster_name = 1, endpoints = 2, policy = 4;
    LocalityLbEndpoints: locality = 1, lb_endpoints = 2, priority = 5 (0 is the proto3
    default, so it is not on the wire); Policy: overprovisioning_factor = 3
    (UInt32Value {value = 1}).
    """
    out = _len_field(1, cluster.encode()) if cluster else b""
    for priority, zone, group in locality_groups(endpoints):
        # Locality = 1 (zone = 2), written only when there is a zone.
        locality = _len_field(1, _len_field(2, zone.encode())) if zone else b""
        locality += b"".join(_len_field(2, _lb_endpoint_bytes(e)) for e in group)
        if priority:
            locality += _varint_field(5, priority)
        out += _len_field(2, locality)
    if overprovisioning_factor is not None:
        factor = _varint_field(1, overprovisioning_factor) if overprovisioning_factor else b""
        out += _len_field(4, _len_field(3, factor))
    return out

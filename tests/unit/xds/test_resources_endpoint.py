"""ClusterLoadAssignment builder and its endpoint-by-endpoint serializer."""

from __future__ import annotations

import pytest
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.config.endpoint import v3 as endpoint_v3
from envoy_data_plane.google.protobuf import Any

from controlplane.model import Endpoint, EndpointHealth
from tests.unit.xds.resources_fixtures import labelled_endpoint, pods, roundtrip
from xds import typeurls
from xds.resources import build_load_assignment, serialize_load_assignment


def test_one_priority_zero_locality_in_endpoint_order() -> None:
    eps = pods(3)
    cla = roundtrip(build_load_assignment("chat/v1", eps))
    assert Any.pack(cla).type_url == typeurls.ENDPOINT
    assert cla.cluster_name == "chat/v1"
    [locality] = cla.endpoints
    assert locality.priority == 0
    got = [
        (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
        for e in locality.lb_endpoints
    ]
    assert got == [(e.address, e.port) for e in eps]


def test_weight_and_labels() -> None:
    cla = roundtrip(build_load_assignment("chat/v1", (labelled_endpoint(),)))
    [lb] = cla.endpoints[0].lb_endpoints
    assert lb.load_balancing_weight == 2
    struct = lb.metadata.filter_metadata["envoy.lb"]
    assert struct.to_dict() == {"gpu": "h100", "zone": "a"}


def test_no_labels_no_metadata() -> None:
    [lb] = roundtrip(build_load_assignment("c", pods(1))).endpoints[0].lb_endpoints
    assert lb.metadata is None
    assert lb.load_balancing_weight == 1


@pytest.mark.parametrize(
    ("health", "status"),
    [
        (EndpointHealth.UNKNOWN, core.HealthStatus.UNKNOWN),
        (EndpointHealth.HEALTHY, core.HealthStatus.HEALTHY),
        (EndpointHealth.UNHEALTHY, core.HealthStatus.UNHEALTHY),
        (EndpointHealth.DRAINING, core.HealthStatus.DRAINING),
    ],
)
def test_health_status_mapping(health: EndpointHealth, status: core.HealthStatus) -> None:
    cla = roundtrip(build_load_assignment("c", (labelled_endpoint(health),)))
    assert cla.endpoints[0].lb_endpoints[0].health_status == status


def test_empty_pool_still_has_the_locality() -> None:
    cla = roundtrip(build_load_assignment("chat/v1", ()))
    assert cla.cluster_name == "chat/v1"
    assert [e.lb_endpoints for e in cla.endpoints] == [[]]


@pytest.mark.parametrize("n", [0, 1, 2, 150])
def test_fast_serializer_matches_the_message(n: int) -> None:
    eps = (*pods(n), labelled_endpoint(EndpointHealth.DRAINING))
    assert serialize_load_assignment("chat/v1", eps) == bytes(build_load_assignment("chat/v1", eps))
    parsed = endpoint_v3.ClusterLoadAssignment.parse(serialize_load_assignment("chat/v1", eps))
    assert sum(len(group.lb_endpoints) for group in parsed.endpoints) == n + 1


def test_the_zone_label_is_the_locality_and_priorities_stay_dense() -> None:
    eps = (Endpoint("10.0.0.1", 80, labels=(("zone", "b"),)),
           Endpoint("10.0.0.2", 80),
           Endpoint("10.0.0.3", 80, labels=(("zone", "a"),)),
           Endpoint("10.0.0.4", 80, labels=(("zone", "b"),)),
           Endpoint("10.0.0.5", 80, labels=(("zone", "a"),), priority=5))
    cla = roundtrip(build_load_assignment("chat/v1", eps))
    got = [(g.priority, g.locality.zone if g.locality else "",
            [e.endpoint.address.socket_address.address for e in g.lb_endpoints])
           for g in cla.endpoints]
    assert got == [(0, "", ["10.0.0.2"]), (0, "a", ["10.0.0.3"]),
                   (0, "b", ["10.0.0.1", "10.0.0.4"]), (1, "a", ["10.0.0.5"])]
    assert serialize_load_assignment("chat/v1", eps) == bytes(build_load_assignment("chat/v1",
                                                                                    eps))


def test_fast_serializer_long_cluster_name_and_ipv6() -> None:
    name = "a-very-long-service-name-" * 8 + "/v1"
    eps = (Endpoint("2001:db8::1", 8000, weight=300),)
    assert serialize_load_assignment(name, eps) == bytes(build_load_assignment(name, eps))

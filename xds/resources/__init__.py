"""Pure builders: desired state (``controlplane.model``) → Envoy v3 resources.

Inputs are narrow frozen dataclasses so callers can memoize the serialized
bytes on them: a weight change alters ``RouteInputs`` only, never
``ClusterInputs`` or the endpoints of a ``ClusterLoadAssignment``.
"""

from xds.resources.cluster import (
    ClusterInputs,
    LbApi,
    build_cluster,
    cluster_inputs,
    service_cluster_inputs,
)
from xds.resources.endpoint import (
    build_lb_endpoint,
    build_load_assignment,
    serialize_load_assignment,
)
from xds.resources.listener import (
    ListenerInputs,
    batch_listener_inputs,
    build_listener,
    listener_inputs,
)
from xds.resources.route import (
    RouteInputs,
    batch_route_inputs,
    build_route_configuration,
    route_cluster_refs,
    route_inputs,
)

__all__ = [
    "ClusterInputs",
    "LbApi",
    "ListenerInputs",
    "RouteInputs",
    "batch_listener_inputs",
    "batch_route_inputs",
    "build_cluster",
    "build_lb_endpoint",
    "build_listener",
    "build_load_assignment",
    "build_route_configuration",
    "cluster_inputs",
    "listener_inputs",
    "route_cluster_refs",
    "route_inputs",
    "serialize_load_assignment",
    "service_cluster_inputs",
]

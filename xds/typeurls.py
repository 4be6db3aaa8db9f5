"""Type URLs of the resources Sluice serves over xDS (v3 API only).

A DiscoveryRequest/Response names the resource type by these strings; every
``google.protobuf.Any`` inside a response must carry the same URL as the
response's ``type_url``.
https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol#resource-types
"""

from __future__ import annotations

from typing import Final

_PREFIX: Final = "type.googleapis.com/"

LISTENER: Final = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE: Final = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER: Final = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT: Final = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"

# ADS push order for make-before-break (xds_protocol#eventual-consistency-considerations).
ADS_ORDER: Final = (CLUSTER, ENDPOINT, LISTENER, ROUTE)

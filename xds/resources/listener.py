"""Listener (LDS) per service: an HTTP connection manager that takes its routes from RDS."""

from __future__ import annotations

from dataclasses import dataclass

from envoy_data_plane.envoy.config.listener import v3 as listener_v3
from envoy_data_plane.envoy.extensions.filters.http.router import v3 as router_v3
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import (
    v3 as hcm_v3,
)

from controlplane.model import ModelService, listener_name, route_config_name
from xds.resources._common import ads_config_source, ms, pack, socket_address

HCM_FILTER = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER = "envoy.filters.http.router"


@dataclass(frozen=True)
class ListenerInputs:
    service: str
    address: str
    port: int
    idle_ms: int  # HCM stream_idle_timeout, the same as the route's idle_timeout


def listener_inputs(service: ModelService) -> ListenerInputs:
    return ListenerInputs(
        service=service.name,
        address=service.listener.address,
        port=service.listener.port,
        idle_ms=service.timeouts.idle_ms,
    )


def build_http_connection_manager(inputs: ListenerInputs) -> hcm_v3.HttpConnectionManager:
    # https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto
    return hcm_v3.HttpConnectionManager(
        stat_prefix=inputs.service,
        codec_type=hcm_v3.HttpConnectionManagerCodecType.AUTO,
        rds=hcm_v3.Rds(
            config_source=ads_config_source(),
            route_config_name=route_config_name(inputs.service),
        ),
        http_filters=[hcm_v3.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_v3.Router()))],
        # The route's idle_timeout overrides this once a route matched; before
        # that (and for requests no route matches) the HCM's applies, so both
        # say the same. request_timeout bounds the whole *request* stream
        # (client upload) and is off, as Envoy's default: bodies are small,
        # and the route timeout already bounds the exchange.
        stream_idle_timeout=ms(inputs.idle_ms),
        request_timeout=ms(0),
    )


def build_listener(inputs: ListenerInputs) -> listener_v3.Listener:
    return listener_v3.Listener(
        name=listener_name(inputs.service),
        address=socket_address(inputs.address, inputs.port),
        filter_chains=[
            listener_v3.FilterChain(
                filters=[
                    listener_v3.Filter(
                        name=HCM_FILTER,
                        typed_config=pack(build_http_connection_manager(inputs)),
                    )
                ]
            )
        ],
    )

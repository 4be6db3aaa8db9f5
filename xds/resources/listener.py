"""Listener (LDS) per service: an HTTP connection manager that takes its routes from RDS."""

from __future__ import annotations

from dataclasses import dataclass

from envoy_data_plane.envoy.config.accesslog import v3 as accesslog_v3
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.config.listener import v3 as listener_v3
from envoy_data_plane.envoy.extensions.filters.http.router import v3 as router_v3
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import (
    v3 as hcm_v3,
)

from controlplane.model import (
    ModelService,
    batch_listener_name,
    batch_route_config_name,
    listener_name,
    route_config_name,
)
from xds.resources._common import ads_config_source, ms, pack, socket_address

HCM_FILTER = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER = "envoy.filters.http.router"


@dataclass(frozen=True)
class ListenerInputs:
    service: str
    address: str
    port: int
    idle_ms: int  # HCM stream_idle_timeout, the same as the route's idle_timeout
    # Offline class: Retry-After (seconds) on the 503 of an overflowing circuit breaker.
    retry_after_s: int | None = None
    batch: bool = False  # the offline class's own listener


def listener_inputs(service: ModelService) -> ListenerInputs:
    return ListenerInputs(
        service=service.name,
        address=service.listener.address,
        port=service.listener.port,
        idle_ms=service.timeouts.idle_ms,
        retry_after_s=service.offline.retry_after_s if service.offline else None,
    )


def batch_listener_inputs(service: ModelService) -> ListenerInputs | None:
    offline = service.offline
    if offline is None or offline.listener is None:
        return None
    return ListenerInputs(service.name, offline.listener.address, offline.listener.port,
                          service.timeouts.idle_ms, offline.retry_after_s, batch=True)


def listener_refs(inputs: ListenerInputs) -> str:
    """The route configuration the listener takes over RDS."""
    return (batch_route_config_name if inputs.batch else route_config_name)(inputs.service)


def _retry_after(seconds: int) -> hcm_v3.LocalReplyConfig:
    """Requests refused by a circuit breaker (response flag UO: the batch cap) get
    ``Retry-After``. https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_conn_man/local_reply
    """
    return hcm_v3.LocalReplyConfig(mappers=[hcm_v3.ResponseMapper(
        filter=accesslog_v3.AccessLogFilter(
            response_flag_filter=accesslog_v3.ResponseFlagFilter(flags=["UO"])),
        headers_to_add=[core.HeaderValueOption(
            header=core.HeaderValue(key="retry-after", value=str(seconds)),
            append_action=core.HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
        )],
    )])


def build_http_connection_manager(inputs: ListenerInputs) -> hcm_v3.HttpConnectionManager:
    # https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto
    hcm = hcm_v3.HttpConnectionManager(
        stat_prefix=f"{inputs.service}-batch" if inputs.batch else inputs.service,
        codec_type=hcm_v3.HttpConnectionManagerCodecType.AUTO,
        rds=hcm_v3.Rds(
            config_source=ads_config_source(),
            route_config_name=listener_refs(inputs),
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
    if inputs.retry_after_s is not None:
        hcm.local_reply_config = _retry_after(inputs.retry_after_s)
    return hcm


def build_listener(inputs: ListenerInputs) -> listener_v3.Listener:
    return listener_v3.Listener(
        name=(batch_listener_name if inputs.batch else listener_name)(inputs.service),
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

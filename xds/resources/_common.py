"""Small message helpers shared by the builders."""

from __future__ import annotations

import datetime

import betterproto2
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.google import protobuf as pb


def ms(value: int) -> datetime.timedelta:
    """A ``google.protobuf.Duration`` (betterproto2 maps it to ``timedelta``)."""
    return datetime.timedelta(milliseconds=value)


def pack(message: betterproto2.Message) -> pb.Any:
    """Pack into ``Any`` with the ``type.googleapis.com/<full name>`` URL Envoy expects."""
    return pb.Any.pack(message)


def ads_config_source() -> core.ConfigSource:
    """``{ads: {}, resource_api_version: V3}``: fetch over the bootstrap's ADS stream.

    https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/core/v3/config_source.proto
    (``resource_api_version`` must be V3: v2 resources are gone since Envoy 1.18).
    """
    return core.ConfigSource(
        ads=core.AggregatedConfigSource(), resource_api_version=core.ApiVersion.V3
    )


def socket_address(address: str, port: int) -> core.Address:
    return core.Address(socket_address=core.SocketAddress(address=address, port_value=port))

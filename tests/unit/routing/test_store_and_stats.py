"""Routing state in the store beside experiments; what analysis and the bootstrap see."""

from __future__ import annotations

import re

import yaml

from analysis.providers.envoy_text import cluster_filter, parse_envoy_stats
from controlplane.config import load_text
from controlplane.model import Endpoint, RoutingState
from controlplane.store import Store, TrafficOverride
from tests.unit.config.util import doc
from xds.bootstrap import UPSTREAM_RQ_TIME_MATCH, render_bootstrap

TWO_VERSIONS = """
listener: {address: 127.0.0.1, port: 10000}
versions:
  - name: v1
    weight: 100
    endpoints:
      - {address: 10.0.0.1, port: 8000}
      - {address: 10.0.0.2, port: 8000}
  - name: v2
    weight: 0
    endpoints:
      - {address: 10.0.0.3, port: 8000}
"""


def test_routing_weights_apply_to_whatever_endpoints_an_experiment_leaves() -> None:
    store = Store(("files",))
    store.apply_load("files", load_text(doc(TWO_VERSIONS), "chat.yaml"))
    # An experiment's rolling update moves 10.0.0.2 into v2 and owns the split.
    moved = (("v1", (Endpoint("10.0.0.1", 8000),)),
             ("v2", (Endpoint("10.0.0.3", 8000), Endpoint("10.0.0.2", 8000))))
    store.set_override("chat", TrafficOverride.of("experiment/roll", {"v1": 50, "v2": 50},
                                                  endpoints=moved))
    revision = store.revision
    assert store.set_routing("chat", RoutingState((("10.0.0.2:8000", 37),), 4))
    assert store.revision == revision + 1
    svc = store.state.service("chat")
    assert [v.weight for v in svc.versions] == [50, 50]  # the experiment's split stays
    assert [e.key for e in svc.versions[1].endpoints] == ["10.0.0.3:8000", "10.0.0.2:8000"]
    assert svc.routing.weights == (("10.0.0.2:8000", 37),)
    assert not store.set_routing("chat", RoutingState((("10.0.0.2:8000", 37),), 4))
    assert store.set_routing("chat", None)
    assert store.state.service("chat").routing == RoutingState()
    assert store.declared.service("chat").routing == RoutingState()


STATS = """\
envoy_cluster_upstream_rq_completed{envoy_cluster_name="chat/v1"} 10
envoy_cluster_upstream_rq_completed{envoy_cluster_name="chat/v1/affinity"} 5
envoy_cluster_upstream_rq_completed{envoy_cluster_name="chat/v1/batch"} 100
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="chat/v1/affinity"} 2
envoy_cluster_upstream_rq_completed{envoy_cluster_name="chat/v2"} 7
"""


def test_a_versions_affinity_cluster_counts_with_it_and_batch_does_not() -> None:
    readings = parse_envoy_stats(STATS, {"v1": "chat/v1", "v2": "chat/v2"})
    assert (readings["v1"].requests, readings["v1"].errors) == (15, 2)
    assert readings["v2"].requests == 7
    rx = re.compile(cluster_filter(["chat/v1"]))
    assert rx.search("cluster.chat/v1.upstream_rq_total")
    assert rx.search("cluster.chat/v1/affinity.upstream_rq_total")
    assert not rx.search("cluster.chat/v1/batch.upstream_rq_total")


def test_bootstrap_sends_load_reports_and_buckets_affinity_latency() -> None:
    config = yaml.safe_load(render_bootstrap("gw", "127.0.0.1", 18000))
    lrs = config["cluster_manager"]["load_stats_config"]
    assert lrs["grpc_services"] == [{"envoy_grpc": {"cluster_name": "sluice_xds"}}]
    rx = re.compile(UPSTREAM_RQ_TIME_MATCH)
    assert rx.search("cluster.chat/v1/affinity.upstream_rq_time")
    assert not rx.search("cluster.chat/v1/batch.upstream_rq_time")

"""Parsing Envoy's ``/stats/prometheus``.

``envoy_1_40_stats.txt`` is what a real Envoy 1.40 printed (``?filter=`` on
four clusters, the ``sluice bootstrap`` bucket layout) after 200 requests split
over ``chat/v1`` and ``chat/v2`` (v2 answering 24 of its 101 with HTTP 500),
7 to ``chat/dead`` (nothing listening: connect failures) and 5 to
``chat/slow`` (route timeout 0.2 s, pod 0.5 s).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from analysis.providers import ProviderError
from analysis.providers.envoy_text import cluster_filter, excerpt, parse_envoy_stats
from xds.bootstrap import UPSTREAM_RQ_TIME_BUCKETS_MS

REAL = (Path(__file__).parent / "envoy_1_40_stats.txt").read_text()
CLUSTERS = {"v1": "chat/v1", "v2": "chat/v2", "dead": "chat/dead", "slow": "chat/slow"}


def test_real_envoy_output() -> None:
    got = parse_envoy_stats(REAL, CLUSTERS)
    assert set(got) == {"v1", "v2", "dead", "slow"}
    v1, v2 = got["v1"], got["v2"]
    assert (v1.requests, v1.errors) == (99, 0)
    assert (v2.requests, v2.errors) == (101, 24)
    assert v2.error_classes == {"5xx": 24, "4xx": 0, "timeout": 0, "reset": 0, "connect_fail": 0}
    h = v2.histograms["latency"]
    assert h.bounds == (*(b / 1000 for b in UPSTREAM_RQ_TIME_BUCKETS_MS), math.inf)
    assert h.cumulative[-1] == 101  # flushed: the histogram caught up with the counters
    assert all(a <= b for a, b in zip(h.cumulative, h.cumulative[1:], strict=False))
    assert 0 < h.total < 1.0  # seconds, not milliseconds
    assert v2.means["latency"] == (h.total, 101)


def test_connect_failures_are_requests_and_errors() -> None:
    """No connection: Envoy answers 503, counted in rq_completed and rq_xx, not rq_total."""
    dead = parse_envoy_stats(REAL, CLUSTERS)["dead"]
    assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="chat/dead"} 0' in REAL
    assert (dead.requests, dead.errors, dead.error_classes["connect_fail"]) == (7, 7, 7)
    assert dead.histograms == {}  # no upstream response, no upstream_rq_time


def test_timeouts() -> None:
    slow = parse_envoy_stats(REAL, CLUSTERS)["slow"]
    assert (slow.requests, slow.errors, slow.error_classes["timeout"]) == (5, 5, 5)


def test_only_the_asked_clusters_and_exact_names() -> None:
    got = parse_envoy_stats(REAL, {"v1": "chat/v1"})
    assert set(got) == {"v1"}
    # the .external. twin (default bounds) is not mistaken for the cluster's histogram
    assert len(got["v1"].histograms["latency"].bounds) == len(UPSTREAM_RQ_TIME_BUCKETS_MS) + 1
    assert parse_envoy_stats(REAL, {"x": "chat/none"}) == {}


SMALL = """\
# TYPE envoy_cluster_upstream_rq_completed counter
envoy_cluster_upstream_rq_completed{envoy_cluster_name="a/v1"} 10
envoy_cluster_upstream_rq_rx_reset{envoy_cluster_name="a/v1"} 2
envoy_cluster_upstream_rq_tx_reset{envoy_cluster_name="a/v1"} 1
envoy_cluster_upstream_rq_xx{envoy_response_code_class="4",envoy_cluster_name="a/v1"} 3
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a/v1",le="0.5"} 1
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a/v1",le="+Inf"} 4
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="a/v1"} 2000
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="a/v1"} 4
"""


def test_small_document_classes_and_units() -> None:
    [(version, r)] = parse_envoy_stats(SMALL, {"v1": "a/v1"}).items()
    assert version == "v1"
    assert (r.requests, r.errors) == (10, 0)  # rq_xx 5 not created yet: zero
    assert r.error_classes["reset"] == 3
    assert r.error_classes["4xx"] == 3
    assert r.histograms["latency"].bounds == (0.0005, math.inf)
    assert r.histograms["latency"].cumulative == (1, 4)
    assert r.means["latency"] == (2.0, 4)


def test_escaped_labels_timestamps_and_extra_tags() -> None:
    text = (
        'envoy_cluster_upstream_rq_completed{envoy_cluster_name="we\\"ird\\\\name",zone="a"} 5\n'
        'envoy_cluster_upstream_rq_completed{zone="b",envoy_cluster_name="we\\"ird\\\\name"} 7 '
        "1700000000000\n"
    )
    assert parse_envoy_stats(text, {"v": 'we"ird\\name'})["v"].requests == 12


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<html>" + "x" * 200, "expected a metric name, got '<html>xxx"),
        ('envoy_cluster_upstream_rq_completed{envoy_cluster_name="a/v1" 5', "bad labels"),
        (
            'envoy_cluster_upstream_rq_completed{envoy_cluster_name="a/v1"} ' + "9" * 100 + "z",
            "bad value '9999",
        ),
        ('envoy_cluster_upstream_rq_completed{envoy_cluster_name="a/v1"} NaN', "bad value 'NaN'"),
        ('envoy_cluster_upstream_rq_completed{envoy_cluster_name="a/v1"} -1', "bad value '-1'"),
        ('envoy_cluster_upstream_rq_completed{envoy_cluster_name="a/v1"}', "expected a value"),
        (
            'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a/v1",le="x"} 1',
            "bad bucket bound",
        ),
        (
            'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a/v1",le="5"} 1',
            "no +Inf bucket",
        ),
        (
            'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a/v1",le="5"} 3\n'
            'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a/v1",le="+Inf"} 2',
            "not cumulative",
        ),
    ],
)
def test_malformed_text_is_a_short_provider_error(text: str, message: str) -> None:
    with pytest.raises(ProviderError) as err:
        parse_envoy_stats(text, {"v1": "a/v1"})
    assert message in str(err.value)
    assert len(str(err.value)) < 120


def test_unwanted_lines_are_not_parsed_further() -> None:
    text = "envoy_other{weird label syntax} not-a-number\n" + SMALL
    assert parse_envoy_stats(text, {"v1": "a/v1"})["v1"].requests == 10


def test_excerpt_is_bounded() -> None:
    assert excerpt("x" * 1000) == repr("x" * 40 + "...")
    assert excerpt("short") == "'short'"


def test_cluster_filter_matches_full_stat_names_of_those_clusters_only() -> None:
    rx = re.compile(cluster_filter({"v1": "chat/v1", "v2": "chat/v2-b"}))
    assert rx.search("cluster.chat/v1.upstream_rq_total")
    assert rx.search("cluster.chat/v2-b.upstream_rq_time")
    assert not rx.search("cluster.chat/v10.upstream_rq_total")
    assert not rx.search("cluster.sluice_xds.upstream_rq_total")

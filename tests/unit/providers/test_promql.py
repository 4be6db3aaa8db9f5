"""The Prometheus provider's pure half: which queries, and their answers as a Reading."""

from __future__ import annotations

import math
from typing import Any

import pytest

from analysis.providers import ProviderError, Reading, Target
from analysis.providers.prom_answers import assemble
from analysis.providers.promql import (
    Query,
    label_value,
    plan,
    prom_duration,
    render,
)
from analysis.providers.windows import windows_between
from analysis.spec import MetricKind, MetricSpec

CLUSTER = 'envoy_cluster_name=~"chat/v1|chat/v2"'


def metric(
    name: str, kind: MetricKind, source: str | None = None, query: str | None = None
) -> MetricSpec:
    return MetricSpec(name, kind, 0.1, 0.05, source=source, query=query)


def target(*metrics: MetricSpec) -> Target:
    return Target("chat", ("v1", "v2"), {"v1": "chat/v1", "v2": "chat/v2"}, metrics, 60.0)


def sample(value: float | str, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [1700000000.0, str(value)]}


def promqls(queries: tuple[Query, ...]) -> list[str]:
    return [q.promql for q in queries]


@pytest.mark.parametrize(
    ("seconds", "text"), [(60, "60s"), (1, "1s"), (1.5, "1500ms"), (0.0004, "1ms"), (300, "300s")]
)
def test_prom_duration(seconds: float, text: str) -> None:
    assert prom_duration(seconds) == text


def test_prom_duration_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        prom_duration(0)


def test_render_and_escape() -> None:
    assert label_value('a"b\\c') == 'a\\"b\\\\c'
    text = render(
        'x{s="{{service}}",v="{{ version }}"}[{{interval}}]',
        service="chat",
        version='v"2',
        interval_s=30,
    )
    assert text == 'x{s="chat",v="v\\"2"}[30s]'


def test_requests_only_when_no_metric() -> None:
    assert promqls(plan(target())) == [f"envoy_cluster_upstream_rq_completed{{{CLUSTER}}}"]


def test_envoy_builtins() -> None:
    queries = plan(
        target(
            metric("errors", MetricKind.ERROR_RATE),
            metric("timeouts", MetricKind.ERROR_RATE, "timeout"),
            metric("resets", MetricKind.ERROR_RATE, "reset"),
            metric("p95", MetricKind.LATENCY),
            metric("mean", MetricKind.MEAN, "latency"),
        )
    )
    assert promqls(queries) == [
        f"envoy_cluster_upstream_rq_completed{{{CLUSTER}}}",
        f'envoy_cluster_upstream_rq_xx{{{CLUSTER},envoy_response_code_class="5"}}',
        f"envoy_cluster_upstream_rq_timeout{{{CLUSTER}}}",
        f'{{__name__=~"envoy_cluster_upstream_rq_(rx|tx)_reset",{CLUSTER}}}',
        f"envoy_cluster_upstream_rq_time_bucket{{{CLUSTER}}}",
        f"envoy_cluster_upstream_rq_time_sum{{{CLUSTER}}}",
        f"envoy_cluster_upstream_rq_time_count{{{CLUSTER}}}",
    ]
    assert [q.required for q in queries] == [True] + [False] * 6


def test_pod_builtins_use_the_selector_per_version() -> None:
    queries = plan(
        target(
            metric("ttft", MetricKind.LATENCY, "ttft"),
            metric("itl", MetricKind.LATENCY, "itl"),
            metric("pod errors", MetricKind.ERROR_RATE, "pod_5xx"),
        ),
        pod_selector='app="{{service}}",track="{{version}}"',
    )
    texts = promqls(queries)
    assert 'vllm:time_to_first_token_seconds_bucket{app="chat",track="v2"}' in texts
    assert 'vllm:inter_token_latency_seconds_bucket{app="chat",track="v1"}' in texts
    assert 'vllm:time_per_output_token_seconds_bucket{app="chat",track="v1"}' in texts
    assert 'http_requests_total{app="chat",track="v2",handler=~"/v1/.*",status=~"5.."}' in texts


@pytest.mark.parametrize(
    ("m", "message"),
    [
        (metric("x", MetricKind.ERROR_RATE, "oom"), "no built-in error class 'oom'"),
        (metric("x", MetricKind.LATENCY, "queue"), "no built-in latency 'queue'"),
        (metric("tokens", MetricKind.MEAN), "no built-in mean 'tokens'"),
    ],
)
def test_unknown_sources_need_a_query(m: MetricSpec, message: str) -> None:
    with pytest.raises(ProviderError, match=message):
        plan(target(m))


def test_custom_query_replaces_its_slot() -> None:
    custom = metric(
        "errors",
        MetricKind.ERROR_RATE,
        query='sum(increase(e{version="{{version}}"}[{{interval}}]))',
    )
    queries = plan(target(custom, metric("errors too", MetricKind.ERROR_RATE)))
    assert promqls(queries) == [
        f"envoy_cluster_upstream_rq_completed{{{CLUSTER}}}",
        'sum(increase(e{version="v1"}[60s]))',
        'sum(increase(e{version="v2"}[60s]))',
    ]


def envoy_answers(
    req: tuple[float, float], five: tuple[float, float], instance: str = "envoy-1:9901"
) -> dict[str, list[dict[str, Any]]]:
    lab = {"job": "envoy", "instance": instance}
    return {
        "requests": [
            sample(req[0], envoy_cluster_name="chat/v1", **lab),
            sample(req[1], envoy_cluster_name="chat/v2", **lab),
        ],
        "errors": [
            sample(five[0], envoy_cluster_name="chat/v1", envoy_response_code_class="5", **lab),
            sample(five[1], envoy_cluster_name="chat/v2", envoy_response_code_class="5", **lab),
        ],
    }


def answers_for(queries: tuple[Query, ...], by_slot: dict[str, list[dict[str, Any]]]) -> list[Any]:
    return [
        by_slot.get(q.slot + (":" + q.name if q.name else ""), by_slot.get(q.slot, []))
        for q in queries
    ]


def test_assemble_envoy_counters_per_origin() -> None:
    t = target(metric("errors", MetricKind.ERROR_RATE))
    queries = plan(t)
    a = envoy_answers((100, 50), (1, 2))
    b = envoy_answers((7, 3), (0, 0), instance="envoy-2:9901")
    merged = {k: a[k] + b[k] for k in a}
    r = assemble(t, 1700000000.0, queries, answers_for(queries, merged))
    assert set(r.origins) == {"job=envoy,instance=envoy-1:9901", "job=envoy,instance=envoy-2:9901"}
    one = r.origins["job=envoy,instance=envoy-1:9901"]
    assert (one["v1"].requests, one["v1"].errors, one["v2"].errors) == (100, 1, 2)


def test_lazy_envoy_counters_may_be_absent_but_requests_may_not() -> None:
    t = target(metric("errors", MetricKind.ERROR_RATE))
    queries = plan(t)
    a = envoy_answers((100, 50), (1, 2))
    r = assemble(t, 1.0, queries, answers_for(queries, {"requests": a["requests"]}))
    assert r.origins["job=envoy,instance=envoy-1:9901"]["v2"].errors == 0
    with pytest.raises(ProviderError, match="no data for cluster chat/v2"):
        assemble(t, 1.0, queries, answers_for(queries, {"requests": a["requests"][:1]}))


def test_envoy_histogram_in_seconds_with_sum() -> None:
    t = target(metric("p95", MetricKind.LATENCY), metric("mean", MetricKind.MEAN, "latency"))
    queries = plan(t)
    lab = {"instance": "e:1", "envoy_cluster_name": "chat/v1"}
    by_slot = {
        "requests": [sample(4, **lab), sample(0, instance="e:1", envoy_cluster_name="chat/v2")],
        "hist:latency": [
            sample(1, le="10", **lab),
            sample(3, le="100", **lab),
            sample(4, le="+Inf", **lab),
        ],
        "sum:latency": [sample(250, **lab)],
        "count:latency": [sample(4, **lab)],
    }
    r = assemble(t, 1.0, queries, answers_for(queries, by_slot))
    v1 = r.origins["instance=e:1"]["v1"]
    assert v1.histograms["latency"].bounds == (0.01, 0.1, math.inf)
    assert v1.histograms["latency"].cumulative == (1, 3, 4)
    assert v1.histograms["latency"].total == pytest.approx(0.25)
    assert v1.means["latency"] == (pytest.approx(0.25), 4)


def test_itl_falls_back_to_time_per_output_token_and_pods_are_required() -> None:
    t = target(metric("itl", MetricKind.LATENCY, "itl"))
    queries = plan(t)
    req = envoy_answers((1, 1), (0, 0))["requests"]
    tpot = [sample(2, le="0.05", instance="pod-a"), sample(3, le="+Inf", instance="pod-a")]
    answers = [
        req if q.slot == "requests" else (tpot if "time_per_output" in q.promql else [])
        for q in queries
    ]
    r = assemble(t, 1.0, queries, answers)
    assert r.origins["instance=pod-a"]["v2"].histograms["itl"].cumulative == (2, 3)
    empty = [req if q.slot == "requests" else [] for q in queries]
    with pytest.raises(ProviderError, match="check the pod selector"):
        assemble(t, 1.0, queries, empty)


def test_different_layouts_inside_one_origin_are_an_error() -> None:
    t = target(metric("e2e", MetricKind.LATENCY, "e2e"))
    queries = plan(t)
    req = envoy_answers((1, 1), (0, 0))["requests"]
    mixed = [
        sample(1, le="1", instance="p", model_name="a"),
        sample(1, le="+Inf", instance="p", model_name="a"),
        sample(1, le="2", instance="p", model_name="b"),
        sample(1, le="+Inf", instance="p", model_name="b"),
    ]
    answers = [req if q.slot == "requests" else mixed for q in queries]
    with pytest.raises(ProviderError, match="different bucket layouts"):
        assemble(t, 1.0, queries, answers)


def test_custom_queries_become_increments() -> None:
    t = target(
        metric("errors", MetricKind.ERROR_RATE, query="errs{v='{{version}}'}"),
        metric("pod oom", MetricKind.ERROR_RATE, "oom", query="oom{v='{{version}}'}"),
        metric("queue", MetricKind.LATENCY, "queue", query="q{v='{{version}}'}"),
        metric("tokens", MetricKind.MEAN, query="tok{v='{{version}}'}"),
    )
    queries = plan(t)
    req = envoy_answers((10, 20), (0, 0))["requests"]

    def answer(q: Query) -> list[dict[str, Any]]:
        if q.slot == "requests":
            return req
        if q.promql.startswith("errs"):
            return [sample(1.4), sample(2.0)]
        if q.promql.startswith("oom"):
            return [sample(0)]
        if q.promql.startswith("q"):
            return [sample(2.2, le="0.5"), sample(5.1, le="+Inf")]
        return [sample(300, stat="sum"), sample(12, stat="count")]

    r = assemble(t, 1.0, queries, [answer(q) for q in queries])
    inc = r.increments["v2"]
    assert inc.errors == pytest.approx(3.4)
    assert inc.error_classes == {"oom": 0}
    assert inc.histograms["queue"].bounds == (0.5, math.inf)
    assert inc.means["tokens"] == (300, 12)
    prev = Reading(0.0, r.origins)
    windows, reason = windows_between(prev, r, t)
    assert reason is None
    assert (windows["v2"].requests, windows["v2"].errors) == (0, 3)
    assert windows["v2"].histograms["queue"].counts == (2, 3)


def test_empty_custom_answer_is_no_data_not_zero() -> None:
    t = target(metric("errors", MetricKind.ERROR_RATE, query="errs"))
    queries = plan(t)
    req = envoy_answers((10, 20), (0, 0))["requests"]
    answers = [req if q.slot == "requests" else [] for q in queries]
    with pytest.raises(ProviderError, match="or vector"):
        assemble(t, 1.0, queries, answers)


def test_mean_query_needs_stat_labels() -> None:
    t = target(metric("tokens", MetricKind.MEAN, query="tok"))
    queries = plan(t)
    req = envoy_answers((10, 20), (0, 0))["requests"]
    answers = [req if q.slot == "requests" else [sample(3)] for q in queries]
    with pytest.raises(ProviderError, match='stat="sum"'):
        assemble(t, 1.0, queries, answers)


@pytest.mark.parametrize(
    "answer",
    [
        [1700000000.0, "1"],  # a scalar
        [{"metric": {}, "value": [1.0, "NaN"]}],
        [{"metric": {}, "value": [1.0, "x"]}],
        [{"metric": "nope", "value": [1.0, "1"]}],
        [{"metric": {}}],
    ],
)
def test_malformed_answers(answer: Any) -> None:
    t = target()
    with pytest.raises(ProviderError):
        assemble(t, 1.0, plan(t), [answer])

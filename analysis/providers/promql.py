"""The Prometheus provider's queries: which series, for which metric (pure).

``plan(target, pod_selector)`` lists the instant queries one read needs (only
what the target's metrics use); ``prom_answers.assemble`` turns their answers
into a :class:`Reading`. Nothing here does I/O.

Built-in series, by what a metric's ``source`` names (``C`` stands for
``envoy_cluster_name=~"<the target's clusters>"``, ``P`` for the version's
pod selector; *required* ones must answer for every version):

- requests, always: ``envoy_cluster_upstream_rq_completed{C}``, required;
- errors (no source) and ``5xx``: ``envoy_cluster_upstream_rq_xx{C,
  envoy_response_code_class="5"}``; ``4xx``: the same with ``"4"``;
- ``timeout``: ``envoy_cluster_upstream_rq_timeout{C}``; ``reset``:
  ``envoy_cluster_upstream_rq_{rx,tx}_reset{C}``; ``connect_fail``:
  ``envoy_cluster_upstream_cx_connect_fail{C}``;
- ``pod_5xx``: ``http_requests_total{P,handler=~"/v1/.*",status=~"5.."}``;
- histogram ``latency``: ``envoy_cluster_upstream_rq_time_bucket{C}`` (ms);
- histograms ``ttft``: ``vllm:time_to_first_token_seconds_bucket{P}``,
  ``itl``: ``vllm:inter_token_latency_seconds_bucket{P}`` or, when a version
  has none, ``vllm:time_per_output_token_seconds_bucket{P}``, ``e2e``:
  ``vllm:e2e_request_latency_seconds_bucket{P}``; required;
- means ``latency``, ``ttft``, ``itl``, ``e2e``: the histogram's ``_sum`` and
  ``_count``; ``prompt_tokens``, ``output_tokens``:
  ``vllm:request_prompt_tokens`` and ``vllm:request_generation_tokens``
  ``_sum``/``_count{P}`` (pod ones required).

A ``slow_rate`` metric reads its histogram as ``latency`` does; a ``ratio``
reads the two means named by ``numerator`` and ``denominator``
(``MetricSpec.needs``).

``pod_5xx`` is what vLLM's OpenAI server counts itself (its HTTP metrics, from
``prometheus-fastapi-instrumentator``: ``status`` is ``5xx`` when grouped, the
code otherwise), for requests that failed inside the pod; Envoy's ``5xx`` also
sees the ones that never reached it. "Required" series must answer for every
version, or the read fails (NODATA): a pod selector that matches nothing is
a configuration error to report, not a quiet zero. Envoy creates
``upstream_rq_xx`` and ``upstream_rq_time`` on first use, so their absence
means zero, and the same goes for lazily labelled HTTP counters.

Every series keeps its *origin* (its ``job``/``instance``/``namespace``/``pod``
labels): counters are subtracted per origin by ``windows.windows_between``,
never summed across a restart.

A metric with its own ``query`` replaces the built-in of its slot. Its
placeholders ``{{service}}``, ``{{version}}``, ``{{interval}}`` (the look
interval as a Prometheus duration, e.g. ``60s``) are filled per version, and
the answer is that version's per-window increment (``Reading.increments``):

- ``error_rate``: the window's error count (all series summed), e.g.
  ``sum(increase(http_requests_total{status="500",version="{{version}}"}[{{interval}}]))``.
  It fills ``errors`` (no ``source``) or the error class ``source``;
- ``latency``: one series per bucket with its ``le`` label, in seconds: the
  window's cumulative bucket counts, e.g. ``sum by (le) (increase(x_bucket{..}[{{interval}}]))``;
- ``mean``: two series told apart by a ``stat`` label, ``sum`` and ``count``.

An empty answer to a custom query is NODATA, never zero (a misspelt metric
would otherwise pass any error budget): write ``... or vector(0)`` where zero
is meant. ``increase()`` extrapolates to the window's edges, so custom counts
are approximate and rounded; built-ins are exact differences.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from analysis.providers import ProviderError, Target
from analysis.providers.envoy_text import excerpt
from analysis.spec import MetricKind, MetricSpec

__all__ = [
    "DEFAULT_POD_SELECTOR",
    "Query",
    "label_value",
    "plan",
    "prom_duration",
    "render",
]

DEFAULT_POD_SELECTOR = 'service="{{service}}",version="{{version}}"'
ORIGIN_LABELS = ("job", "instance", "namespace", "pod")
_PLACEHOLDER = re.compile(r"\{\{\s*(service|version|interval)\s*\}\}")

_ENVOY_CLASSES = {
    "5xx": 'envoy_cluster_upstream_rq_xx{%s,envoy_response_code_class="5"}',
    "4xx": 'envoy_cluster_upstream_rq_xx{%s,envoy_response_code_class="4"}',
    "timeout": "envoy_cluster_upstream_rq_timeout{%s}",
    "reset": '{__name__=~"envoy_cluster_upstream_rq_(rx|tx)_reset",%s}',
    "connect_fail": "envoy_cluster_upstream_cx_connect_fail{%s}",
}
_POD_CLASSES = {"pod_5xx": 'http_requests_total{%s,handler=~"/v1/.*",status=~"5.."}'}
# histogram name -> metric base names (first that answers wins), True when on pods
_HISTOGRAMS: Mapping[str, tuple[tuple[str, ...], bool]] = {
    "latency": (("envoy_cluster_upstream_rq_time",), False),
    "ttft": (("vllm:time_to_first_token_seconds",), True),
    "itl": (("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"), True),
    "e2e": (("vllm:e2e_request_latency_seconds",), True),
}
_MEANS: Mapping[str, tuple[tuple[str, ...], bool]] = {
    **_HISTOGRAMS,
    "prompt_tokens": (("vllm:request_prompt_tokens",), True),
    "output_tokens": (("vllm:request_generation_tokens",), True),
}


def prom_duration(seconds: float) -> str:
    """``60`` -> ``"60s"``, ``1.5`` -> ``"1500ms"`` (a Prometheus range duration)."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"interval must be positive, got {seconds}")
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def label_value(text: str) -> str:
    """``text`` escaped for use inside a PromQL double-quoted string."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(template: str, *, service: str, version: str, interval_s: float) -> str:
    """Fill ``{{service}}``, ``{{version}}`` (escaped for a label value) and ``{{interval}}``."""
    values = {
        "service": label_value(service),
        "version": label_value(version),
        "interval": prom_duration(interval_s),
    }
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


@dataclass(frozen=True)
class Query:
    """One instant query and the slot its answer fills."""

    promql: str
    slot: str  # requests | errors | class | hist | sum | count | custom
    name: str = ""  # error class, histogram or mean name (custom: the metric's slot key)
    version: str | None = None  # None: Envoy series, version from the cluster label
    required: bool = False
    scale: float = 1.0  # to seconds (bounds and sums of Envoy's millisecond histogram)
    kind: MetricKind | None = None  # custom queries: what the answer means
    group: str = ""  # alternatives (itl): the first non-empty answer of a group wins


def _custom_slot(m: MetricSpec) -> str:
    if m.kind is MetricKind.ERROR_RATE:
        return m.source or ""  # "": the errors total
    return m.histogram or m.source or m.name  # latency and slow_rate: the histogram


def _builtin(m: MetricSpec, histogram: bool, name: str, envoy: str,
             pods: Mapping[str, str]) -> list[Query]:
    """Queries for one built-in histogram or mean (``name``) of a metric."""
    queries: list[Query] = []
    what = "mean" if m.kind is MetricKind.RATIO else m.kind.value
    table = _HISTOGRAMS if histogram else _MEANS
    if name not in table:
        raise ProviderError(
            f"metric {m.name}: no built-in {what} {excerpt(name)} "
            f"(known: {', '.join(table)}); give it a query"
        )
    bases, on_pods = table[name]
    suffixes = ("bucket",) if histogram else ("sum", "count")
    scale = 1.0 if on_pods else 0.001
    for suffix in suffixes:
        slot = "hist" if suffix == "bucket" else suffix
        group = f"{slot}:{name}"
        for base in bases:
            if on_pods:
                queries += [
                    Query(
                        f"{base}_{suffix}{{{pods[v]}}}",
                        slot,
                        name,
                        v,
                        True,
                        scale if suffix != "count" else 1.0,
                        group=group,
                    )
                    for v in pods
                ]
            else:
                queries.append(
                    Query(
                        f"{base}_{suffix}{{{envoy}}}",
                        slot,
                        name,
                        None,
                        False,
                        scale if suffix != "count" else 1.0,
                        group=group,
                    )
                )
    return queries


def plan(target: Target, pod_selector: str = DEFAULT_POD_SELECTOR) -> tuple[Query, ...]:
    """The queries one read of ``target`` needs; raises ProviderError on an unknown source."""
    regex = "|".join(re.escape(target.clusters[v]) for v in target.versions)
    envoy = f'envoy_cluster_name=~"{label_value(regex)}"'
    pods = {
        v: render(pod_selector, service=target.service, version=v, interval_s=target.interval_s)
        for v in target.versions
    }
    queries: list[Query] = [
        Query(f"envoy_cluster_upstream_rq_completed{{{envoy}}}", "requests", required=True)
    ]
    custom = {(m.kind, _custom_slot(m)) for m in target.metrics if m.query}
    for m in target.metrics:
        if m.query:
            queries += [
                Query(
                    render(
                        m.query, service=target.service, version=v, interval_s=target.interval_s
                    ),
                    "custom",
                    _custom_slot(m),
                    v,
                    required=True,
                    kind=m.kind,
                )
                for v in target.versions
            ]
            continue
        if (m.kind, _custom_slot(m)) in custom:
            continue  # a custom query of another metric fills this slot
        if m.kind is MetricKind.ERROR_RATE:
            source = m.source
            if source is None:
                queries.append(Query(_ENVOY_CLASSES["5xx"] % envoy, "errors"))
            elif source in _ENVOY_CLASSES:
                queries.append(Query(_ENVOY_CLASSES[source] % envoy, "class", source))
            elif source in _POD_CLASSES:
                queries += [
                    Query(_POD_CLASSES[source] % pods[v], "class", source, v)
                    for v in target.versions
                ]
            else:
                raise ProviderError(
                    f"metric {m.name}: no built-in error class {excerpt(source)} (known: "
                    f"{', '.join([*_ENVOY_CLASSES, *_POD_CLASSES])}); give it a query"
                )
            continue
        for slot_kind, name in m.needs:  # a slow_rate reads a histogram, a ratio two means
            if slot_kind == "ratio":
                raise ProviderError(
                    f"metric {m.name}: Prometheus has no built-in ratio {excerpt(name)}; set "
                    "numerator and denominator (two means)"
                )
            queries += _builtin(m, slot_kind == "histogram", name, envoy, pods)
    return tuple(dict.fromkeys(queries))

"""Answers of the Prometheus provider's queries -> a :class:`Reading` (pure).

``assemble(target, t, queries, answers)`` takes the queries of ``promql.plan``
and the ``result`` lists of their instant queries, in the same order. Every
series keeps its origin (``promql.ORIGIN_LABELS``); series of one origin are
summed per version. Required built-ins with no series for a version, custom
queries with no answer, anything but an instant vector, a value that is not
a finite number, a bucket without a numeric ``le`` or series of one origin
with different bucket layouts: :class:`ProviderError` (NODATA).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from analysis.providers import HistogramReading, ProviderError, Reading, Target, VersionReading
from analysis.providers.envoy_text import excerpt
from analysis.providers.promql import ORIGIN_LABELS, Query
from analysis.spec import MetricKind

__all__ = ["assemble"]


@dataclass
class _Acc:
    requests: float = 0.0
    errors: float = 0.0
    classes: dict[str, float] = field(default_factory=dict)
    # histogram name -> series (labels without le) -> le -> cumulative
    buckets: dict[str, dict[tuple[tuple[str, str], ...], dict[float, float]]] = field(
        default_factory=dict
    )
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)


def _samples(query: Query, answer: Any) -> list[tuple[dict[str, str], float]]:
    """``[(labels, value)]`` of an instant-vector answer; ProviderError for anything else."""
    if not isinstance(answer, list) or any(not isinstance(s, dict) for s in answer):
        raise ProviderError(f"{excerpt(query.promql)}: not an instant vector")
    out = []
    for s in answer:
        labels, value = s.get("metric"), s.get("value")
        if not isinstance(labels, dict) or not isinstance(value, list) or len(value) != 2:
            raise ProviderError(f"{excerpt(query.promql)}: malformed sample {excerpt(str(s))}")
        try:
            number = float(value[1])
        except (TypeError, ValueError, OverflowError):  # OverflowError: a huge JSON integer
            number = math.nan
        if not math.isfinite(number):
            raise ProviderError(f"{excerpt(query.promql)}: bad value {excerpt(str(value[1]))}")
        out.append(({str(k): str(v) for k, v in labels.items()}, number))
    return out


def _origin(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={labels[k]}" for k in ORIGIN_LABELS if k in labels)


def _le(query: Query, labels: Mapping[str, str]) -> float:
    text = labels.get("le", "")
    try:
        bound = float(text)
    except ValueError:
        bound = math.nan
    if math.isnan(bound):
        raise ProviderError(
            f"{excerpt(query.promql)}: bucket without a numeric le ({excerpt(text)})"
        )
    return bound * query.scale if bound != math.inf else math.inf


def _histogram(
    where: str, series: Mapping[Any, Mapping[float, float]], total: float
) -> HistogramReading:
    layouts = {tuple(sorted(b)) for b in series.values()}
    if len(layouts) != 1:
        raise ProviderError(f"{where}: series of one origin have different bucket layouts")
    (bounds,) = layouts
    if not bounds or bounds[-1] != math.inf:
        raise ProviderError(f"{where}: histogram has no +Inf bucket")
    cumulative = tuple(sum(b[le] for b in series.values()) for le in bounds)
    return HistogramReading(bounds, cumulative, total)


def _reading(where: str, acc: _Acc) -> VersionReading:
    histograms = {
        name: _histogram(f"{where} {name}", series, acc.sums.get(name, 0.0))
        for name, series in acc.buckets.items()
    }
    means = {name: (acc.sums.get(name, 0.0), acc.counts[name]) for name in acc.counts}
    return VersionReading(acc.requests, acc.errors, dict(acc.classes), histograms, means)


def _custom(
    query: Query,
    version: str,
    samples: list[tuple[dict[str, str], float]],
    increments: dict[str, _Acc],
) -> None:
    acc = increments.setdefault(version, _Acc())
    if query.kind is MetricKind.ERROR_RATE:
        total = sum(v for _, v in samples)
        if query.name:
            acc.classes[query.name] = total
        else:
            acc.errors = total
    elif query.kind is MetricKind.LATENCY:
        series = acc.buckets.setdefault(query.name, {}).setdefault((), {})
        for labels, v in samples:
            le = _le(query, labels)
            series[le] = series.get(le, 0.0) + v
    else:
        stats: dict[str, float] = {}
        for labels, v in samples:
            stat = labels.get("stat", "")
            if stat not in ("sum", "count"):
                raise ProviderError(
                    f"{excerpt(query.promql)}: a mean query answers series "
                    'labelled stat="sum" and stat="count"'
                )
            stats[stat] = stats.get(stat, 0.0) + v
        if set(stats) != {"sum", "count"}:
            raise ProviderError(f'{excerpt(query.promql)}: missing stat="sum" or "count"')
        acc.sums[query.name], acc.counts[query.name] = stats["sum"], stats["count"]


def assemble(target: Target, t: float, queries: Sequence[Query], answers: Sequence[Any]) -> Reading:
    """The Reading for ``queries``' answers (``custom_query`` results, same order)."""
    by_cluster = {target.clusters[v]: v for v in target.versions}
    origins: dict[str, dict[str, _Acc]] = {}
    increments: dict[str, _Acc] = {}
    chosen: dict[tuple[str, str | None], str] = {}  # (group, version) -> promql that answered
    answered: set[tuple[int, str]] = set()  # (query index, version)
    for index, (query, answer) in enumerate(zip(queries, answers, strict=True)):
        samples = _samples(query, answer)
        if query.slot == "custom":
            if not samples:
                raise ProviderError(
                    f"no data for {excerpt(query.promql)} (an empty answer "
                    "is not zero: add 'or vector(0)' if zero is meant)"
                )
            assert query.version is not None
            _custom(query, query.version, samples, increments)
            continue
        if query.group:
            key = (query.group, query.version)
            if key in chosen or not samples:
                continue
            chosen[key] = query.promql
        for labels, value in samples:
            version = query.version or by_cluster.get(labels.get("envoy_cluster_name", ""))
            if version is None:
                continue
            answered.add((index, version))
            acc = origins.setdefault(_origin(labels), {}).setdefault(version, _Acc())
            if query.slot == "requests":
                acc.requests += value
            elif query.slot == "errors":
                acc.errors += value
            elif query.slot == "class":
                acc.classes[query.name] = acc.classes.get(query.name, 0.0) + value
            elif query.slot == "hist":
                series = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                buckets = acc.buckets.setdefault(query.name, {}).setdefault(series, {})
                le = _le(query, labels)
                buckets[le] = buckets.get(le, 0.0) + value
            elif query.slot == "sum":
                acc.sums[query.name] = acc.sums.get(query.name, 0.0) + value * query.scale
            else:
                acc.counts[query.name] = acc.counts.get(query.name, 0.0) + value
    _check_required(target, queries, answered, chosen)
    return Reading(
        t=t,
        origins={o: {v: _reading(o, a) for v, a in vs.items()} for o, vs in origins.items()},
        increments={v: _reading(f"custom {v}", a) for v, a in increments.items()},
    )


def _check_required(
    target: Target,
    queries: Sequence[Query],
    answered: set[tuple[int, str]],
    chosen: Mapping[tuple[str, str | None], str],
) -> None:
    for index, query in enumerate(queries):
        if not query.required or query.slot == "custom":
            continue
        if query.group:
            if (query.group, query.version) not in chosen:
                raise ProviderError(
                    f"no data for {excerpt(query.promql, 120)}: "
                    "check the pod selector and that the pods are scraped"
                )
            continue
        for version in [query.version] if query.version else target.versions:
            if (index, version) not in answered:
                raise ProviderError(
                    f"no data for cluster {target.clusters[version]} from "
                    f"{excerpt(query.promql, 120)}"
                )

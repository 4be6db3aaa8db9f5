"""Experiment metrics: rules that depend on a metric's kind, and what its buckets allow.

Kind rules (errors): ``threshold`` goes with slow_rate and only with it;
``numerator`` and ``denominator`` go together, with ratio only, and not with
``source``; ``direction`` with mean and ratio; ``query`` not with slow_rate
or ratio (their series are read from the built-in histograms and means).

Bucket layouts (``analysis.buckets``): a test on bucket counts resolves
nothing finer than its bounds. ``validate`` knows the layout of one source:
Envoy's ``upstream_rq_time`` (the ``latency`` histogram, with either metrics
source), which has one of two layouts, the bounds ``sluice bootstrap`` sets
(``xds.bootstrap.UPSTREAM_RQ_TIME_BUCKETS_MS``, about 12 % apart) or, for
Envoys started otherwise, Envoy's defaults (2 to 5 times apart). So:

* a slow_rate ``threshold`` on it that is a bound of neither layout is an
  error (the metric could never have data); a bound of only one is a warning
  naming the nearest bounds of the other;
* a gating latency quantile on it whose ``nonInferiorityMargin`` (with
  ``minEffect``) is finer than some bucket of a layout above 10 ms gets a
  warning: a quantile in such a bucket can never be shown non-inferior, and
  the experiment would hold for good. The judge says the same at run time
  from the observed bucket (the verdict's reason and
  ``sluice_experiment_metric_coarse_buckets``).
"""

from __future__ import annotations

import math

from analysis.buckets import (
    ENVOY_DEFAULT_BUCKETS_MS,
    find_bound,
    format_seconds,
    max_spacing,
    nearest_bounds,
    unresolvable_buckets,
)
from controlplane.config.durations import format_time
from controlplane.config.errors import Errors
from controlplane.config.experiment_shapes import DIRECTED_KINDS, TIME_KINDS
from controlplane.config.fields import Value
from controlplane.config.kinds import Document
from controlplane.experiment import Strategy
from xds.bootstrap import UPSTREAM_RQ_TIME_BUCKETS_MS

ENVOY_DEFAULT_S = tuple(b / 1000 for b in ENVOY_DEFAULT_BUCKETS_MS)
SLUICE_BUCKETS_S = tuple(b / 1000 for b in UPSTREAM_RQ_TIME_BUCKETS_MS)
# Below 10 ms Sluice's layout is deliberately sparse (Envoy records whole ms), and
# model-serving latencies are longer: the advice looks at buckets from 10 ms up.
_FROM_S = 0.010
_SLUICE = "the buckets sluice bootstrap sets"
_DEFAULTS = "Envoy's default buckets"


def check_kind_fields(doc: Document, metric: Value, kind: str, errors: Errors) -> None:
    """Fields that only some kinds take, or that some kinds need (one error per problem)."""
    fields = metric.fields()
    if kind == "slow_rate" and "threshold" not in fields:
        doc.error(errors, metric, f"{metric.path}.threshold",
                  "missing required field 'threshold' (kind slow_rate counts the requests "
                  "slower than it; a bucket bound such as 500ms)")
    if "threshold" in fields and kind != "slow_rate":
        doc.error(errors, fields["threshold"], f"{metric.path}.threshold",
                  f"only valid with kind slow_rate (kind is {kind})")
    for name in ("numerator", "denominator"):
        if name in fields and kind != "ratio":
            doc.error(errors, fields[name], f"{metric.path}.{name}",
                      f"only valid with kind ratio (kind is {kind})")
    if kind == "ratio":
        pair = [n for n in ("numerator", "denominator") if n in fields]
        if len(pair) == 1:
            other = "denominator" if pair[0] == "numerator" else "numerator"
            doc.error(errors, metric, f"{metric.path}.{other}",
                      f"missing: {pair[0]} and {other} go together (two means whose sums "
                      "make the ratio)")
        if pair and "source" in fields:
            doc.error(errors, fields["source"], f"{metric.path}.source",
                      "set either source (a ratio in the samples) or numerator and "
                      "denominator (two means), not both")
    if "direction" in fields and kind not in DIRECTED_KINDS:
        doc.error(errors, fields["direction"], f"{metric.path}.direction",
                  f"only valid with kind mean or ratio ({kind}: only an increase is "
                  "harmful)")
    if "query" in fields and kind in ("slow_rate", "ratio"):
        doc.error(errors, fields["query"], f"{metric.path}.query",
                  f"not supported with kind {kind}: it reads the built-in "
                  f"{'histogram' if kind == 'slow_rate' else 'means'} (give a custom query "
                  "to a latency or mean metric instead)")


def _is_text(v: Value) -> bool:
    return v.node.tag == "tag:yaml.org,2002:str"


def _envoy_histogram(metric: Value) -> bool:
    """Does the metric read Envoy's upstream_rq_time (the built-in latency histogram)?"""
    if metric.has("query"):
        return False
    if not metric.has("source"):
        return True
    source = metric.get("source")
    return source is not None and source.text() == "latency"


def _near(bounds: tuple[float, ...], x: float) -> str:
    lo, hi = nearest_bounds(bounds, x)
    return " and ".join(format_seconds(b) for b in (lo, hi) if b is not None) or "none"


def check_threshold(doc: Document, metric: Value, errors: Errors) -> None:
    """A slow_rate threshold on Envoy's upstream_rq_time that no layout has: an error."""
    threshold = metric.get("threshold")
    if threshold is None or not _envoy_histogram(metric):
        return
    x = threshold.number()
    if find_bound(SLUICE_BUCKETS_S, x) is None and find_bound(ENVOY_DEFAULT_S, x) is None:
        doc.error(errors, threshold, threshold.path,
                  f"{format_seconds(x)} is not a bucket bound of Envoy's upstream_rq_time "
                  f"(nearest bounds: {_near(SLUICE_BUCKETS_S, x)} in {_SLUICE}, "
                  f"{_near(ENVOY_DEFAULT_S, x)} in {_DEFAULTS}), so the metric would never "
                  "have data; 500ms, 1s or 2.5s are bounds of both")


def advise_threshold(doc: Document, metric: Value, warnings: Errors) -> None:
    threshold = metric.get("threshold")
    if threshold is None or not _envoy_histogram(metric):
        return
    x = threshold.number()
    in_sluice = find_bound(SLUICE_BUCKETS_S, x) is not None
    in_envoy = find_bound(ENVOY_DEFAULT_S, x) is not None
    if in_sluice == in_envoy:
        return  # both: fine; neither: an error already
    has, lacks, bounds = ((_SLUICE, _DEFAULTS, ENVOY_DEFAULT_S) if in_sluice
                          else (_DEFAULTS, _SLUICE, SLUICE_BUCKETS_S))
    doc.error(warnings, threshold, threshold.path,
              f"{format_seconds(x)} is a bound of {has} but not of {lacks} (nearest: "
              f"{_near(bounds, x)}): with Envoys that use those the metric has no data and "
              "holds; 500ms, 1s or 2.5s are bounds of both")


def advise_quantile(doc: Document, metric: Value, warnings: Errors) -> None:
    """A latency quantile on Envoy's upstream_rq_time finer than the buckets: a warning."""
    ni, gating = metric.get("nonInferiorityMargin"), metric.get("gating")
    if ni is None or not _envoy_histogram(metric) or (gating is not None and not gating.flag()):
        return  # a metric that does not gate never holds the experiment
    effect = metric.get("minEffect")
    # a bare number here is an error reported elsewhere, not seconds
    me = effect.number() if effect is not None and effect.node.tag.endswith(":str") else 0.0
    q = metric.get("quantile")
    name = f"p{(q.number() if q is not None else 0.95) * 100:g}"
    margin = ni.number()
    absolute = f" or minEffect {format_seconds(me)}" if me > 0 else ""
    slow = (f"a slow_rate metric at a bound near the {name} (exact with any buckets, e.g. "
            "threshold: 500ms)")
    sluice = unresolvable_buckets(SLUICE_BUCKETS_S, margin, me, above=_FROM_S)
    envoy = unresolvable_buckets(ENVOY_DEFAULT_S, margin, me, above=_FROM_S)
    spacing = max_spacing(SLUICE_BUCKETS_S, above=_FROM_S)
    if sluice:
        lo, hi = sluice[0]
        doc.error(warnings, ni, ni.path,
                  f"{margin:.0%}{absolute} is finer than the buckets of Envoy's "
                  f"upstream_rq_time: {_DEFAULTS} are 2 to 5 times apart and even {_SLUICE} "
                  f"are up to {spacing:.3g}x apart, so a {name} in a bucket such as "
                  f"({format_seconds(lo)}, {format_seconds(hi)}] can never be shown "
                  "non-inferior and the experiment would hold at that step for good; use "
                  f"{slow}, or nonInferiorityMargin {math.ceil((spacing - 1) * 100)}% or more")
    elif envoy:
        lo = envoy[0][0]
        doc.error(warnings, ni, ni.path,
                  f"with {_DEFAULTS} for upstream_rq_time (2 to 5 times apart) a {name} above "
                  f"{format_seconds(lo)} can never be shown within {margin:.0%}{absolute} "
                  "(the experiment would hold at its first step for good); this metric needs "
                  f"Envoys started from sluice bootstrap (bounds at most {spacing:.3g}x apart), or "
                  f"use {slow}")


# --- rules on the metrics and guards of one document (called by experiment.py) ------


def check_metrics(doc: Document, spec: Value, metrics: Value, strategy: Strategy | None,
                   errors: Errors) -> dict[str, str]:
    kinds: dict[str, str] = {}
    first: dict[str, Value] = {}
    source = spec.get("metricsSource")
    prometheus = source is not None and source.has("prometheus")
    for metric in metrics.items():
        name, kind = metric.get("name"), metric.get("kind")
        if name is not None:
            if name.text() in first:
                doc.error(errors, name.mark, name.path,
                          f"duplicate metric name '{name.text()}' (first at line "
                          f"{first[name.text()].mark.line})")
            else:
                first[name.text()] = name
                if kind is not None:
                    kinds[name.text()] = kind.text()
        if kind is None:
            continue
        k = kind.text()
        fields = metric.fields()
        if "quantile" in fields and k != "latency":
            doc.error(errors, fields["quantile"], f"{metric.path}.quantile",
                      f"only valid with kind latency (kind is {k})")
        check_kind_fields(doc, metric, k, errors)
        check_threshold(doc, metric, errors)
        direction, harm = metric.get("direction"), metric.get("harmMargin")
        if (direction is not None and direction.text() == "lowerIsWorse" and harm is not None
                and harm.number() >= 1):
            doc.error(errors, harm, harm.path,
                      "must be below 1 when lower is worse (a drop of 100 % or more cannot "
                      "happen)")
        effect = metric.get("minEffect")
        if effect is not None:
            _check_unit(doc, effect, k, "minEffect", errors)
        if "query" in fields and not prometheus:
            doc.error(errors, fields["query"], f"{metric.path}.query",
                      "a query needs metricsSource: {prometheus: {url: ...}}")
        if "primary" in fields and strategy is not None and strategy is not Strategy.ABTEST:
            doc.error(errors, fields["primary"], f"{metric.path}.primary",
                      f"only valid with strategy abtest (strategy is {strategy.value})")
    return kinds


def _check_unit(doc: Document, v: Value, kind: str, what: str, errors: Errors) -> None:
    if kind in TIME_KINDS and not _is_text(v) and v.number() != 0:
        number = v.number()
        doc.error(errors, v, v.path,
                  f"a {kind} metric takes a duration with its unit, e.g. "
                  f"{format_time(number / 1000)} or {format_time(number)}; a bare number "
                  f"({number:g}) would leave the unit to guesswork")
    elif kind not in TIME_KINDS and _is_text(v):
        doc.error(errors, v, v.path,
                  f"a {kind} metric takes a plain number here (in the metric's own unit), "
                  f"not a duration ({v.node.value!s:.20})")


def check_guards(doc: Document, guards: Value, kinds: dict[str, str], errors: Errors) -> None:
    for guard in guards.items():
        metric, above = guard.get("metric"), guard.get("above")
        if metric is None:
            continue
        kind = kinds.get(metric.text())
        if kind is None:
            known = ", ".join(kinds) or "none"
            doc.error(errors, metric, metric.path,
                      f"no metric named '{metric.text()}' in spec.metrics (known: {known})")
            continue
        if above is not None:
            _check_unit(doc, above, kind, "above", errors)


def advise_experiment(doc: Document, warnings: Errors) -> None:
    """Settings that are valid but probably not what was meant."""
    spec = doc.spec
    metrics = spec.get("metrics") if spec is not None else None
    if metrics is None:
        return
    for metric in metrics.items():
        kind = metric.get("kind")
        if kind is not None and kind.text() == "slow_rate":
            advise_threshold(doc, metric, warnings)
        if kind is not None and kind.text() == "latency":
            advise_quantile(doc, metric, warnings)
        ni, harm = metric.get("nonInferiorityMargin"), metric.get("harmMargin")
        if ni is None or harm is None or ni.number() <= harm.number():
            continue
        doc.error(warnings, ni, ni.path,
                  f"{ni.number():g} exceeds harmMargin {harm.number():g}: a candidate worse "
                  f"by between {harm.number():.0%} and {ni.number():.0%} may be promoted or "
                  "rolled back, whichever evidence comes first; set nonInferiorityMargin <= "
                  "harmMargin so that the outcome depends on the effect alone")

"""Experiment metrics: kind-dependent fields, units and what Envoy's buckets allow."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.spec import Direction, MetricKind
from controlplane.config import load_text
from controlplane.experiment import Experiment
from controlplane.validate import main

HEAD = """\
apiVersion: sluice.dev/v1alpha1
kind: Experiment
metadata: {name: canary}
spec:
  baseline: v1
  candidate: v2
  steps: [5, 50]
  metrics:
"""
# Metric i is on file line 9 + i; its fields start at column 7.


def load(*metrics: str) -> tuple[list[tuple[int, int, str, str]], list[tuple[int, str, str]],
                                 Experiment | None]:
    text = HEAD + "".join(f"    - {m}\n" for m in metrics)
    result = load_text(text, "x.yaml")
    [d] = result.documents
    errors = [(e.line, e.column, e.path, e.message) for e in d.errors]
    warnings = [(w.line, w.path, w.message) for w in d.warnings]
    return errors, warnings, d.value if isinstance(d.value, Experiment) else None


def test_slow_rate_and_ratio_build_into_the_spec() -> None:
    errors, warnings, exp = load(
        "{name: slow, kind: slow_rate, threshold: 500ms, harmMargin: 0.5, "
        "nonInferiorityMargin: 0.5, minEffect: 0.005}",
        "{name: tps, kind: ratio, numerator: output_tokens, denominator: e2e, "
        "direction: lowerIsWorse, harmMargin: 0.05, nonInferiorityMargin: 0.05}",
        "{name: ttft-per-token, kind: ratio, source: ttft_per_token, harmMargin: 0.1, "
        "nonInferiorityMargin: 0.1}")
    assert errors == [] and warnings == [] and exp is not None
    slow, tps, ttft = exp.analysis.metrics
    assert slow.kind is MetricKind.SLOW_RATE and slow.threshold_s == 0.5
    assert slow.histogram == "latency" and slow.needs == (("histogram", "latency"),)
    assert tps.kind is MetricKind.RATIO and tps.direction is Direction.LOWER_IS_WORSE
    assert tps.needs == (("mean", "output_tokens"), ("mean", "e2e"))
    assert ttft.needs == (("ratio", "ttft_per_token"),)


def test_a_bare_number_as_latency_min_effect_is_an_error_with_position() -> None:
    metric = "{name: p95, kind: latency, harmMargin: 0.1, nonInferiorityMargin: 0.1, minEffect: 20}"
    errors, _, exp = load(metric)
    assert exp is None
    assert errors == [(9, _column(metric, "minEffect"), "spec.metrics[0].minEffect",
                       "a latency metric takes a duration with its unit, e.g. 20ms or 20s; a "
                       "bare number (20) would leave the unit to guesswork")]


def _column(metric: str, at: str) -> int:
    return len("    - ") + metric.index(at) + 1


@pytest.mark.parametrize(("metric", "at", "path", "phrase"), [
    ("{name: s, kind: slow_rate, harmMargin: 0, nonInferiorityMargin: 0.5}", "{",
     "spec.metrics[0].threshold", "missing required field 'threshold'"),
    ("{name: s, kind: latency, threshold: 1s, harmMargin: 0, nonInferiorityMargin: 2}",
     "threshold", "spec.metrics[0].threshold", "only valid with kind slow_rate (kind is latency)"),
    ("{name: s, kind: slow_rate, threshold: 500, harmMargin: 0, nonInferiorityMargin: 0.5}",
     "500", "spec.metrics[0].threshold", "expected a duration with its unit"),
    ("{name: s, kind: slow_rate, threshold: 0s, harmMargin: 0, nonInferiorityMargin: 0.5}",
     "0s", "spec.metrics[0].threshold", "must be greater than 0"),
    ("{name: s, kind: slow_rate, threshold: 300ms, harmMargin: 0, nonInferiorityMargin: 0.5}",
     "threshold", "spec.metrics[0].threshold",
     "300ms is not a bucket bound of Envoy's upstream_rq_time (nearest bounds: 280ms and 320ms "
     "in the buckets sluice bootstrap sets, 250ms and 500ms in Envoy's default buckets)"),
    ("{name: s, kind: slow_rate, threshold: 1s, minEffect: 20ms, harmMargin: 0, "
     "nonInferiorityMargin: 0.5}", "minEffect", "spec.metrics[0].minEffect",
     "a slow_rate metric takes a plain number here"),
    ("{name: r, kind: ratio, numerator: tokens, harmMargin: 0, nonInferiorityMargin: 0.1}", "{",
     "spec.metrics[0].denominator", "numerator and denominator go together"),
    ("{name: r, kind: ratio, numerator: a, denominator: b, source: c, harmMargin: 0, "
     "nonInferiorityMargin: 0.1}", "source", "spec.metrics[0].source",
     "set either source (a ratio in the samples) or numerator and denominator"),
    ("{name: r, kind: mean, numerator: a, harmMargin: 0, nonInferiorityMargin: 0.1}",
     "numerator", "spec.metrics[0].numerator", "only valid with kind ratio (kind is mean)"),
    ("{name: r, kind: slow_rate, threshold: 1s, direction: lowerIsWorse, harmMargin: 0, "
     "nonInferiorityMargin: 0.1}", "direction", "spec.metrics[0].direction",
     "only valid with kind mean or ratio"),
    ("{name: r, kind: colour, harmMargin: 0, nonInferiorityMargin: 0.1}", "colour",
     "spec.metrics[0].kind",
     "must be one of error_rate, latency, slow_rate, mean, ratio (got 'colour')"),
])
def test_kind_rules_one_error_each_with_position(metric: str, at: str, path: str,
                                                 phrase: str) -> None:
    errors, _, _ = load(metric)
    assert len(errors) == 1, errors
    assert errors[0][:3] == (9, _column(metric, at), path)
    assert phrase in errors[0][3]


def test_a_threshold_on_a_pod_histogram_is_not_checked_against_envoy_layouts() -> None:
    errors, warnings, exp = load("{name: s, kind: slow_rate, source: ttft, threshold: 300ms, "
                                 "harmMargin: 0.5, nonInferiorityMargin: 0.5}")
    assert errors == [] and warnings == [] and exp is not None


def test_a_threshold_only_one_envoy_layout_has_is_a_warning() -> None:
    _, warnings, exp = load("{name: s, kind: slow_rate, threshold: 400ms, harmMargin: 0.5, "
                            "nonInferiorityMargin: 0.5}")
    assert exp is not None
    [(line, path, message)] = warnings
    assert (line, path) == (9, "spec.metrics[0].threshold")
    assert "not of Envoy's default buckets (nearest: 250ms and 500ms)" in message


def test_latency_margins_finer_than_envoy_buckets_get_a_warning() -> None:
    _, warnings, _ = load(
        "{name: p95, kind: latency, harmMargin: 0.25, nonInferiorityMargin: 0.25}",
        "{name: p95-tight, kind: latency, harmMargin: 0.1, nonInferiorityMargin: 0.1}",
        "{name: ttft, kind: latency, source: ttft, harmMargin: 0.1, nonInferiorityMargin: 0.1}",
        "{name: p95-wide, kind: latency, harmMargin: 4, nonInferiorityMargin: 4}",
        "{name: p95-info, kind: latency, harmMargin: 0.1, nonInferiorityMargin: 0.1, "
        "gating: false}")
    by_path = {p: m for _, p, m in warnings}
    assert set(by_path) == {"spec.metrics[0].nonInferiorityMargin",
                            "spec.metrics[1].nonInferiorityMargin"}
    assert "with Envoy's default buckets" in by_path["spec.metrics[0].nonInferiorityMargin"]
    assert "needs Envoys started from sluice bootstrap" in by_path[
        "spec.metrics[0].nonInferiorityMargin"]
    tight = by_path["spec.metrics[1].nonInferiorityMargin"]
    assert "even the buckets sluice bootstrap sets are up to 1.17x apart" in tight
    assert "slow_rate" in tight


def test_non_inferiority_margin_above_harm_margin_is_a_warning() -> None:
    _, warnings, _ = load("{name: e, kind: error_rate, harmMargin: 0.1, "
                          "nonInferiorityMargin: 0.5}")
    [(line, path, message)] = warnings
    assert (line, path) == (9, "spec.metrics[0].nonInferiorityMargin")
    assert "exceeds harmMargin 0.1" in message


def test_validate_prints_the_bare_number_error_with_file_line_column(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "e.yaml"
    metric = "{name: p95, kind: latency, harmMargin: 0.1, nonInferiorityMargin: 0.1, minEffect: 20}"
    f.write_text(HEAD + f"    - {metric}\n")
    assert main(["--offline", str(f)]) == 1
    err = capsys.readouterr().err
    column = _column(metric, "minEffect")
    assert f"{f}:9:{column}: spec.metrics[0].minEffect: a latency metric takes a duration" in err

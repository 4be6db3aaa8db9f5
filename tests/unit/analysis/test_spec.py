import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from analysis.spec import (
    Direction,
    MetricKind,
    SpecError,
    experiment_json_schema,
    load_experiment_yaml,
    metric_json_schema,
    parse_duration,
    parse_experiment,
)

EXAMPLE = Path(__file__).parents[3] / "examples" / "experiments" / "canary.yaml"


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return doc


def _problems(doc: Any) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as exc:
        parse_experiment(doc)
    return list(exc.value.problems)


def test_example_parses_with_defaults() -> None:
    spec = parse_experiment(_doc())
    assert spec.baseline == "v1" and spec.candidate == "v2" and spec.alpha == 0.05
    assert [s.weight for s in spec.steps] == [5, 10, 20, 30, 50]
    assert spec.steps[0].soak_s == 600
    lat = spec.metrics[1]
    assert lat.kind is MetricKind.LATENCY and lat.quantile == 0.95 and lat.gating
    assert lat.direction is Direction.HIGHER_IS_WORSE


def test_example_validates_against_the_json_schema() -> None:
    jsonschema.validate(_doc(), experiment_json_schema())
    jsonschema.Draft202012Validator.check_schema(experiment_json_schema())
    jsonschema.validate(_doc()["spec"]["metrics"][0], metric_json_schema())


def test_negative_margin_names_the_field_path() -> None:
    doc = _doc()
    doc["spec"]["metrics"][1]["harmMargin"] = -1
    assert ("spec.metrics[1].harmMargin", "must be a number >= 0") in _problems(doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, experiment_json_schema())


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d["spec"]["metrics"][0].__setitem__("typo", 1), "spec.metrics[0].typo"),
        (lambda d: d["spec"].__setitem__("extra", 1), "spec.extra"),
        (lambda d: d["spec"]["metrics"][0].__setitem__("kind", "p99"), "spec.metrics[0].kind"),
        (lambda d: d["spec"]["metrics"][0].__setitem__("gating", "yes"),
         "spec.metrics[0].gating"),
        (lambda d: d["spec"]["metrics"][1].__setitem__("quantile", 1.5),
         "spec.metrics[1].quantile"),
        (lambda d: d["spec"]["steps"][1].__setitem__("weight", 3), "spec.steps[1].weight"),
        (lambda d: d["spec"]["steps"][0].__setitem__("soak", "ten"), "spec.steps[0].soak"),
        (lambda d: d["spec"].__setitem__("alpha", True), "spec.alpha"),
        (lambda d: d["spec"]["metrics"][0].__setitem__("direction", "lowerIsWorse"),
         "spec.metrics[0].direction"),
        (lambda d: d["spec"]["metrics"][1].__setitem__("name", "errors"),
         "spec.metrics[1].name"),
        (lambda d: d["spec"].pop("baseline"), "spec.baseline"),
        (lambda d: d.__setitem__("kind", "Rollout"), "kind"),
    ],
)
def test_rejections_name_the_field(mutate: Any, path: str) -> None:
    doc = copy.deepcopy(_doc())
    mutate(doc)
    assert path in [p for p, _ in _problems(doc)]


def test_every_problem_is_reported_at_once() -> None:
    doc = _doc()
    doc["spec"]["alpha"] = 2
    doc["spec"]["metrics"][0]["minSamples"] = -5
    paths = [p for p, _ in _problems(doc)]
    assert "spec.alpha" in paths and "spec.metrics[0].minSamples" in paths


def test_yaml_syntax_error_reports_file_line_column() -> None:
    with pytest.raises(SpecError) as exc:
        load_experiment_yaml("spec:\n  baseline: [v1\n  candidate: v2\n", "exp.yaml")
    assert str(exc.value).startswith("exp.yaml:")
    loc = str(exc.value).split(":")
    assert loc[1].isdigit() and loc[2].isdigit()


def test_durations() -> None:
    assert parse_duration("90s") == 90 and parse_duration("1h30m") == 5400
    assert parse_duration(15) == 15.0 and parse_duration("10") is None
    assert parse_duration(-1) is None and parse_duration(True) is None

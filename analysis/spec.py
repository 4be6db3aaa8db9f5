"""Experiment and metric specs: parse once at the edge, then frozen.

An ``Experiment`` document is Kubernetes-shaped (``apiVersion``, ``kind``,
``metadata.name``, ``spec``). The later ``Experiment`` kind of the control
plane embeds ``spec`` as is, so this module also exports the JSON Schema of
both the whole document and a single metric. Unknown keys are errors, and every
problem is reported with its field path (``spec.metrics[1].harmMargin``).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

API_VERSION = "sluice.dev/v1alpha1"
KIND = "Experiment"


class SpecError(ValueError):
    """Invalid experiment; ``problems`` lists ``(field_path, message)``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in problems))


class MetricKind(enum.Enum):
    ERROR_RATE = "error_rate"
    LATENCY = "latency"
    MEAN = "mean"


class Direction(enum.Enum):
    HIGHER_IS_WORSE = "higherIsWorse"
    LOWER_IS_WORSE = "lowerIsWorse"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: MetricKind
    harm_margin: float
    non_inferiority_margin: float
    min_samples: int = 0
    gating: bool = True
    min_effect: float = 0.0
    quantile: float = 0.95
    direction: Direction = Direction.HIGHER_IS_WORSE
    source: str | None = None  # error class, histogram or mean name in the samples


@dataclass(frozen=True)
class Step:
    weight: float  # candidate percent
    soak_s: float  # minimum time at this step before advancing


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    baseline: str
    candidate: str
    steps: tuple[Step, ...]
    metrics: tuple[MetricSpec, ...]
    alpha: float = 0.05
    srm_alpha: float = 0.001

    @property
    def gating_metrics(self) -> tuple[MetricSpec, ...]:
        return tuple(m for m in self.metrics if m.gating)


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class _Checker:
    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def add(self, path: str, msg: str) -> None:
        self.problems.append((path, msg))

    def mapping(self, v: Any, path: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
        if not isinstance(v, Mapping):
            self.add(path, "must be a mapping")
            return {}
        for key in v:
            if key not in allowed:
                self.add(f"{path}.{key}" if path else str(key), "unknown field")
        for key in sorted(required):
            if key not in v:
                self.add(f"{path}.{key}" if path else key, "is required")
        return dict(v)

    def number(self, d: dict[str, Any], key: str, path: str, default: float, lo: float,
               hi: float = math.inf, lo_open: bool = False, hi_open: bool = False) -> float:
        if key not in d:
            return default
        v = d[key]
        lo_ok = _num(v) and (v > lo if lo_open else v >= lo)
        hi_ok = _num(v) and (v < hi if hi_open else v <= hi)
        if not (lo_ok and hi_ok):
            rng = f"{'>' if lo_open else '>='} {lo:g}"
            if math.isfinite(hi):
                rng += f" and {'<' if hi_open else '<='} {hi:g}"
            self.add(f"{path}.{key}", f"must be a number {rng}")
            return default
        return float(v)

    def string(self, d: dict[str, Any], key: str, path: str, default: str = "") -> str:
        if key not in d:
            return default
        v = d[key]
        if not isinstance(v, str) or not v:
            self.add(f"{path}.{key}", "must be a non-empty string")
            return default
        return v


def parse_duration(v: Any) -> float | None:
    """Seconds from a number or a string like ``90s``, ``10m``, ``1h30m``."""
    if _num(v):
        return float(v) if v >= 0 else None
    if isinstance(v, str) and v:
        m = _DURATION.match(v)
        if m and any(m.groups()):
            h, mi, s = (float(g) if g else 0.0 for g in m.groups())
            return h * 3600 + mi * 60 + s
    return None


_METRIC_KEYS = {"name", "kind", "harmMargin", "nonInferiorityMargin", "minSamples", "gating",
                "minEffect", "quantile", "direction", "source"}


def _parse_metric(c: _Checker, raw: Any, path: str) -> MetricSpec | None:
    d = c.mapping(raw, path, _METRIC_KEYS, {"name", "kind", "harmMargin", "nonInferiorityMargin"})
    if not d:
        return None
    before = len(c.problems)
    name = c.string(d, "name", path)
    if name and not _NAME.match(name):
        c.add(f"{path}.name", "must be lowercase letters, digits, '-', '_' or '.'")
    kind = MetricKind.ERROR_RATE
    if "kind" in d:
        try:
            kind = MetricKind(d["kind"])
        except ValueError:
            c.add(f"{path}.kind", "must be one of error_rate, latency, mean")
    harm = c.number(d, "harmMargin", path, 0.0, 0.0)
    ni = c.number(d, "nonInferiorityMargin", path, 0.0, 0.0)
    min_samples = 0
    if "minSamples" in d:
        v = d["minSamples"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            c.add(f"{path}.minSamples", "must be an integer >= 0")
        else:
            min_samples = v
    gating = True
    if "gating" in d:
        if not isinstance(d["gating"], bool):
            c.add(f"{path}.gating", "must be true or false")
        else:
            gating = d["gating"]
    min_effect = c.number(d, "minEffect", path, 0.0, 0.0)
    quantile = 0.95
    if "quantile" in d:
        if kind is not MetricKind.LATENCY:
            c.add(f"{path}.quantile", "only applies to kind latency")
        quantile = c.number(d, "quantile", path, 0.95, 0.0, 1.0, lo_open=True, hi_open=True)
    direction = Direction.HIGHER_IS_WORSE
    if "direction" in d:
        try:
            direction = Direction(d["direction"])
        except ValueError:
            c.add(f"{path}.direction", "must be higherIsWorse or lowerIsWorse")
        if kind is not MetricKind.MEAN and direction is not Direction.HIGHER_IS_WORSE:
            c.add(f"{path}.direction", f"{kind.value}: only an increase is harmful")
    if direction is Direction.LOWER_IS_WORSE and harm >= 1.0:
        c.add(f"{path}.harmMargin", "must be a number < 1 when lower is worse")
    source = c.string(d, "source", path) or None
    if len(c.problems) > before:
        return None
    return MetricSpec(name, kind, harm, ni, min_samples, gating, min_effect, quantile,
                      direction, source)


def parse_experiment(doc: Any) -> ExperimentSpec:
    """Validate an ``Experiment`` mapping; raise :class:`SpecError` listing every problem."""
    c = _Checker()
    top = c.mapping(doc, "", {"apiVersion", "kind", "metadata", "spec"},
                    {"apiVersion", "kind", "metadata", "spec"})
    if top.get("apiVersion", API_VERSION) != API_VERSION:
        c.add("apiVersion", f"must be {API_VERSION}")
    if top.get("kind", KIND) != KIND:
        c.add("kind", f"must be {KIND}")
    meta = c.mapping(top.get("metadata", {}), "metadata", {"name", "namespace", "labels",
                                                           "annotations"}, {"name"})
    name = c.string(meta, "name", "metadata")
    spec = c.mapping(top.get("spec", {}), "spec",
                     {"baseline", "candidate", "steps", "alpha", "srmAlpha", "metrics"},
                     {"baseline", "candidate", "steps", "metrics"})
    baseline = c.string(spec, "baseline", "spec")
    candidate = c.string(spec, "candidate", "spec")
    if baseline and baseline == candidate:
        c.add("spec.candidate", "must differ from spec.baseline")
    alpha = c.number(spec, "alpha", "spec", 0.05, 0.0, 0.5, lo_open=True, hi_open=True)
    srm_alpha = c.number(spec, "srmAlpha", "spec", 0.001, 0.0, 0.5, lo_open=True, hi_open=True)
    steps: list[Step] = []
    raw_steps = spec.get("steps", [])
    if not isinstance(raw_steps, list) or not raw_steps:
        c.add("spec.steps", "must be a non-empty list")
        raw_steps = []
    for i, raw in enumerate(raw_steps):
        path = f"spec.steps[{i}]"
        d = c.mapping(raw, path, {"weight", "soak"}, {"weight"})
        w = c.number(d, "weight", path, 0.0, 0.0, 100.0, lo_open=True)
        soak = parse_duration(d.get("soak", 0))
        if soak is None:
            c.add(f"{path}.soak", "must be seconds >= 0 or a duration like 90s, 10m, 1h30m")
            soak = 0.0
        if steps and w <= steps[-1].weight:
            c.add(f"{path}.weight", "must be greater than the previous step's weight")
        steps.append(Step(w, soak))
    metrics: list[MetricSpec] = []
    raw_metrics = spec.get("metrics", [])
    if not isinstance(raw_metrics, list) or not raw_metrics:
        c.add("spec.metrics", "must be a non-empty list")
        raw_metrics = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_metrics):
        m = _parse_metric(c, raw, f"spec.metrics[{i}]")
        if m is None:
            continue
        if m.name in seen:
            c.add(f"spec.metrics[{i}].name", f"duplicate metric name {m.name!r}")
        seen.add(m.name)
        metrics.append(m)
    if c.problems:
        raise SpecError(c.problems)
    return ExperimentSpec(name, baseline, candidate, tuple(steps), tuple(metrics), alpha,
                          srm_alpha)


def load_experiment_yaml(text: str, filename: str = "<experiment>") -> ExperimentSpec:
    """Parse YAML text; syntax errors become ``file:line:column: message``."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else filename
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([("", f"{where}: {problem}")]) from exc
    return parse_experiment(doc)


def metric_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one metric spec."""
    margin = {"type": "number", "minimum": 0}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "kind", "harmMargin", "nonInferiorityMargin"],
        "properties": {
            "name": {"type": "string", "pattern": _NAME.pattern},
            "kind": {"enum": [k.value for k in MetricKind]},
            "harmMargin": {**margin, "description": "relative; 0.1 = 10 % worse is harm"},
            "nonInferiorityMargin": {**margin, "description": "relative; advance only when "
                                     "the upper bound is within it"},
            "minSamples": {"type": "integer", "minimum": 0},
            "gating": {"type": "boolean", "default": True},
            "minEffect": {**margin, "description": "absolute floor (rate, seconds or the "
                          "mean's unit) under which differences count as equal"},
            "quantile": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1,
                         "default": 0.95},
            "direction": {"enum": [d.value for d in Direction], "default": "higherIsWorse",
                          "description": "only means may say lowerIsWorse"},
            "source": {"type": "string", "minLength": 1,
                       "description": "error class, histogram or mean name in the samples"},
        },
    }


def experiment_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a whole ``Experiment`` document."""
    duration = {"oneOf": [{"type": "number", "minimum": 0},
                          {"type": "string", "pattern": _DURATION.pattern}]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Experiment",
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"const": KIND},
            "metadata": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "namespace": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object",
                                    "additionalProperties": {"type": "string"}},
                },
            },
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["baseline", "candidate", "steps", "metrics"],
                "properties": {
                    "baseline": {"type": "string", "minLength": 1},
                    "candidate": {"type": "string", "minLength": 1},
                    "alpha": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.5,
                              "default": 0.05},
                    "srmAlpha": {"type": "number", "exclusiveMinimum": 0,
                                 "exclusiveMaximum": 0.5, "default": 0.001},
                    "steps": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["weight"],
                            "properties": {
                                "weight": {"type": "number", "exclusiveMinimum": 0,
                                           "maximum": 100},
                                "soak": duration,
                            },
                        },
                    },
                    "metrics": {"type": "array", "minItems": 1, "items": metric_json_schema()},
                },
            },
        },
    }

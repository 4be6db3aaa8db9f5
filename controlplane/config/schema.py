"""JSON Schema (draft 2020-12) and a Markdown reference, generated from the shapes.

``python -m controlplane.schema`` rewrites the committed files;
``--check`` exits 1 when they are out of date.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from controlplane.config.durations import (
    DURATION_PATTERN,
    POSITIVE_DURATION_PATTERN,
    TIME_PATTERN,
)
from controlplane.config.fields import (
    Bool,
    Duration,
    Either,
    Field,
    Float,
    Int,
    List,
    Map,
    Obj,
    Spec,
    Str,
    Time,
)
from controlplane.config.kinds import kind_def

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
REFERENCE_FILE = SCHEMA_DIR / "CONFIG.md"


def to_json_schema(spec: Spec, description: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    if isinstance(spec, Obj):
        out["type"] = "object"
        description = description or spec.description
        props: dict[str, object] = {}
        for f in spec.fields:
            prop = to_json_schema(f.spec, f.description)
            if f.default is not None:
                prop["default"] = f.default
            props[f.name] = prop
        out["properties"] = props
        required = [f.name for f in spec.fields if f.required]
        if required:
            out["required"] = required
        out["additionalProperties"] = False
        if spec.one_of:
            out["oneOf"] = [{"required": [name]} for name in spec.one_of]
        out.update(spec.schema_extra)
    elif isinstance(spec, List):
        out["type"] = "array"
        out["items"] = to_json_schema(spec.items)
        if spec.min_items:
            out["minItems"] = spec.min_items
    elif isinstance(spec, Map):
        out["type"] = "object"
        out["additionalProperties"] = to_json_schema(spec.values)
    elif isinstance(spec, Str):
        out["type"] = "string"
        if spec.enum is not None:
            out["enum"] = list(spec.enum)
        if spec.pattern is not None:
            out["pattern"] = spec.pattern
        if spec.max_length is not None:
            out["maxLength"] = spec.max_length
    elif isinstance(spec, Duration):
        out["type"] = "string"
        out["pattern"] = POSITIVE_DURATION_PATTERN if spec.positive else DURATION_PATTERN
    elif isinstance(spec, Time):
        out["type"] = "string"
        out["pattern"] = TIME_PATTERN
    elif isinstance(spec, Either):
        out["oneOf"] = [to_json_schema(alt) for alt in spec.alternatives]
    elif isinstance(spec, Int):
        out["type"] = "integer"
        _bounds(out, spec.minimum, None, spec.maximum)
    elif isinstance(spec, Float):
        out["type"] = "number"
        _bounds(out, spec.minimum, spec.exclusive_minimum, spec.maximum)
    else:
        out["type"] = "boolean"
        if spec.const is not None:
            out["const"] = spec.const
    if description:
        out = {"description": description, **out}
    return out


def _bounds(
    out: dict[str, object], minimum: float | None, exclusive: float | None, maximum: float | None
) -> None:
    if minimum is not None:
        out["minimum"] = minimum
    if exclusive is not None:
        out["exclusiveMinimum"] = exclusive
    if maximum is not None:
        out["maximum"] = maximum


SCHEMA_FILES = {
    "ModelService": SCHEMA_DIR / "modelservice.schema.json",
    "Experiment": SCHEMA_DIR / "experiment.schema.json",
}


def json_schema(kind: str) -> dict[str, object]:
    """A whole document of ``kind``; ``["properties"]["spec"]`` is the CRD's spec."""
    kd = kind_def(kind)
    if kd is None:
        raise KeyError(kind)
    body = to_json_schema(kd.envelope())
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://sluice.dev/schemas/v1alpha1/{kind.lower()}.schema.json",
        "title": f"Sluice {kind}",
        **body,
    }


def modelservice_json_schema() -> dict[str, object]:
    return json_schema("ModelService")


def render_schema(kind: str = "ModelService") -> str:
    return json.dumps(json_schema(kind), indent=2) + "\n"


def _type_name(spec: Spec) -> str:
    if isinstance(spec, Obj):
        return "object"
    if isinstance(spec, List):
        return f"list of {_type_name(spec.items)}"
    if isinstance(spec, Map):
        return f"map string → {_type_name(spec.values)}"
    if isinstance(spec, Str):
        return " \\| ".join(f"`{e}`" for e in spec.enum) if spec.enum else "string"
    if isinstance(spec, Duration):
        return "duration"
    if isinstance(spec, Time):
        return "duration (fractional: `20ms`, `0.5s`)"
    if isinstance(spec, Either):
        return " or ".join(_type_name(alt) for alt in spec.alternatives)
    if isinstance(spec, Int):
        return _ranged("integer", spec.minimum, None, spec.maximum)
    if isinstance(spec, Float):
        return _ranged("number", spec.minimum, spec.exclusive_minimum, spec.maximum)
    return "`true`" if isinstance(spec, Bool) and spec.const else "boolean"


def _ranged(name: str, lo: float | None, lo_excl: float | None, hi: float | None) -> str:
    low = f"{lo} ≤ " if lo is not None else f"{lo_excl} < " if lo_excl is not None else ""
    high = f" ≤ {hi}" if hi is not None else ""
    return f"{name}, {low}x{high}" if low or high else name


def _inner_obj(spec: Spec) -> Obj | None:
    if isinstance(spec, Obj):
        return spec
    if isinstance(spec, Either):
        return next((a for a in spec.alternatives if isinstance(a, Obj)), None)
    return None


def _rows(spec: Obj, prefix: str) -> list[str]:
    rows: list[str] = []
    for f in spec.fields:
        rows.append(_row(f, prefix))
        listed = isinstance(f.spec, List)
        inner = _inner_obj(f.spec.items if isinstance(f.spec, List) else f.spec)
        if inner is not None:
            rows.extend(_rows(inner, f"{prefix}{f.name}{'[]' if listed else ''}."))
    return rows


def _row(f: Field, prefix: str) -> str:
    if f.required:
        default = "required"
    elif f.default is not None:
        default = f"`{json.dumps(f.default) if isinstance(f.default, str) else f.default}`"
        default = default.replace('"', "")
    else:
        default = "—"
    return f"| `{prefix}{f.name}` | {_type_name(f.spec)} | {default} | {f.description} |"


_INTRO = """\
# Configuration reference

<!-- Generated by `python -m controlplane.schema`; do not edit. -->

Documents are Kubernetes-shaped (`apiVersion: sluice.dev/v1alpha1`, `kind`,
`metadata`, `spec`); a file may hold several, separated by `---`. Durations are
an integer and a unit: `500ms`, `5s`, `2m`, `1h`; latency values may be
fractional (`20ms`, `0.5s`). Unknown fields are errors. Check files with
`sluice validate PATH...`; editors can use the JSON Schemas in
`controlplane/schemas/`. YAML without `apiVersion: sluice.dev/...` (another
tool's file in the same directory) is skipped with a warning. A document with
an error is frozen at its last good version; the others keep loading.
"""

_RULES = {
    "ModelService": """\
Rules across fields: version names are unique within a service and the
version weights add up to 100; endpoint `address:port` is unique within a
version; service names and listener `address:port` are unique across all
files; `ring_hash`, `maglev` and `hybrid` need `hashKey` (`hybrid`: a header),
which other policies reject (as they do `boundedLoad`); `activeRequestBias`
needs `least_request`, `response_time` or `hybrid`; `responseTime` and
`loadReport` go with their policy; `capacityLabel` needs `capacity`;
`slowStart` needs `round_robin`, `least_request`, `response_time` or `hybrid`;
a version's endpoint priorities start at 0 without gaps; `retries.retryOn`
lists a condition once; `offline.listener` differs from every listener.
`sluice validate` warns when an endpoint's capacity label is missing from
`capacity` (it gets capacity 1).
A version's `endpoints` are a list or `{kubernetes: {...}}` with exactly one
of `service` and a non-empty `selector`; `router.gatewayAPI.backends` names a
Service for every version, `router.istio.subsets` only versions.
""",
    "Experiment": """\
Rules across fields: `spec.service` must name a `ModelService` with versions
`baseline` and `candidate` (which differ); one experiment per service; `steps`
(canary only) increase; the `abtest`, `bluegreen`, `rolling` and
`synchronized` sections go with their strategy (`rolling` is required there);
metric names are unique and guards name one of them; `minEffect` and guard
thresholds are durations for `latency` metrics and plain numbers otherwise;
`quantile` is for `latency`, `direction` for `mean`, `primary` for `abtest`,
`query` needs a Prometheus `metricsSource`. `sluice validate` warns when a
metric's non-inferiority margin exceeds its harm margin.
""",
}


def render_reference() -> str:
    lines = [_INTRO]
    for kind in SCHEMA_FILES:
        kd = kind_def(kind)
        assert kd is not None
        lines += [
            f"## `{kind}`", "", kd.description, "", _RULES[kind],
            "| Field | Type | Default | Meaning |",
            "|---|---|---|---|",
            *_rows(kd.envelope(), ""),
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m controlplane.schema",
        description="Write the JSON Schemas of every kind and CONFIG.md.",
    )
    parser.add_argument("--check", action="store_true", help="fail when the files are stale")
    args = parser.parse_args(argv)
    stale = 0
    outputs = [(path, render_schema(kind)) for kind, path in SCHEMA_FILES.items()]
    outputs.append((REFERENCE_FILE, render_reference()))
    for path, text in outputs:
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            print(f"{path} is out of date: run python -m controlplane.schema",
                  file=sys.stderr)
            stale += 1
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 1 if stale else 0

"""JSON Schema (draft 2020-12) and a Markdown reference, generated from the shapes.

``python -m controlplane.schema`` rewrites the committed files;
``--check`` exits 1 when they are out of date.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from controlplane.config.durations import DURATION_PATTERN, POSITIVE_DURATION_PATTERN
from controlplane.config.fields import Bool, Duration, Field, Float, Int, List, Map, Obj, Spec, Str
from controlplane.config.modelservice import MODEL_SERVICE

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
SCHEMA_FILE = SCHEMA_DIR / "modelservice.schema.json"
REFERENCE_FILE = SCHEMA_DIR / "CONFIG.md"
SCHEMA_ID = "https://sluice.dev/schemas/v1alpha1/modelservice.schema.json"


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


def modelservice_json_schema() -> dict[str, object]:
    """The whole ``ModelService`` document; ``["properties"]["spec"]`` is the CRD's spec."""
    body = to_json_schema(MODEL_SERVICE.envelope())
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Sluice ModelService",
        **body,
    }


def render_schema() -> str:
    return json.dumps(modelservice_json_schema(), indent=2) + "\n"


def _type_name(spec: Spec) -> str:
    if isinstance(spec, Obj):
        return "object"
    if isinstance(spec, List):
        return f"list of {_type_name(spec.items)}"
    if isinstance(spec, Map):
        return "map string → string"
    if isinstance(spec, Str):
        return " \\| ".join(f"`{e}`" for e in spec.enum) if spec.enum else "string"
    if isinstance(spec, Duration):
        return "duration"
    if isinstance(spec, Int):
        return _ranged("integer", spec.minimum, None, spec.maximum)
    if isinstance(spec, Float):
        return _ranged("number", spec.minimum, spec.exclusive_minimum, spec.maximum)
    return "`true`" if isinstance(spec, Bool) and spec.const else "boolean"


def _ranged(name: str, lo: float | None, lo_excl: float | None, hi: float | None) -> str:
    low = f"{lo} ≤ " if lo is not None else f"{lo_excl} < " if lo_excl is not None else ""
    high = f" ≤ {hi}" if hi is not None else ""
    return f"{name}, {low}x{high}" if low or high else name


def _rows(spec: Obj, prefix: str) -> list[str]:
    rows: list[str] = []
    for f in spec.fields:
        rows.append(_row(f, prefix))
        inner = f.spec.items if isinstance(f.spec, List) else f.spec
        if isinstance(inner, Obj):
            rows.extend(_rows(inner, f"{prefix}{f.name}{'[]' if inner is not f.spec else ''}."))
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


def render_reference() -> str:
    lines = [
        "# Configuration reference: `ModelService`",
        "",
        "<!-- Generated by `python -m controlplane.schema`; do not edit. -->",
        "",
        "Documents are Kubernetes-shaped (`apiVersion: sluice.dev/v1alpha1`,",
        "`kind: ModelService`, `metadata`, `spec`); a file may hold several, separated",
        "by `---`. Durations are an integer and a unit: `500ms`, `5s`, `2m`, `1h`.",
        "Unknown fields are errors. Check files with `sluice validate PATH...`; editors",
        "can use `controlplane/schemas/modelservice.schema.json`.",
        "",
        "Rules across fields: version names are unique within a service and the",
        "version weights add up to 100; endpoint `address:port` is unique within a",
        "version; service names and listener `address:port` are unique across all",
        "files; `ring_hash` and `maglev` need `hashKey`, which other policies reject",
        "(as they do `boundedLoad`); `slowStart` needs `round_robin` or `least_request`.",
        "",
        "| Field | Type | Default | Meaning |",
        "|---|---|---|---|",
        *_rows(MODEL_SERVICE.envelope(), ""),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m controlplane.schema",
        description="Write the ModelService JSON Schema and CONFIG.md.",
    )
    parser.add_argument("--check", action="store_true", help="fail when the files are stale")
    args = parser.parse_args(argv)
    stale = 0
    for path, text in ((SCHEMA_FILE, render_schema()), (REFERENCE_FILE, render_reference())):
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

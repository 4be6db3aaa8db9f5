"""The CustomResourceDefinitions, generated from the same shapes as the files.

``sluice crds`` prints them; ``manifests/base/crds.yaml`` is this output (a
test keeps it so). The spec schema is the kind's JSON Schema made structural,
as the API server requires: every node has a type, except a field that takes
several shapes (``endpoints``: a list or ``{kubernetes: ...}``), which keeps
unknown fields, and a port (a number or a name), which is int-or-string. What
JSON Schema 2020-12 says differently from OpenAPI v3 is translated
(``exclusiveMinimum``, ``const``). Defaults are left out on purpose: the API
server would write them into the object, and Sluice must see what the user
wrote (a default that another field rules out would become an error).
Cross-field rules are Sluice's to check: it reports them with their place,
freezes only that resource at its last good version, and says so in
``status``. The ``status`` schema is what the leader writes.
"""

from __future__ import annotations

from typing import Any

import yaml

from controlplane.config import json_schema
from controlplane.kube import GROUP, VERSION

Schema = dict[str, Any]
_COPIED = ("type", "description", "enum", "pattern", "maxLength", "minimum", "maximum",
           "minItems", "required")


def structural(schema: Schema) -> Schema:
    """A JSON Schema (draft 2020-12, as ``json_schema`` exports) as a structural schema."""
    if "oneOf" in schema and "type" not in schema:  # an Either
        types = {alt.get("type") for alt in schema["oneOf"]}
        marker = ("x-kubernetes-int-or-string" if types == {"integer", "string"}
                  else "x-kubernetes-preserve-unknown-fields")
        out: Schema = {marker: True}
        if "description" in schema:
            out = {"description": schema["description"], **out}
        return out
    out = {k: schema[k] for k in _COPIED if k in schema}
    if "const" in schema:
        out["enum"] = [schema["const"]]
    if "exclusiveMinimum" in schema:
        out["minimum"] = schema["exclusiveMinimum"]
        out["exclusiveMinimum"] = True
    if "items" in schema:
        out["items"] = structural(schema["items"])
    if "properties" in schema:
        out["properties"] = {k: structural(v) for k, v in schema["properties"].items()}
    elif isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = structural(schema["additionalProperties"])
    one_of = schema.get("oneOf")
    if one_of and all(set(alt) == {"required"} for alt in one_of):
        out["oneOf"] = [{"required": list(alt["required"])} for alt in one_of]
    return out


def _string(description: str) -> Schema:
    return {"type": "string", "description": description}


def _obj(description: str, **properties: Any) -> Schema:
    return {"type": "object", "description": description, "properties": properties}


_WEIGHTS = {"type": "object", "description": "Percent of the traffic per version.",
            "additionalProperties": {"type": "number"}}
_CONDITIONS = {
    "type": "array", "description": "Ready, ConfigValid, Progressing, ... (Kubernetes "
    "conditions).",
    "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
    "items": {"type": "object", "required": ["type", "status"], "properties": {
        "type": _string("Condition type."),
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": _string("CamelCase reason."),
        "message": _string("What happened, in words."),
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer"},
    }},
}
_DOCUMENT = _obj("How Sluice took the resource: ok, frozen (errors; its last good version "
                 "serves), rejected or held.",
                 state=_string("ok | frozen | rejected | held."),
                 errors={"type": "array", "items": {"type": "string"}},
                 reason=_string("Why it is held or frozen."))
_COMMON: dict[str, Any] = {
    "observedGeneration": {"type": "integer"},
    "weights": _WEIGHTS,
    "weightsSummary": _string("The effective weights, e.g. v1=75 v2=25."),
    "document": _DOCUMENT,
    "conditions": _CONDITIONS,
}
STATUS: dict[str, Schema] = {
    "ModelService": _obj(
        "Written by the leader.", **_COMMON,
        declaredWeights=_WEIGHTS,
        weightsSetBy=_string("config, or the experiment that owns the traffic."),
        router=_string("xds | gatewayAPI | istio."),
        endpoints={"type": "object", "description": "Endpoints serving per version.",
                   "additionalProperties": {"type": "integer"}},
        discovery={"type": "object", "description": "Per discovered version: its source, "
                   "endpoint count and notes.",
                   "additionalProperties": _obj(
                       "One version.", source=_string("Where from."),
                       endpoints={"type": "integer"},
                       notes={"type": "array", "items": {"type": "string"}})},
    ),
    "Experiment": _obj(
        "Written by the leader.", **_COMMON,
        phase=_string("Pending | Progressing | Holding | Paused | Promoting | RollingBack | "
                      "Succeeded | RolledBack | Failed."),
        run=_string("The run's id."),
        step={"type": "integer", "description": "Current step, from 1."},
        steps={"type": "integer"},
        stepSummary=_string("Step and its candidate weight, e.g. 2/3 (25%)."),
        waitingFor=_string("What the run waits for now."),
        lastDecision=_obj("The latest transition.", event=_string("Event."),
                          to=_string("Phase after it."), reason=_string("Why."),
                          time={"type": "string", "format": "date-time"},
                          step={"type": "integer"}),
    ),
}
COLUMNS: dict[str, list[Schema]] = {
    "ModelService": [
        {"name": "Weights", "type": "string", "jsonPath": ".status.weightsSummary"},
        {"name": "Set-By", "type": "string", "jsonPath": ".status.weightsSetBy"},
        {"name": "Router", "type": "string", "jsonPath": ".status.router", "priority": 1},
        {"name": "Config", "type": "string", "jsonPath": ".status.document.state"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
    "Experiment": [
        {"name": "Service", "type": "string", "jsonPath": ".spec.service"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Step", "type": "string", "jsonPath": ".status.stepSummary"},
        {"name": "Weights", "type": "string", "jsonPath": ".status.weightsSummary"},
        {"name": "Reason", "type": "string", "jsonPath": ".status.lastDecision.reason",
         "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
}
NAMES = {"ModelService": ("modelservices", "modelservice", ["msvc"]),
         "Experiment": ("experiments", "experiment", ["exp"])}


def crd(kind: str) -> Schema:
    plural, singular, short = NAMES[kind]
    document = json_schema(kind)
    spec = structural(document["properties"]["spec"])  # type: ignore[index]
    root: Schema = {
        "type": "object",
        "description": str(document.get("description", "")),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "metadata": {"type": "object"}, "spec": spec, "status": STATUS[kind],
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}",
                     "labels": {"app.kubernetes.io/name": "sluice",
                                "app.kubernetes.io/part-of": "sluice"}},
        "spec": {
            "group": GROUP,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": singular, "shortNames": short, "categories": ["sluice"]},
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": root},
                "subresources": {"status": {}},
                "additionalPrinterColumns": COLUMNS[kind],
            }],
        },
    }


def render() -> str:
    """Both CRDs as one YAML stream (``sluice crds``)."""
    head = "# Generated by `sluice crds` from the same shapes as the YAML files; do not edit.\n"
    return head + "---\n".join(
        yaml.safe_dump(crd(kind), sort_keys=False, width=100) for kind in NAMES)

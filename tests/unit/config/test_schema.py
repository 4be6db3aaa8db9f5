"""The committed JSON Schema and CONFIG.md match the shapes; schema and loader agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from controlplane.config import load_text, modelservice_json_schema, service_to_dict
from controlplane.config.fields import Obj
from controlplane.config.schema import (
    REFERENCE_FILE,
    SCHEMA_FILES,
    main,
    render_reference,
    render_schema,
)
from controlplane.config.shapes import ENDPOINT, MODEL_SERVICE_SPEC
from controlplane.model import (
    Endpoint,
    HealthCheck,
    ListenerSpec,
    ModelService,
    OutlierDetection,
    SlowStart,
    Version,
)
from tests.unit.config.util import BODY, doc

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples" / "services").glob("*.yaml"))
VALIDATOR = jsonschema.Draft202012Validator(modelservice_json_schema())


def test_committed_files_are_up_to_date() -> None:
    for kind, path in SCHEMA_FILES.items():
        assert path.read_text(encoding="utf-8") == render_schema(kind), (
            "run: python -m controlplane.schema"
        )
    assert REFERENCE_FILE.read_text(encoding="utf-8") == render_reference(), (
        "run: python -m controlplane.schema"
    )
    assert main(["--check"]) == 0


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(modelservice_json_schema())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_schema(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs
    for d in docs:
        VALIDATOR.validate(d)
    assert load_text(path.read_text(), str(path)).errors == ()


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {"chat.yaml", "sessions.yaml"}


INVALID = {
    "unknown-key": BODY + "extra: 1\n",
    "port-type": BODY.replace("port: 8000", 'port: "8000"'),
    "port-range": BODY.replace("port: 8000", "port: 70000"),
    "duration": BODY + "healthCheck: {interval: 5}\n",
    "duration-unit": BODY + "healthCheck: {interval: 5d}\n",
    "zero-window": BODY + "slowStart: {window: 0ms}\n",
    "hash-key-with-least-request": BODY + "loadBalancing: {hashKey: {header: x-a}}\n",
    "hashing-without-hash-key": BODY + "loadBalancing: {policy: maglev}\n",
    "two-hash-keys": BODY
    + "loadBalancing: {policy: maglev, hashKey: {header: a, sourceIp: true}}\n",
    "bounded-load": BODY + "loadBalancing: {policy: random, boundedLoad: 1.2}\n",
    "slow-start-with-maglev": BODY + "loadBalancing: {policy: maglev, hashKey: {header: a}}\n"
    "slowStart: {window: 5s}\n",
    "version-name": BODY.replace("name: v1", "name: V_1"),
    "no-endpoints": BODY.replace("\n      - {address: 10.0.0.1, port: 8000}", " []"),
    "policy": BODY + "loadBalancing: {policy: fastest}\n",
    "health": BODY.replace("port: 8000}", "port: 8000, health: sick}"),
}


@pytest.mark.parametrize("body", list(INVALID.values()), ids=list(INVALID))
def test_invalid_documents_fail_schema_and_loader(body: str) -> None:
    text = doc(body)
    assert not VALIDATOR.is_valid(yaml.safe_load(text))
    assert load_text(text).errors


def test_the_minimal_document_passes_both() -> None:
    assert VALIDATOR.is_valid(yaml.safe_load(doc()))
    assert load_text(doc()).errors == ()


def _documented_defaults(shape: Obj, written: dict[str, Any], where: str) -> None:
    for f in shape.fields:
        if f.default is not None:
            assert written[f.name] == f.default, f"{where}.{f.name}"


def test_documented_defaults_are_the_model_defaults() -> None:
    service = ModelService(
        name="x",
        listener=ListenerSpec("127.0.0.1", 1),
        versions=(Version("v", 100, (Endpoint("10.0.0.1", 1),)),),
        health_check=HealthCheck(),
        outlier_detection=OutlierDetection(),
        slow_start=SlowStart(window_ms=1000),
    )
    spec: dict[str, Any] = service_to_dict(service)["spec"]  # type: ignore[assignment]
    for f in MODEL_SERVICE_SPEC.fields:
        if isinstance(f.spec, Obj) and f.name in spec:
            _documented_defaults(f.spec, spec[f.name], f.name)
    _documented_defaults(ENDPOINT, spec["versions"][0]["endpoints"][0], "endpoint")

"""The kind registry: another kind plugs in and can check references to services."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from controlplane.config import Document, KindDef, load_text, register_kind
from controlplane.config.errors import Errors
from controlplane.config.fields import Field, Obj
from controlplane.config.kinds import Accepted, known_kinds, unregister_kind
from controlplane.config.shapes import NAME
from controlplane.model import ModelService
from tests.unit.config.util import doc


@dataclass(frozen=True)
class Pin:
    """A toy kind that refers to a version of a service, as an Experiment does."""

    name: str
    service: str
    version: str


def check_pin(d: Document, value: object, accepted: Accepted, errors: Errors) -> None:
    assert isinstance(value, Pin) and d.spec is not None
    service = accepted.get("ModelService", value.service)
    versions = [v.name for v in service.value.versions] if service is not None and isinstance(
        service.value, ModelService) else []
    if value.version not in versions:
        version = d.spec.fields()["version"]
        d.error(errors, version.mark, version.path,
                f"unknown version '{value.version}' of service '{value.service}'")


def build_pin(d: Document) -> Pin:
    assert d.spec is not None and d.name is not None
    return Pin(d.name, d.spec.fields()["service"].text(), d.spec.fields()["version"].text())


PIN = KindDef(
    kind="Pin",
    api_version="sluice.dev/v1alpha1",
    spec=Obj(fields=(
        Field("service", NAME, "Service.", required=True),
        Field("version", NAME, "Version.", required=True),
    )),
    check=lambda doc, errors: None,
    build=build_pin,
    check_against=check_pin,
    order=20,
)

PIN_DOC = """\
---
apiVersion: sluice.dev/v1alpha1
kind: Pin
metadata: {name: pin}
spec: {service: chat, version: VERSION}
"""


@pytest.fixture
def pin_kind() -> Iterator[None]:
    register_kind(PIN)
    yield
    unregister_kind("Pin")


def test_another_kind_plugs_in(pin_kind: None) -> None:
    assert known_kinds() == ("ModelService", "Experiment", "Pin")
    result = load_text(PIN_DOC.replace("VERSION", "v1") + "---\n" + doc())
    assert result.errors == ()
    assert [o.value for o in result.objects if o.kind == "Pin"] == [Pin("pin", "chat", "v1")]
    assert result.state is not None and len(result.state.services) == 1


def test_reference_to_an_unknown_version(pin_kind: None) -> None:
    result = load_text(doc() + PIN_DOC.replace("VERSION", "v9"))
    assert [(e.line, e.column, e.path, e.message) for e in result.errors] == [
        (16, 32, "spec.version", "unknown version 'v9' of service 'chat'")
    ]


def test_the_unknown_kind_message_lists_registered_kinds(pin_kind: None) -> None:
    result = load_text("apiVersion: sluice.dev/v1alpha1\nkind: Rollout\n")
    assert result.errors[0].message == (
        "unknown kind 'Rollout'; known kinds: ModelService, Experiment, Pin")


def test_a_kind_cannot_be_registered_twice(pin_kind: None) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_kind(KindDef("Pin", "x", Obj(fields=()), lambda d, e: None, lambda d: None))

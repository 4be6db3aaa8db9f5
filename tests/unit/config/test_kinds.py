"""The kind registry: another kind plugs in and can check references to services."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from controlplane.config import Document, KindDef, load_text, register_kind
from controlplane.config.errors import Errors
from controlplane.config.fields import Field, Obj
from controlplane.config.kinds import Documents, known_kinds, unregister_kind
from controlplane.config.shapes import NAME
from tests.unit.config.util import doc


@dataclass(frozen=True)
class Pin:
    """A toy kind that refers to a version of a service, as an Experiment will."""

    name: str
    service: str
    version: str


def check_pins(documents: Documents, errors: Errors) -> None:
    versions: set[tuple[str | None, str]] = set()
    for d in documents.get("ModelService", ()):
        assert d.spec is not None
        for v in d.spec.fields()["versions"].items():
            versions.add((d.name, v.fields()["name"].text()))
    for d in documents.get("Pin", ()):
        assert d.spec is not None
        service, version = d.spec.fields()["service"], d.spec.fields()["version"]
        if (service.text(), version.text()) not in versions:
            d.error(errors, version.mark, version.path,
                    f"unknown version '{version.text()}' of service '{service.text()}'")


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
    check_all=check_pins,
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
    assert known_kinds() == ("ModelService", "Pin")
    result = load_text(doc() + PIN_DOC.replace("VERSION", "v1"))
    assert result.errors == ()
    assert [o.value for o in result.objects if o.kind == "Pin"] == [Pin("pin", "chat", "v1")]
    assert result.state is not None and len(result.state.services) == 1


def test_reference_to_an_unknown_version(pin_kind: None) -> None:
    result = load_text(doc() + PIN_DOC.replace("VERSION", "v9"))
    assert [(e.line, e.column, e.path, e.message) for e in result.errors] == [
        (16, 32, "spec.version", "unknown version 'v9' of service 'chat'")
    ]


def test_the_unknown_kind_message_lists_registered_kinds(pin_kind: None) -> None:
    result = load_text("kind: Experiment\n")
    assert result.errors[0].message == "unknown kind 'Experiment'; known kinds: ModelService, Pin"


def test_a_kind_cannot_be_registered_twice(pin_kind: None) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_kind(KindDef("Pin", "x", Obj(fields=()), lambda d, e: None, lambda d: None))

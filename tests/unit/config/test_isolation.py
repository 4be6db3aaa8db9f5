"""One bad document freezes only itself (assembly against what served before)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.config import Assembly, ObjectState, assemble, load_paths, load_text
from controlplane.experiment import Experiment
from tests.unit.config.util import BODY, HEADER, doc

ENVOY_BOOTSTRAP = """\
node: {id: gw, cluster: sluice}
static_resources:
  clusters: []
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 9901}}}
"""

EXPERIMENT = """\
apiVersion: sluice.dev/v1alpha1
kind: Experiment
metadata: {name: canary}
spec:
  service: SERVICE
  baseline: v1
  candidate: v2
  steps: [5, 50]
  metrics:
    - {name: errors, kind: error_rate, harmMargin: 0.1, nonInferiorityMargin: 0.1}
"""


def service(name: str, port: int, split: tuple[int, int] = (90, 10)) -> str:
    body = BODY.replace("10000", str(port)).replace("weight: 100", f"weight: {split[0]}")
    body += f"  - {{name: v2, weight: {split[1]}, endpoints: [{{address: 10.0.0.2, port: 1}}]}}\n"
    body = body.replace("versions:\n", "versions:\n", 1)
    return doc(body, HEADER.replace("name: chat", f"name: {name}"))


def broken(name: str, port: int) -> str:
    return service(name, port, (90, 20))  # weights add up to 110


def weights(a: Assembly, name: str) -> list[float]:
    return [v.weight for v in a.state.service(name).versions]


def state_of(a: Assembly, kind: str, name: str) -> ObjectState:
    found = a.status(kind, name)
    assert found is not None
    return found.state


def test_a_broken_service_freezes_only_itself(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(service("alpha", 10001))
    (tmp_path / "b.yaml").write_text(service("bravo", 10002))
    first = assemble(load_paths([tmp_path]), None)
    (tmp_path / "a.yaml").write_text(broken("alpha", 10001))
    (tmp_path / "b.yaml").write_text(service("bravo", 10002, (50, 50)))
    second = assemble(load_paths([tmp_path]), first)
    assert weights(second, "alpha") == [90, 10]  # frozen at its last good version
    assert weights(second, "bravo") == [50, 50]  # the good edit applies
    assert state_of(second, "ModelService", "alpha") is ObjectState.FROZEN
    assert state_of(second, "ModelService", "bravo") is ObjectState.OK
    assert [e.path for e in second.errors] == ["spec.versions"]


def test_a_foreign_file_is_skipped_with_one_warning_and_edits_keep_applying(
        tmp_path: Path) -> None:
    (tmp_path / "envoy.yaml").write_text(ENVOY_BOOTSTRAP)
    (tmp_path / "chat.yaml").write_text(service("chat", 10001))
    previous = None
    for split in [(90, 10), (80, 20), (70, 30), (60, 40)]:
        (tmp_path / "chat.yaml").write_text(service("chat", 10001, split))
        result = load_paths([tmp_path])
        previous = assemble(result, previous)
        assert previous.errors == ()
        assert weights(previous, "chat") == list(split)
        [warning] = previous.warnings
        assert warning.file.endswith("envoy.yaml")
        assert "not a Sluice document" in warning.message


def test_an_experiment_on_a_frozen_service_is_held_with_the_reason() -> None:
    text = service("chat", 10001) + "---\n" + EXPERIMENT.replace("SERVICE", "chat")
    first = assemble(load_text(text, "all.yaml"), None)
    assert state_of(first, "Experiment", "canary") is ObjectState.OK
    text = broken("chat", 10001) + "---\n" + EXPERIMENT.replace("SERVICE", "chat")
    second = assemble(load_text(text, "all.yaml"), first)
    held = second.status("Experiment", "canary")
    assert held is not None and held.state is ObjectState.HELD
    assert "ModelService 'chat' has errors and is frozen" in held.reason
    assert isinstance(second.objects[("Experiment", "canary")].value, Experiment)


def test_an_experiment_naming_a_missing_service_is_an_error_at_its_field() -> None:
    text = service("chat", 10001) + "---\n" + EXPERIMENT.replace("SERVICE", "chta")
    result = load_text(text, "x.yaml")
    [error] = result.errors
    assert (error.line, error.path) == (18, "spec.service")
    assert "no ModelService named 'chta' (known: chat)" in error.message


def test_a_document_that_never_loaded_is_rejected_and_absent() -> None:
    a = assemble(load_text(broken("chat", 10001), "x.yaml"), None)
    assert a.state.services == ()
    assert state_of(a, "ModelService", "chat") is ObjectState.REJECTED


def test_a_file_that_does_not_parse_keeps_its_objects(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(service("alpha", 10001))
    first = assemble(load_paths([tmp_path]), None)
    (tmp_path / "a.yaml").write_text("spec: [\n")
    second = assemble(load_paths([tmp_path]), first)
    assert weights(second, "alpha") == [90, 10]
    assert state_of(second, "ModelService", "alpha") is ObjectState.FROZEN
    assert "YAML syntax error" in second.errors[0].message


def test_an_unreadable_name_keeps_the_files_objects(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(service("alpha", 10001))
    first = assemble(load_paths([tmp_path]), None)
    (tmp_path / "a.yaml").write_text(service("alpha", 10001).replace("name: alpha", "name: A!"))
    second = assemble(load_paths([tmp_path]), first)
    assert weights(second, "alpha") == [90, 10]


def test_a_deleted_file_removes_its_objects(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(service("alpha", 10001))
    (tmp_path / "b.yaml").write_text(service("bravo", 10002))
    first = assemble(load_paths([tmp_path]), None)
    (tmp_path / "a.yaml").unlink()
    second = assemble(load_paths([tmp_path]), first)
    assert [s.name for s in second.state.services] == ["bravo"]


def test_a_conflicting_edit_is_refused_and_what_serves_stays(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(service("alpha", 10001))
    (tmp_path / "b.yaml").write_text(service("bravo", 10002))
    first = assemble(load_paths([tmp_path]), None)
    # alpha loads first but is the one that changed: it is refused, bravo stays
    (tmp_path / "a.yaml").write_text(service("alpha", 10002))
    second = assemble(load_paths([tmp_path]), first)
    listeners = {s.name: s.listener.port for s in second.state.services}
    assert listeners == {"alpha": 10001, "bravo": 10002}
    [error] = second.errors
    assert error.file.endswith("a.yaml") and "conflicts with service 'bravo'" in error.message


# Property: whatever sequence of good and bad versions each document goes
# through, each serves its latest good version (and nothing else changes it).

_version = st.tuples(st.booleans(), st.integers(0, 100))  # (valid?, v1 weight)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_version, min_size=3, max_size=3), min_size=1, max_size=8))
def test_each_document_serves_its_latest_good_version(history) -> None:
    names = ("alpha", "bravo", "charlie")
    previous: Assembly | None = None
    last_good: dict[str, int] = {}
    for load in history:
        texts = []
        for i, (valid, w) in enumerate(load):
            name, port = names[i], 10001 + i
            texts.append(service(name, port, (w, 100 - w)) if valid else broken(name, port))
            if valid:
                last_good[name] = w
        result = load_text("---\n".join(texts), "all.yaml")
        previous = assemble(result, previous)
        assert {s.name: s.versions[0].weight for s in previous.state.services} == last_good

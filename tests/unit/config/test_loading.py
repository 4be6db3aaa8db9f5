"""Loading files, directories and multi-document text into the desired state."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.config import load_paths, load_text
from controlplane.model import (
    CircuitBreakers,
    Endpoint,
    EndpointHealth,
    HashKey,
    HealthCheck,
    LbPolicy,
    ListenerSpec,
    LoadBalancing,
    OutlierDetection,
    Timeouts,
)
from tests.unit.config.util import BODY, HEADER, doc, errors, errors_of

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "services"


def service_doc(name: str, port: int, endpoint_port: int = 8000) -> str:
    return doc(
        BODY.replace("10000", str(port)).replace("8000", str(endpoint_port)),
        HEADER.replace("name: chat", f"name: {name}"),
    )


def test_examples_load_into_the_model() -> None:
    result = load_paths([EXAMPLES])
    assert result.errors == ()
    assert result.files == (str(EXAMPLES / "chat.yaml"), str(EXAMPLES / "sessions.yaml"))
    assert result.state is not None
    chat, sessions = result.state.services
    assert chat.name == "chat"
    assert chat.listener == ListenerSpec("127.0.0.1", 10000)
    assert [(v.name, v.weight) for v in chat.versions] == [("v1", 90), ("v2", 10)]
    assert chat.version("v1").endpoints == (
        Endpoint("127.0.0.1", 18081, labels=(("gpu", "h100"),)),
    )
    assert chat.load_balancing == LoadBalancing(LbPolicy.LEAST_REQUEST)
    assert chat.health_check == HealthCheck(path="/health", interval_ms=5000, timeout_ms=2000)
    assert chat.outlier_detection == OutlierDetection()
    assert chat.timeouts == Timeouts(request_ms=600_000, idle_ms=300_000)
    assert sessions.load_balancing == LoadBalancing(
        LbPolicy.MAGLEV, HashKey(header="x-session-id"), 1.25
    )
    assert [(v.name, v.weight, [e.port for e in v.endpoints]) for v in sessions.versions] == [
        ("stable", 100, [18083, 18084]),
        ("canary", 0, [18085]),
    ]
    assert sessions.health_check == HealthCheck()


def test_defaults_come_from_the_model() -> None:
    result = load_text(doc())
    assert result.state is not None
    (service,) = result.state.services
    assert service.load_balancing == LoadBalancing()
    assert service.health_check is None
    assert service.outlier_detection is None
    assert service.slow_start is None
    assert service.circuit_breakers == CircuitBreakers()
    assert service.timeouts == Timeouts()
    assert service.versions[0].endpoints[0] == Endpoint(
        "10.0.0.1", 8000, 1, (), EndpointHealth.UNKNOWN
    )


def test_every_optional_field() -> None:
    body = BODY.replace(
        "port: 8000}",
        "port: 8000, weight: 3, health: draining, labels: {zone: b, gpu: a100}}",
    ) + (
        "loadBalancing:\n"
        "  policy: ring_hash\n"
        "  hashKey: {cookie: {name: sid, ttl: 1h, path: /v1}}\n"
        "  boundedLoad: 2\n"
        "outlierDetection: {consecutive5xx: 3, interval: 500ms, baseEjectionTime: 1m,"
        " maxEjectionPercent: 100}\n"
        "circuitBreakers: {maxConnections: 1, maxPendingRequests: 2, maxRequests: 3,"
        " maxRetries: 0}\n"
        "timeouts: {request: 0s, idle: 90s}\n"
    )
    result = load_text(doc(body))
    assert result.state is not None, result.errors
    s = result.state.services[0]
    assert s.versions[0].endpoints[0] == Endpoint(
        "10.0.0.1", 8000, 3, (("gpu", "a100"), ("zone", "b")), EndpointHealth.DRAINING
    )
    assert s.load_balancing.hash_key is not None
    assert s.load_balancing.hash_key.cookie is not None
    assert (s.load_balancing.hash_key.cookie.ttl_ms, s.load_balancing.hash_key.cookie.path) == (
        3_600_000, "/v1")
    assert s.load_balancing.bounded_load == 2.0
    assert s.outlier_detection == OutlierDetection(3, 500, 60_000, 100)
    assert s.circuit_breakers == CircuitBreakers(1, 2, 3, 0)
    assert s.timeouts == Timeouts(0, 90_000)


def test_multi_document_file_with_empty_documents() -> None:
    text = "---\n" + service_doc("b", 10001) + "---\n---\n" + service_doc("a", 10002) + "---\n"
    result = load_text(text, "multi.yaml")
    assert result.errors == ()
    assert result.state is not None
    assert [s.name for s in result.state.services] == ["a", "b"]  # sorted by name
    assert result.files == ("multi.yaml",)
    assert [(o.kind, o.name, o.line) for o in result.objects] == [
        ("ModelService", "b", 2), ("ModelService", "a", 15)
    ]


def test_empty_text_is_an_empty_state() -> None:
    result = load_text("# nothing yet\n")
    assert result.errors == ()
    assert result.state is not None and result.state.services == ()


def test_errors_in_later_documents_have_their_own_lines() -> None:
    second = service_doc("b", 10002).replace("port: 8000", "port: 0")
    text = service_doc("a", 10001) + "---\n" + second
    assert errors(text) == [
        (23, 37, "spec.versions[0].endpoints[0].port", "must be between 1 and 65535 (got 0)")
    ]


def test_directory_loads_yaml_and_yml_sorted_not_recursive(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text(service_doc("bravo", 10002))
    (tmp_path / "a.yaml").write_text(service_doc("alpha", 10001))
    (tmp_path / "notes.txt").write_text("not yaml: [")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text("not: [valid")
    result = load_paths([tmp_path])
    assert result.errors == ()
    assert result.files == (str(tmp_path / "a.yaml"), str(tmp_path / "b.yml"))
    assert result.state is not None
    assert [s.name for s in result.state.services] == ["alpha", "bravo"]


def test_a_file_given_twice_is_read_once(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(service_doc("alpha", 10001))
    result = load_paths([tmp_path, tmp_path / "a.yaml"])
    assert result.errors == () and len(result.files) == 1


def test_duplicate_service_names_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(service_doc("chat", 10001))
    (tmp_path / "b.yaml").write_text(service_doc("chat", 10002))
    result = load_paths([tmp_path])
    assert [str(e) for e in result.errors] == [
        f"{tmp_path / 'b.yaml'}:4:9: metadata.name: duplicate ModelService name 'chat' "
        f"(first defined at {tmp_path / 'a.yaml'}:4:9)"
    ]
    assert result.state is None


@pytest.mark.parametrize(
    ("first", "second"),
    [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::1", "0:0::1"), ("::", "::1")],
)
def test_two_services_on_one_listener(first: str, second: str) -> None:
    a = doc(BODY.replace("127.0.0.1", f'"{first}"'), HEADER.replace("chat", "a"))
    b = doc(BODY.replace("127.0.0.1", f'"{second}"'), HEADER.replace("chat", "b"))
    found = errors(a + "---\n" + b)
    assert len(found) == 1
    line, column, path, message = found[0]
    assert (line, column, path) == (18, 3, "spec.listener")
    assert message.startswith(f"listener {second}:10000 conflicts with service 'a'")


def test_same_address_other_port_is_fine() -> None:
    assert errors(service_doc("a", 10001) + "---\n" + service_doc("b", 10002)) == []


def test_missing_file_and_bad_encoding(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    result = load_paths([tmp_path / "nope.yaml", tmp_path / "latin1.yaml"])
    assert [(e.file, e.line, e.column, e.path) for e in result.errors] == [
        (str(tmp_path / "nope.yaml"), 1, 1, ""),
        (str(tmp_path / "latin1.yaml"), 1, 1, ""),
    ]
    assert "cannot read" in result.errors[0].message
    assert "not UTF-8" in result.errors[1].message
    assert result.files == (str(tmp_path / "latin1.yaml"),)


def test_config_error_str_format() -> None:
    result = load_text(doc(BODY + "extra: 1\n"), "svc.yaml")
    assert [str(e) for e in result.errors] == [
        "svc.yaml:12:3: spec.extra: unknown field 'extra'; known fields: listener, versions, "
        "loadBalancing, healthCheck, outlierDetection, slowStart, circuitBreakers, timeouts, "
        "failover, retries, offline, router"
    ]
    assert errors_of(result)[0][:3] == (12, 3, "spec.extra")

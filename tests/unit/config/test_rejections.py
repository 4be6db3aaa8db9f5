"""Every rejection names the field path and the line and column of the offending node."""

from __future__ import annotations

import pytest

from tests.unit.config.util import BODY, HEADER, doc, errors

EP = "spec.versions[0].endpoints[0]"
# (id, spec body, line, column, path, a phrase of the message); exactly one error expected.
CASES = [
    ("unknown-spec-key", BODY + "extra: 1\n", 12, 3, "spec.extra", "unknown field 'extra'"),
    ("unknown-key-suggests", BODY + "healthChek: {}\n", 12, 3, "spec.healthChek",
     "did you mean 'healthCheck'?"),
    ("unknown-endpoint-key", BODY.replace("port: 8000}", "port: 8000, wieght: 2}"),
     11, 43, f"{EP}.wieght", "unknown field 'wieght' (did you mean 'weight'?)"),
    ("port-string", BODY.replace("port: 8000", 'port: "8000"'), 11, 37, f"{EP}.port",
     "expected an integer, got a string ('8000')"),
    ("weight-float", BODY.replace("weight: 100", "weight: 99.5"), 9, 15,
     "spec.versions[0].weight", "expected an integer, got a number ('99.5')"),
    ("versions-not-list", "listener: {address: 127.0.0.1, port: 10000}\nversions: v1\n",
     7, 13, "spec.versions", "expected a list, got a string ('v1')"),
    ("listener-not-mapping", BODY.replace("{address: 127.0.0.1, port: 10000}", "x"),
     6, 13, "spec.listener", "expected a mapping, got a string ('x')"),
    ("bool-for-int", BODY.replace("port: 8000", "port: true"), 11, 37, f"{EP}.port",
     "expected an integer, got a boolean"),
    ("missing-required", BODY.replace(", port: 8000", ""), 11, 11, f"{EP}.port",
     "missing required field 'port'"),
    ("endpoints-empty", BODY.replace("\n      - {address: 10.0.0.1, port: 8000}", " []"),
     10, 18, "spec.versions[0].endpoints", "needs at least 1 item"),
    ("duplicate-yaml-key", BODY + "listener: {address: 127.0.0.1, port: 1}\n", 12, 3,
     "spec.listener", "duplicate key 'listener' (first at line 6)"),
    ("endpoint-port-0", BODY.replace("port: 8000", "port: 0"), 11, 37, f"{EP}.port",
     "must be between 1 and 65535 (got 0)"),
    ("endpoint-port-65536", BODY.replace("port: 8000", "port: 65536"), 11, 37, f"{EP}.port",
     "must be between 1 and 65535 (got 65536)"),
    ("listener-port-70000", BODY.replace("port: 10000", "port: 70000"), 6, 40,
     "spec.listener.port", "must be between 1 and 65535"),
    ("ipv4-out-of-range", BODY.replace("10.0.0.1", "256.1.1.1"), 11, 21, f"{EP}.address",
     "must be an IPv4 or IPv6 address (got '256.1.1.1')"),
    ("ipv4-short", BODY.replace("10.0.0.1", "10.0.1"), 11, 21, f"{EP}.address",
     "must be an IPv4 or IPv6 address"),
    ("bad-host", BODY.replace("10.0.0.1", "bad_host"), 11, 21, f"{EP}.address",
     "must be an IPv4 or IPv6 address (got 'bad_host')"),
    ("endpoint-dns-name", BODY.replace("10.0.0.1", "gpu-1.example.com"), 11, 21,
     f"{EP}.address", "endpoints are sent over EDS, which takes IP addresses, not DNS names"),
    ("ipv6-brackets", BODY.replace("10.0.0.1", '"[::1]"'), 11, 21, f"{EP}.address",
     "without brackets"),
    ("bad-ipv6", BODY.replace("10.0.0.1", '"fe80::1::2"'), 11, 21, f"{EP}.address",
     "must be an IPv4 or IPv6 address"),
    ("listener-dns-name", BODY.replace("address: 127.0.0.1", "address: localhost"), 6, 23,
     "spec.listener.address",
     "must be an IPv4 or IPv6 address: a listener binds to an IP, not a DNS name"),
    ("version-name-upper", BODY.replace("name: v1", "name: V1"), 8, 13,
     "spec.versions[0].name", "must be a DNS-1123 label"),
    ("version-name-too-long", BODY.replace("name: v1", "name: " + "v" * 64), 8, 13,
     "spec.versions[0].name", "must be a DNS-1123 label"),
    ("duplicate-version", BODY + """\
  - name: v1
    weight: 0
    endpoints: [{address: 10.0.0.2, port: 8000}]
""", 12, 13, "spec.versions[1].name", "duplicate version name 'v1' (first at line 8)"),
    ("duplicate-endpoint", BODY + "      - {address: 10.0.0.1, port: 8000}\n", 12, 11,
     "spec.versions[0].endpoints[1]", "duplicate endpoint 10.0.0.1:8000 (same as endpoints[0]"),
    ("duplicate-endpoint-ipv6-spelling",
     BODY.replace("10.0.0.1", '"::1"') + '      - {address: "0:0::1", port: 8000}\n', 12, 11,
     "spec.versions[0].endpoints[1]", "duplicate endpoint 0:0::1:8000"),
    ("weights-not-100", BODY.replace("weight: 100", "weight: 90") + """\
  - name: v2
    weight: 5
    endpoints: [{address: 10.0.0.2, port: 8000}]
""", 7, 3, "spec.versions", "version weights must add up to 100, got 95 (v1: 90, v2: 5)"),
    ("weight-over-100", BODY.replace("weight: 100", "weight: 101"), 9, 15,
     "spec.versions[0].weight", "must be between 0 and 100"),
    ("hashkey-with-least-request", BODY + "loadBalancing: {hashKey: {header: x-user}}\n",
     12, 19, "spec.loadBalancing.hashKey",
     "only valid with policy ring_hash, maglev or hybrid (policy is least_request by default)"),
    ("hashkey-with-round-robin",
     BODY + "loadBalancing: {policy: round_robin, hashKey: {sourceIp: true}}\n", 12, 40,
     "spec.loadBalancing.hashKey", "(policy is round_robin); remove hashKey"),
    ("bounded-load-without-hashing", BODY + "loadBalancing: {policy: random, boundedLoad: 1.5}\n",
     12, 35, "spec.loadBalancing.boundedLoad",
     "only valid with policy ring_hash, maglev or hybrid"),
    ("hashing-without-hashkey", BODY + "loadBalancing: {policy: maglev}\n", 12, 27,
     "spec.loadBalancing.hashKey",
     "policy maglev hashes requests: add loadBalancing.hashKey, e.g. hashKey: "
     "{header: x-session-id}"),
    ("hashkey-none", BODY + "loadBalancing: {policy: ring_hash, hashKey: {}}\n", 12, 38,
     "spec.loadBalancing.hashKey", "set exactly one of header, cookie, sourceIp"),
    ("hashkey-two",
     BODY + "loadBalancing:\n  policy: maglev\n  hashKey: {header: x-a, cookie: {name: s}}\n",
     14, 28, "spec.loadBalancing.hashKey.cookie",
     "set exactly one of header, cookie, sourceIp (header is already set)"),
    ("hashkey-source-ip-false",
     BODY + "loadBalancing: {policy: maglev, hashKey: {sourceIp: false}}\n", 12, 55,
     "spec.loadBalancing.hashKey.sourceIp", "must be true"),
    ("header-uppercase", BODY + "loadBalancing: {policy: maglev, hashKey: {header: X-Id}}\n",
     12, 53, "spec.loadBalancing.hashKey.header", "must be a lowercase HTTP header name"),
    ("cookie-needs-name", BODY + "loadBalancing: {policy: maglev, hashKey: {cookie: {}}}\n",
     12, 45, "spec.loadBalancing.hashKey.cookie.name", "missing required field 'name'"),
    ("bounded-load-1", BODY + "loadBalancing: {policy: maglev, hashKey: {sourceIp: true}, "
     "boundedLoad: 1.0}\n", 12, 75, "spec.loadBalancing.boundedLoad",
     "must be greater than 1.0 (got 1.0)"),
    ("unknown-policy", BODY + "loadBalancing: {policy: maglve}\n", 12, 27,
     "spec.loadBalancing.policy",
     "must be one of round_robin, least_request, random, ring_hash, maglev, response_time, "
     "load_report, hybrid (got 'maglve')"),
    ("slow-start-with-maglev", BODY + "loadBalancing: {policy: maglev, hashKey: "
     "{sourceIp: true}}\nslowStart: {window: 30s}\n", 13, 3, "spec.slowStart",
     "only valid with policy round_robin, least_request, response_time or hybrid (Envoy "
     "ignores it with maglev)"),
    ("duration-integer", BODY + "healthCheck: {interval: 5}\n", 12, 27,
     "spec.healthCheck.interval", "expected a duration string like '5s', got an integer"),
    ("duration-no-unit", BODY + "healthCheck: {interval: '5'}\n", 12, 27,
     "spec.healthCheck.interval", "invalid duration '5': write an integer and a unit"),
    ("duration-fraction", BODY + "outlierDetection: {baseEjectionTime: 1.5s}\n", 12, 40,
     "spec.outlierDetection.baseEjectionTime", "invalid duration '1.5s'"),
    ("duration-unknown-unit", BODY + "timeouts: {request: 1d}\n", 12, 23,
     "spec.timeouts.request", "invalid duration '1d'"),
    ("duration-zero", BODY + "slowStart: {window: 0s}\n", 12, 23, "spec.slowStart.window",
     "must be greater than 0"),
    ("null-section", BODY + "healthCheck:\n", 12, 15, "spec.healthCheck",
     "expected a mapping, got null (write {} to use the defaults)"),
    ("endpoint-health", BODY.replace("port: 8000}", "port: 8000, health: sick}"), 11, 51,
     f"{EP}.health", "must be one of unknown, healthy, unhealthy, draining (got 'sick')"),
    ("circuit-breaker-negative", BODY + "circuitBreakers: {maxRetries: -1}\n", 12, 33,
     "spec.circuitBreakers.maxRetries", "must be between 0 and 4294967295"),
    ("label-value-type", BODY.replace("port: 8000}", "port: 8000, labels: {gpus: 8}}"), 11, 58,
     f"{EP}.labels.gpus", "expected a string, got an integer ('8')"),
]


@pytest.mark.parametrize(
    ("body", "line", "column", "path", "phrase"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_rejected_with_position(body: str, line: int, column: int, path: str, phrase: str) -> None:
    found = errors(doc(body))
    assert len(found) == 1, found
    assert found[0][:3] == (line, column, path), found
    assert phrase in found[0][3], found


def test_every_error_is_reported_not_just_the_first() -> None:
    body = BODY.replace("port: 8000", "port: 0").replace("weight: 100", "weight: 50")
    found = errors(doc(body + "extra: true\n"))
    assert [(line, col, path) for line, col, path, _ in found] == [
        (7, 3, "spec.versions"),
        (11, 37, "spec.versions[0].endpoints[0].port"),
        (12, 3, "spec.extra"),
    ]


def test_a_version_at_zero_is_valid() -> None:
    body = BODY + "  - name: v2\n    weight: 0\n    endpoints: [{address: 10.0.0.2, port: 1}]\n"
    assert errors(doc(body)) == []


def test_invalid_policy_does_not_cascade_into_hash_key_errors() -> None:
    found = errors(doc(BODY + "loadBalancing: {policy: 3, hashKey: {header: x-a}}\n"))
    assert [f[2] for f in found] == ["spec.loadBalancing.policy"]


METADATA_CASES = [
    ("name-upper", "metadata:\n  name: Chat\n", 4, 9, "metadata.name", "must be a DNS-1123 label"),
    ("name-missing", "metadata:\n  labels: {a: b}\n", 3, 1, "metadata.name",
     "missing required field 'name'"),
    ("unknown-metadata-key", "metadata:\n  name: chat\n  namespce: x\n", 5, 3,
     "metadata.namespce", "unknown field 'namespce'"),
    ("label-key", "metadata:\n  name: chat\n  labels: {'a b': c}\n", 5, 12, "metadata.labels.a b",
     "must be a label key"),
    ("api-version", "metadata:\n  name: chat\n", 1, 13, "apiVersion",
     "must be one of sluice.dev/v1alpha1 (got 'v1')"),
]


@pytest.mark.parametrize(
    ("meta", "line", "column", "path", "phrase"),
    [c[1:] for c in METADATA_CASES],
    ids=[c[0] for c in METADATA_CASES],
)
def test_envelope_rejections(meta: str, line: int, column: int, path: str, phrase: str) -> None:
    header = HEADER.replace("metadata:\n  name: chat\n", meta)
    if "api-version" in phrase or "v1alpha1" in phrase:
        header = header.replace("sluice.dev/v1alpha1", "v1")
    found = errors(doc(BODY, header))
    assert len(found) == 1, found
    assert found[0][:3] == (line, column, path), found
    assert phrase in found[0][3], found


def test_unknown_kind_names_the_known_kinds() -> None:
    found = errors(HEADER.replace("ModelService", "Rollout") + "  {}\n")
    assert found == [
        (2, 7, "kind", "unknown kind 'Rollout'; known kinds: ModelService, Experiment")]


def test_missing_kind() -> None:
    found = errors("apiVersion: sluice.dev/v1alpha1\nmetadata: {name: x}\nspec: {}\n")
    assert found == [(1, 1, "kind",
                      "missing required field 'kind' (known kinds: ModelService, Experiment)")]


def test_document_that_is_not_a_mapping() -> None:
    found = errors("- a\n- b\n")
    assert found == [(1, 1, "", "expected a mapping with apiVersion, kind, metadata and spec, "
                      "got a list")]


def test_yaml_syntax_error_has_position() -> None:
    found = errors(doc(BODY) + "  extra: [1, 2\n")
    assert len(found) == 1
    line, column, path, message = found[0]
    assert (line, column, path) == (13, 1, "")
    assert message.startswith("YAML syntax error: while parsing a flow sequence")


def test_alias_blow_up_is_refused() -> None:
    # 1,000 aliased versions of 1,000 aliased endpoints: a 20 KB file, a million nodes.
    endpoints = ", ".join(["*e"] * 1000)
    versions = ", ".join(["*v"] * 999)
    text = HEADER + (
        "  listener: {address: 127.0.0.1, port: 1}\n"
        "  x: &e {address: 10.0.0.1, port: 1}\n"
        f"  versions: [&v {{name: a, weight: 0, endpoints: [{endpoints}]}}, {versions}]\n"
    )
    found = errors(text)
    assert any("document too large" in f[3] for f in found), found[:3]


def test_merge_keys_are_refused() -> None:
    body = BODY.replace("{address: 10.0.0.1, port: 8000}", "{<<: {address: 10.0.0.1}, port: 1}")
    assert errors(doc(body)) == [
        (11, 11, "spec.versions[0].endpoints[0].address", "missing required field 'address'"),
        (11, 12, "spec.versions[0].endpoints[0]", "merge keys (<<) are not supported"),
    ]

"""Routing fields of ModelService: accepted shapes, one error per problem, warnings."""

from __future__ import annotations

import pytest

from controlplane.config import load_text
from controlplane.model import (
    Capacity,
    LbPolicy,
    Offline,
    Retries,
    hybrid_header,
    prior_weight,
)
from tests.unit.config.util import BODY, doc, errors

EP = "spec.versions[0].endpoints[0]"
TWO = BODY + "      - {address: 10.0.0.2, port: 8000, labels: {gpu: a100}}\n"


def test_a_full_routing_document_builds_the_model() -> None:
    body = BODY.replace("port: 8000}", "port: 8000, labels: {gpu: h100}, priority: 0}") + (
        "      - {address: 10.0.0.2, port: 8000, labels: {gpu: a100}, priority: 1}\n"
        "loadBalancing:\n"
        "  policy: response_time\n"
        "  activeRequestBias: 2.0\n"
        "  capacity: {h100: 2, a100: 1.5}\n"
        "  responseTime: {interval: 1s, hysteresis: 0.1, maxStep: 2, floor: 0.1, "
        "staleAfter: 30s}\n"
        "failover: {overprovisioningFactor: 200, panicThreshold: 25}\n"
        "retries: {retryOn: [connect-failure, reset], attempts: 1, "
        "budget: {percent: 10, minConcurrency: 2}}\n"
        "offline: {listener: {address: 127.0.0.1, port: 10001}, concurrencyPerPod: 4, "
        "maxConcurrency: 64, retryAfter: 10s}\n")
    result = load_text(doc(body), "t.yaml")
    assert result.errors == () and result.standalone.warnings == ()
    assert result.state is not None
    [svc] = result.state.services
    lb = svc.load_balancing
    assert lb.policy is LbPolicy.RESPONSE_TIME and lb.active_request_bias == 2.0
    assert lb.capacity == Capacity((("a100", 1.5), ("h100", 2.0)))
    assert lb.response_time is not None and lb.response_time.stale_after_ms == 30_000
    a, b = svc.versions[0].endpoints
    assert (a.priority, b.priority) == (0, 1)
    assert (prior_weight(svc, a), prior_weight(svc, b)) == (200, 150)
    assert svc.failover is not None and svc.failover.overprovisioning_factor == 200
    assert svc.retries == Retries(("connect-failure", "reset"), 1, 10.0, 2)
    assert svc.offline is not None and svc.offline.header is None  # listener only
    assert svc.offline.retry_after_s == 10 and svc.offline.max_concurrency == 64


def test_defaults_of_the_new_sections() -> None:
    result = load_text(doc(BODY + "offline: {}\nloadBalancing: {policy: hybrid, "
                                  "hashKey: {header: x-session-id}}\n"))
    assert result.errors == () and result.state is not None
    [svc] = result.state.services
    assert svc.offline == Offline()
    assert svc.load_balancing.bounded_load == 1.25  # hybrid's default bound


@pytest.mark.parametrize("key", ["", ", hashKey: {header: x-user}"])
def test_hybrid_is_one_setting_with_a_default_key_header(key: str) -> None:
    result = load_text(doc(BODY + f"loadBalancing: {{policy: hybrid{key}}}\n"))
    assert result.errors == () and result.state is not None
    [svc] = result.state.services
    assert hybrid_header(svc) == ("x-user" if key else "x-session-id")
    assert svc.load_balancing.bounded_load == 1.25


LB = "spec.loadBalancing"
CASES = [
    ("capacity-zero", BODY + "loadBalancing: {capacity: {h100: 0}}\n", f"{LB}.capacity.h100",
     "must be greater than 0.0 (got 0.0)"),
    ("capacity-negative", BODY + "loadBalancing: {capacity: {h100: 2, a100: -1}}\n",
     f"{LB}.capacity.a100", "must be greater than 0.0 (got -1.0)"),
    ("capacity-empty", BODY + "loadBalancing: {capacity: {}}\n", f"{LB}.capacity",
     "needs at least one GPU type"),
    ("capacity-same-type-twice", BODY + "loadBalancing: {capacity: {h100: 2, H100: 3}}\n",
     f"{LB}.capacity.H100", "the same GPU type as h100"),
    ("capacity-not-number", BODY + "loadBalancing: {capacity: {h100: fast}}\n",
     f"{LB}.capacity.h100", "expected a number"),
    ("maglev-needs-key", BODY + "loadBalancing: {policy: maglev}\n", f"{LB}.hashKey",
     "policy maglev hashes requests"),
    ("hybrid-needs-header", BODY + "loadBalancing: {policy: hybrid, hashKey: {sourceIp: true}}\n",
     f"{LB}.hashKey", "use hashKey: {header: NAME}"),
    ("bias-with-random", BODY + "loadBalancing: {policy: random, activeRequestBias: 2}\n",
     f"{LB}.activeRequestBias", "only valid with policy least_request, response_time or hybrid"),
    ("tuning-wrong-policy", BODY + "loadBalancing: {policy: maglev, hashKey: {header: a}, "
     "loadReport: {}}\n", f"{LB}.loadReport", "tunes policy load_report"),
    ("label-without-capacity", BODY + "loadBalancing: {capacityLabel: accel}\n",
     f"{LB}.capacityLabel", "add loadBalancing.capacity"),
    ("priority-gap", BODY.replace("port: 8000}", "port: 8000, priority: 2}"),
     "spec.versions[0].endpoints", "start at 0 and leave no gap (got 2)"),
    ("priority-negative", BODY.replace("port: 8000}", "port: 8000, priority: -1}"),
     f"{EP}.priority", "must be between 0 and 127"),
    ("overprovisioning-low", BODY + "failover: {overprovisioningFactor: 50}\n",
     "spec.failover.overprovisioningFactor", "must be between 100 and 100000"),
    ("retry-on-5xx", BODY + "retries: {retryOn: [5xx]}\n", "spec.retries.retryOn[0]",
     "must be one of connect-failure, refused-stream, reset, reset-before-request"),
    ("retry-twice", BODY + "retries: {retryOn: [reset, reset]}\n", "spec.retries.retryOn[1]",
     "'reset' is listed twice"),
    ("batch-listener-clash", BODY + "offline: {listener: {address: 127.0.0.1, port: 10000}}\n",
     "spec.offline.listener", "must differ from the service's listener"),
    ("weights-past-uint32", BODY.replace("port: 8000}", "port: 8000, weight: 1000000, "
                                         "labels: {gpu: h100}}")
     + "loadBalancing: {capacity: {h100: 50}}\n", "spec.versions[0].endpoints",
     "add up to 5000000000 at priority 0, above Envoy's limit of 4294967295"),
    ("weights-past-half-uint32", BODY.replace("port: 8000}", "port: 8000, weight: 1000000, "
                                              "labels: {gpu: h100}}")
     + "loadBalancing: {policy: response_time, capacity: {H100: 30}}\n",
     "spec.versions", "add up to 3000000000; response_time moves them within 2× that, so at "
     "most 2147483647"),
    ("weights-past-uint32-over-zones", BODY.replace(
        "port: 8000}", "port: 8000, weight: 1000000, labels: {gpu: h100, zone: a}}")
     + "      - {address: 10.0.0.2, port: 8000, weight: 1000000, labels: {gpu: h100, zone: b}}\n"
     + "loadBalancing: {policy: maglev, hashKey: {header: x}, capacity: {h100: 30}}\n",
     "spec.versions[0].endpoints", "add up to 6000000000 at priority 0"),
    ("batch-cap-negative", BODY + "offline: {maxConcurrency: -1}\n",
     "spec.offline.maxConcurrency", "must be between 0 and 1000000"),
]


@pytest.mark.parametrize(("body", "path", "phrase"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_one_error_per_problem_with_its_position(body: str, path: str, phrase: str) -> None:
    found = errors(doc(body))
    assert len(found) == 1, found
    line, column, got_path, message = found[0]
    assert got_path == path and phrase in message, found
    assert line > 5 and column > 0


def test_unknown_gpu_labels_warn_and_get_the_default_weight() -> None:
    body = TWO.replace("port: 8000}", "port: 8000, labels: {gpu: l4}}", 1) + (
        "      - {address: 10.0.0.3, port: 8000}\n"
        "loadBalancing: {capacity: {h100: 2, a100: 1}}\n")
    result = load_text(doc(body), "t.yaml")
    assert result.errors == () and result.state is not None
    warned = [(w.path, w.message) for w in result.standalone.warnings]
    assert warned == [
        ("spec.versions[0].endpoints[0]", "gpu: l4, not in loadBalancing.capacity (a100, h100): "
         "it gets the default weight (its own weight, capacity 1)"),
        ("spec.versions[0].endpoints[2]", "no gpu label, not in loadBalancing.capacity "
         "(a100, h100): it gets the default weight (its own weight, capacity 1)"),
    ]
    [svc] = result.state.services
    assert [prior_weight(svc, e) for e in svc.versions[0].endpoints] == [100, 100, 100]


def test_gpu_labels_match_whatever_their_case() -> None:
    body = TWO.replace("port: 8000}", "port: 8000, labels: {gpu: H100}}", 1) + (
        "loadBalancing: {capacity: {h100: 2, A100: 1.5}}\n")
    result = load_text(doc(body), "t.yaml")
    assert result.errors == () and result.standalone.warnings == ()
    assert result.state is not None
    [svc] = result.state.services
    assert [prior_weight(svc, e) for e in svc.versions[0].endpoints] == [200, 150]


def test_the_second_listener_conflicts_across_services() -> None:
    other = doc(BODY.replace("10000", "10005") + "offline: {listener: {address: 127.0.0.1, "
                "port: 10000}}\n").replace("name: chat", "name: other")
    result = load_text(doc() + "---\n" + other, "t.yaml")
    messages = [e.message for e in result.errors]
    assert len(messages) == 1 and "conflicts with service" in messages[0], messages

"""Inputs the fuzz targets found crashing, each kept as a regression test.

Each names the contract it broke: readers report bad input as their documented
error (``read_samples`` a line error, the providers ``ProviderError``, the
loader a one-line ``ConfigError``), never another exception.
"""

from __future__ import annotations

import io

import pytest
import yaml

from analysis.providers import ProviderError
from analysis.providers.prom_answers import assemble
from analysis.providers.promql import plan
from analysis.replay import read_samples
from controlplane.config import load_text
from tests.fuzz import admin, targets
from tests.fuzz.targets import _Answer, _provider, _target, prom_spec, spec

LINE = '{"t": 60, "version": "b", "requests": 5, "errors": 0%s}\n'


@pytest.mark.parametrize(("line", "message"), [
    ("[" * 100_000, "nested too deeply"),  # was RecursionError
    ('{"t": ' + "9" * 5000 + "}", "4300 digits"),  # was ValueError from json
    # The next three were OverflowError (an integer too large for a float).
    (LINE.replace("5", "1" + "0" * 400, 1) % "", "requests: must be a finite number"),
    (LINE.replace("60", "6" + "0" * 400) % "", "t: must be a finite number"),
    (LINE % (', "latency": {"buckets": {"+Inf": 5}, "sum": 1' + "0" * 400 + "}"),
     "latency.sum: must be a finite number"),
    (LINE % ', "histograms": 5', "histograms: must be an object"),  # was TypeError
])
def test_replay_reports_a_line_it_cannot_read(line: str, message: str) -> None:
    parsed, errors = read_samples("s.jsonl", io.StringIO(line), spec())
    assert parsed == []
    [error] = errors
    assert error.startswith("s.jsonl:1: ") and message in error
    assert len(error) < 200


def test_a_prometheus_value_too_large_for_a_float_is_a_provider_error() -> None:
    target = _target(prom_spec())
    queries = plan(target)
    huge = [{"metric": {"envoy_cluster_name": "chat/v1"}, "value": [1.0, 10**400]}]
    with pytest.raises(ProviderError, match="bad value"):  # was OverflowError
        assemble(target, 1.0, queries, [huge] * len(queries))


def test_a_prometheus_answer_nested_too_deeply_is_a_provider_error() -> None:
    provider = _provider()
    provider._client()._session = _Answer(200, b"[" * 100_000)  # type: ignore[assignment]
    with pytest.raises(ProviderError, match="malformed answer"):  # was RecursionError
        provider._query_sync("up", 1.0)


SERVICE = {"apiVersion": "sluice.dev/v1alpha1", "kind": "ModelService",
           "metadata": {"name": "chat", "labels": {}},
           "spec": {"listener": {"address": "127.0.0.1", "port": 10000},
                    "versions": [{"name": "v1", "weight": 100,
                                  "endpoints": [{"address": "10.0.0.1", "port": 80}]}]}}


@pytest.mark.parametrize("key", ["\n", "a\nb", "x" * 5000, "\u202e", "tab\there"])
def test_a_bad_key_gives_one_short_error_line(key: str) -> None:
    for where in ("spec", "labels"):
        doc = yaml.safe_load(yaml.safe_dump(SERVICE))
        (doc["spec"] if where == "spec" else doc["metadata"]["labels"])[key] = "x"
        [error] = load_text(yaml.safe_dump(doc), "c.yaml").errors
        text = str(error)
        assert "\n" not in text and len(text) < 700, text  # was the whole key, line breaks too


def test_plain_keys_still_print_as_they_are() -> None:
    doc = yaml.safe_load(yaml.safe_dump(SERVICE))
    doc["spec"]["lisener"] = 1
    doc["metadata"]["labels"]["a b"] = "c d"
    found = {(e.path, e.message.split(";")[0]) for e in load_text(yaml.safe_dump(doc)).errors}
    assert ("spec.lisener", "unknown field 'lisener' (did you mean 'listener'?)") in found
    assert any(path == "metadata.labels.a b" for path, _ in found)


def test_an_expect_header_that_is_not_utf8_is_not_a_500() -> None:
    raw = (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: \x80\r\n"
           b"Connection: close\r\nContent-Length: 0\r\n\r\n")
    status = admin.world().send(raw).split(b" ", 2)[1]
    assert status == b"417"  # aiohttp's own handler answered 500 (it echoed the value)


def test_expect_100_continue_still_continues() -> None:
    raw = (b"POST /api/v1/experiments/x/pause HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    answer = admin.world().send(raw)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 "), answer[:80]


def test_targets_are_registered() -> None:
    assert set(targets.targets()) == {"config", "wire", "sotw", "delta", "replay", "envoy_text",
                                      "prometheus", "prom_answers", "admin_api"}


def test_an_expect_header_on_an_unrouted_request_is_not_a_500() -> None:
    for line in (b"POST / HTTP/1.1", b"GET /nope HTTP/1.1", b"PUT /api/v1/services HTTP/1.1"):
        raw = (line + b"\r\nHost: 127.0.0.1\r\nExpect: \x80\r\nConnection: close\r\n"
               b"Content-Length: 0\r\n\r\n")
        status = admin.world().send(raw).split(b" ", 2)[1]
        assert status == b"417", (line, status)


def test_unrouted_requests_still_get_404_and_405() -> None:
    def status(line: bytes) -> bytes:
        raw = line + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        return admin.world().send(raw).split(b"\r\n\r\n", 1)[0]

    assert status(b"GET /nope HTTP/1.1").split(b" ", 2)[1] == b"404"
    head = status(b"POST /api/v1/services HTTP/1.1")
    assert head.split(b" ", 2)[1] == b"405" and b"Allow: " in head

"""The fuzz targets: one function per input surface, with the strategy that feeds it.

A target takes one drawn input and raises when the code under test breaks
its contract: an exception other than the documented ones escapes, or a
property fails (``Broken``). The contracts:

- ``config``: the YAML loader and validator never raise, whatever the text;
  every error prints as one line of bounded length; what loads cleanly,
  merged over what served before, always builds a snapshot.
- ``wire``: the wire views parse or raise ``DecodeError``; what parses
  re-serializes to an equal message.
- ``sotw`` / ``delta``: a stream fed arbitrary request bytes, in any order,
  interleaved with new snapshots, raises only ``ProtocolError`` or
  ``DecodeError`` (which end the stream); every response encodes and has a
  fresh nonce; status and convergence never raise.
- ``replay``: ``read_samples`` reports bad lines, never raises; what it
  accepts replays through the judge without raising; messages are bounded.
- ``envoy_text``: ``parse_envoy_stats`` raises only ``ProviderError``; two
  readings always make windows (or a reason) without raising.
- ``prometheus``: an HTTP answer of any status and body, through the
  provider's client and ``assemble``, gives a Reading or ``ProviderError``.
- ``admin_api`` (``tests/fuzz/admin.py``): no request is answered with a 5xx.
"""

from __future__ import annotations

import atexit
import functools
import io
import json
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from google.protobuf.message import DecodeError
from hypothesis import strategies as st

from analysis.providers import ProviderError, Reading, Target
from analysis.providers.envoy_text import parse_envoy_stats
from analysis.providers.prom_answers import assemble as prom_assemble
from analysis.providers.prometheus import PrometheusProvider
from analysis.providers.promql import plan
from analysis.providers.windows import windows_between
from analysis.replay import read_samples, replay_file
from analysis.spec import ExperimentSpec
from controlplane.config import ConfigError, LoadResult, assemble, load_paths, load_text
from controlplane.config.experiment import experiment_from_mapping
from controlplane.store import Store
from tests.fuzz import gen_config, gen_text, gen_xds
from xds._wire import wire_pb2
from xds.build import build_snapshot
from xds.cache import ResourceEncoder, SnapshotCache
from xds.protocol import ProtocolError
from xds.server import XdsServer, encode

ROOT = Path(__file__).resolve().parents[2]
# An error quotes at most ~40 characters of any value (``config.errors.excerpt``), so a
# message stays short whatever the input; the longest fixed texts (lists of known
# fields) are a few hundred characters.
MAX_MESSAGE = 1000


class Broken(AssertionError):
    """A property of the target does not hold for this input: ``kind`` names the
    property (what makes two findings the same), ``detail`` shows the input."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


@dataclass(frozen=True)
class FuzzTarget:
    name: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], None]
    ci_examples: int  # examples in the fixed-seed pytest run


def _one_line(message: str, what: str) -> None:
    if len(message) > MAX_MESSAGE:
        raise Broken(f"{what} too long", f"{len(message):,} characters: {message[:160]!r}...")
    if any(c in message for c in "\n\r"):
        raise Broken(f"{what} spans lines", repr(message[:300]))


# -- config -----------------------------------------------------------------------------


# Shared so that resources the examples already built are not serialized again.
_ENCODER = ResourceEncoder()


@functools.cache
def _served() -> LoadResult:
    return load_paths([ROOT / "examples" / "services", ROOT / "examples" / "experiments"])


@functools.cache
def _scratch() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="sluice-fuzz-config-"))
    atexit.register(shutil.rmtree, directory, True)
    return directory / "fuzz.yaml"


def check_config(text: str | bytes) -> None:
    """Text through ``load_text``; bytes written to a file and read by ``load_paths``."""
    if isinstance(text, bytes):
        _scratch().write_bytes(text)
        result = load_paths([_scratch()])
    else:
        result = load_text(text, "fuzz.yaml")
    standalone = (result.errors, result.state, result.objects, result.warnings)
    previous = assemble(_served(), None)
    merged = assemble(result, previous)
    errors: list[ConfigError] = [*standalone[0], *merged.errors, *merged.warnings,
                                 *result.warnings]
    for error in errors:
        _one_line(str(error), "config error")
        if error.line < 1 or error.column < 1:
            raise Broken("config error without a position", str(error))
    for status in merged.statuses:
        json.dumps(status.to_json())
    store = Store(("file",))
    store.apply_load("file", _served())
    store.apply_load("file", result)
    build_snapshot(store.state, _ENCODER)


# -- xDS ------------------------------------------------------------------------------

_VIEWS = (wire_pb2.DiscoveryRequestView, wire_pb2.DeltaDiscoveryRequestView, wire_pb2.NodeView,
          wire_pb2.ResourceView, wire_pb2.AnyView, wire_pb2.DiscoveryResponseView)


def check_wire(raw: bytes) -> None:
    for view in _VIEWS:
        try:
            message = view.FromString(raw)
        except DecodeError:
            continue
        again = view.FromString(message.SerializeToString())
        if again != message:
            raise Broken(f"{view.__name__} round trip", repr(raw[:200]))


def _stream(variant: str) -> Callable[[Any], None]:
    build = gen_xds.sotw_request if variant == "sotw" else gen_xds.delta_request

    def check(data: Any) -> None:
        cache = SnapshotCache()
        cache.set(gen_xds.SNAPSHOTS[0])
        server = XdsServer(cache)
        info = None
        nonces: list[str] = []
        versions: list[str] = []
        for _ in range(data.draw(st.integers(1, 25), label="steps")):
            if data.draw(st.integers(0, 4), label="action") == 0:
                cache.set(data.draw(st.sampled_from(gen_xds.SNAPSHOTS), label="snapshot"))
                if info is None:
                    continue
                out: list[Any] = info.machine.on_snapshot(cache.snapshot)
            else:
                raw = data.draw(build(info is None, nonces, versions), label="request")
                try:
                    info, out = server._on_request(1, variant, info, raw)
                except (ProtocolError, DecodeError):
                    return  # the server ends the stream with INVALID_ARGUMENT
            for response in out:
                encode(response)
                if response.nonce in nonces:
                    raise Broken("nonce sent twice", response.nonce)
                nonces.append(response.nonce)
                versions.append(str(getattr(response, "version_info", None)
                                    or getattr(response, "system_version_info", "")))
            if info is not None:
                info.status()
                info.machine.converged()

    return check


# -- analysis ---------------------------------------------------------------------------


@functools.cache
def spec() -> ExperimentSpec:
    metrics = [
        {"name": "errors", "kind": "error_rate", "harmMargin": 0.0,
         "nonInferiorityMargin": 0.5, "minSamples": 10},
        {"name": "p95", "kind": "latency", "quantile": 0.95, "harmMargin": 0.2,
         "nonInferiorityMargin": 0.25, "minSamples": 10},
        {"name": "ttft", "kind": "latency", "source": "ttft", "quantile": 0.5,
         "harmMargin": 0.2, "nonInferiorityMargin": 0.25},
        {"name": "tokens", "kind": "mean", "harmMargin": 0.1, "nonInferiorityMargin": 0.1},
        {"name": "slow", "kind": "slow_rate", "threshold": "500ms", "harmMargin": 0.2,
         "nonInferiorityMargin": 0.5, "minEffect": 0.001},
        {"name": "tps", "kind": "ratio", "harmMargin": 0.2, "nonInferiorityMargin": 0.1,
         "direction": "lowerIsWorse"},
    ]
    doc = {"apiVersion": "sluice.dev/v1alpha1", "kind": "Experiment",
           "metadata": {"name": "fuzz"},
           "spec": {"baseline": gen_text.BASELINE, "candidate": gen_text.CANDIDATE,
                    "steps": [{"weight": 5, "soak": "1m"}, {"weight": 50, "soak": "1m"}],
                    "metrics": metrics}}
    return experiment_from_mapping(doc).analysis


def check_replay(text: str) -> None:
    parsed, errors = read_samples("fuzz.jsonl", io.StringIO(text), spec())
    for error in errors:
        _one_line(error, "replay error")
    failed = replay_file("fuzz.jsonl", parsed, spec(), io.StringIO(), compare=True)
    if failed is not None:
        _one_line(failed, "replay error")


def _target(analysis: ExperimentSpec | None = None) -> Target:
    s = analysis or spec()
    return Target("chat", (s.baseline, s.candidate), gen_text.CLUSTERS, s.metrics, 60.0)


@functools.cache
def prom_spec() -> ExperimentSpec:
    """Metrics of every kind of Prometheus query: Envoy's, the pods', a custom one."""
    margins = {"harmMargin": 0.2, "nonInferiorityMargin": 0.25}
    metrics = [
        {"name": "errors", "kind": "error_rate", **margins},
        {"name": "p95", "kind": "latency", "quantile": 0.95, **margins},
        {"name": "ttft", "kind": "latency", "source": "ttft", "quantile": 0.5, **margins},
        {"name": "output_tokens", "kind": "mean", **margins},
        {"name": "custom", "kind": "error_rate", **margins,
         "query": 'sum(x{version="{{version}}"})'},
    ]
    doc = {"apiVersion": "sluice.dev/v1alpha1", "kind": "Experiment",
           "metadata": {"name": "fuzz"},
           "spec": {"baseline": gen_text.BASELINE, "candidate": gen_text.CANDIDATE,
                    "metricsSource": {"prometheus": {"url": "http://127.0.0.1:9"}},
                    "steps": [{"weight": 5, "soak": "1m"}], "metrics": metrics}}
    return experiment_from_mapping(doc).analysis


def prom_queries() -> int:
    return len(plan(_target(prom_spec())))


def _windows(prev: Reading, cur: Reading, target: Target) -> None:
    windows, reason = windows_between(prev, cur, target, {"b": 90.0, "c": 10.0})
    if reason is not None:
        _one_line(reason, "windows")
    for window in windows.values():
        if not (math.isfinite(window.requests) and window.requests >= 0):
            raise Broken("window with bad requests", repr(window))


def check_envoy_text(texts: tuple[str, str]) -> None:
    readings = []
    for t, text in enumerate(texts):
        try:
            versions = parse_envoy_stats(text, gen_text.CLUSTERS)
        except ProviderError as exc:
            _one_line(str(exc), "provider error")
            return
        readings.append(Reading(float(t), {"envoy": versions}))
    _windows(readings[0], readings[1], _target())


class _Answer:
    """The one object ``requests.Session.request`` returns to the client under test."""

    def __init__(self, status: int, body: bytes) -> None:
        self.response = requests.models.Response()
        self.response.status_code = status
        self.response._content = body
        self.response.encoding = None
        self.verify, self.cert = True, None

    def request(self, **_: Any) -> requests.models.Response:
        return self.response

    def close(self) -> None:
        pass


@functools.cache
def _provider() -> PrometheusProvider:
    """One provider whose client's session answers what the example says."""
    provider = PrometheusProvider("http://127.0.0.1:9")
    provider._client()._session.close()
    return provider


def check_prometheus(answers: list[tuple[int, bytes]]) -> None:
    """``answers``: one (status, body) per query of two reads."""
    target = _target(prom_spec())
    queries = plan(target)
    provider = _provider()
    client = provider._client()
    readings = []
    try:
        for read in range(2):
            results = []
            for i, query in enumerate(queries):
                status, body = answers[read * len(queries) + i]
                client._session = _Answer(status, body)  # type: ignore[assignment]
                results.append(provider._query_sync(query.promql, 1.0 + read))
            readings.append(prom_assemble(target, 1.0 + read, queries, results))
    except ProviderError as exc:
        _one_line(str(exc), "provider error")
        return
    _windows(readings[0], readings[1], target)


def check_prom_answers(answers: list[Any]) -> None:
    """``answers``: one decoded ``result`` per query of two reads."""
    target = _target(prom_spec())
    queries = plan(target)
    readings = []
    try:
        for read in range(2):
            chosen = answers[read * len(queries):(read + 1) * len(queries)]
            readings.append(prom_assemble(target, 1.0 + read, queries, chosen))
    except ProviderError as exc:
        _one_line(str(exc), "provider error")
        return
    _windows(readings[0], readings[1], target)


def _pooled(answer: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    """One answer per query of two reads, drawn from a pool of up to four (cheaper to
    generate than one each, and the same answer to different queries is a case too)."""
    n = 2 * prom_queries()
    return st.tuples(st.lists(answer, min_size=1, max_size=4),
                     st.lists(st.integers(0, 3), min_size=n, max_size=n)).map(_picked)


def _picked(pool_picks: tuple[list[Any], list[int]]) -> list[Any]:
    pool, picks = pool_picks
    return [pool[i % len(pool)] for i in picks]


def _admin() -> FuzzTarget:
    from tests.fuzz.admin import admin_target

    return admin_target()


@functools.cache
def targets() -> dict[str, FuzzTarget]:
    found = [
        FuzzTarget("config", gen_config.config_texts(), check_config, 150),
        FuzzTarget("wire", gen_xds.wire_bytes(), check_wire, 300),
        FuzzTarget("sotw", st.data(), _stream("sotw"), 150),
        FuzzTarget("delta", st.data(), _stream("delta"), 150),
        FuzzTarget("replay", gen_text.jsonl_texts(), check_replay, 150),
        FuzzTarget("envoy_text", st.tuples(gen_text.envoy_texts(), gen_text.envoy_texts()),
                   check_envoy_text, 200),
        FuzzTarget("prometheus", _pooled(gen_text.prom_body()), check_prometheus, 150),
        FuzzTarget("prom_answers", _pooled(gen_text.prom_vector()), check_prom_answers, 200),
        _admin(),
    ]
    return {t.name: t for t in found}

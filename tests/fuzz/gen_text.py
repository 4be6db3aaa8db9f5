"""Text inputs of the analysis side: replay JSON lines, Envoy's ``/stats/prometheus``
text, Prometheus query answers (decoded JSON and raw HTTP bodies).

Each is built from the shape the reader expects (so most inputs get past the
first check) with junk swapped in, then possibly damaged as text.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.gen_config import damaged

BASELINE, CANDIDATE = "b", "c"
CLUSTERS = {BASELINE: "chat/v1", CANDIDATE: "chat/v2"}

_NUMBER_TEXT = ("0", "1", "2", "10", "1e308", "1e-320", "-1", "NaN", "+Inf", "-Inf", "Inf",
                "0x10", "1_0", " 1", "", "1e400", "9" * 40)


def _json_scalar() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(), st.booleans(), st.integers(), st.integers(-(10**400), 10**400),
        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
        st.sampled_from(_NUMBER_TEXT),
    )


def json_junk(depth: int = 2) -> st.SearchStrategy[Any]:
    if depth <= 0:
        return _json_scalar()
    return st.one_of(
        _json_scalar(),
        st.lists(st.deferred(lambda: json_junk(depth - 1)), max_size=3),
        st.dictionaries(st.text(max_size=12), st.deferred(lambda: json_junk(depth - 1)),
                        max_size=3),
    )


def _or_junk(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.integers(0, 9).flatmap(lambda i: json_junk(1) if i == 0 else valid)


def _count() -> st.SearchStrategy[Any]:
    return _or_junk(st.one_of(st.integers(0, 10**6), st.integers(-5, 10**20),
                              st.integers(0, 10**400), st.floats(0, 1e20)))


def _histogram() -> st.SearchStrategy[Any]:
    bounds = st.sampled_from(["0.1", "0.5", "1", "5", "+Inf", "Inf", "inf", "-1", "nan", "x",
                              "1e309", "100", "1000"])
    return _or_junk(st.fixed_dictionaries(
        {"buckets": _or_junk(st.dictionaries(bounds, _count(), max_size=5))},
        optional={"unit": st.sampled_from(["ms", "s", "us", ""]), "sum": _count()}))


def window_line() -> st.SearchStrategy[dict[str, Any]]:
    """One replay input line as an object (``analysis/replay.py`` describes the keys)."""
    sums = st.fixed_dictionaries({"sum": _count(), "count": _count()},
                                 optional={"sumSquares": _count()})
    ratio = st.fixed_dictionaries(
        {"numerator": _count(), "denominator": _count(), "count": _count()},
        optional={"numeratorSquares": _count(), "denominatorSquares": _count(),
                  "crossProducts": _count()})
    return st.fixed_dictionaries(
        {"t": _or_junk(st.integers(0, 5).map(lambda i: 60 * i)),
         "version": _or_junk(st.sampled_from([BASELINE, CANDIDATE])),
         "requests": _count(), "errors": _count()},
        optional={
            "weight": _or_junk(st.integers(0, 100)),
            "errorClasses": _or_junk(st.dictionaries(st.sampled_from(["5xx", "timeout"]),
                                                     _count(), max_size=2)),
            "latency": _histogram(),
            "histograms": _or_junk(st.dictionaries(st.sampled_from(["latency", "ttft"]),
                                                   _histogram(), max_size=2)),
            "means": _or_junk(st.dictionaries(st.sampled_from(["tokens", "seconds"]), sums,
                                              max_size=2)),
            "ratios": _or_junk(st.dictionaries(st.just("tps"), ratio, max_size=1)),
            "extra": json_junk(),
        },
    )


@st.composite
def jsonl_texts(draw: st.DrawFn) -> str:
    lines = []
    for obj in draw(st.lists(window_line(), max_size=10)):
        line = json.dumps(obj)
        if draw(st.integers(0, 5)) == 0:
            line = draw(damaged(line))
        lines.append(line)
    if draw(st.integers(0, 15)) == 0:
        lines.append(draw(st.sampled_from(["[" * 5000, '{"t": ' + "9" * 5000 + "}",
                                           '{"t": NaN}', '{"t": Infinity}', "\x00"])))
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n"]))


# -- Envoy /stats/prometheus ----------------------------------------------------------

_STAT_NAMES = (
    "envoy_cluster_upstream_rq_completed", "envoy_cluster_upstream_rq_xx",
    "envoy_cluster_upstream_rq_timeout", "envoy_cluster_upstream_rq_rx_reset",
    "envoy_cluster_upstream_rq_tx_reset", "envoy_cluster_upstream_cx_connect_fail",
    "envoy_cluster_upstream_rq_time_bucket", "envoy_cluster_upstream_rq_time_sum",
    "envoy_cluster_upstream_rq_time_count", "envoy_server_live", "envoy_cluster_other",
)


def _label_value() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from([*CLUSTERS.values(), "chat/v1/affinity", "chat/v2/batch",
                                      "5", "4", "0.5", "1", "+Inf", "-1", 'a\\"b', "a\\nb",
                                      "\\", ""]), st.text(max_size=10))


@st.composite
def stat_line(draw: st.DrawFn) -> str:
    name = draw(st.one_of(st.sampled_from(_STAT_NAMES), st.text(max_size=12)))
    labels = draw(st.dictionaries(
        st.sampled_from(["envoy_cluster_name", "envoy_response_code_class", "le", "x", "1bad"]),
        _label_value(), max_size=3))
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    value = draw(st.one_of(st.sampled_from(_NUMBER_TEXT), st.integers(0, 10**30).map(str),
                           st.text(max_size=6)))
    stamp = draw(st.sampled_from(["", " 1700000000000", " x", " 1 2"]))
    braces: bool = bool(labels) or draw(st.booleans())
    line = f"{name}{{{body}}} {value}{stamp}" if braces else f"{name} {value}{stamp}"
    if draw(st.integers(0, 7)) == 0:
        line = draw(damaged(line))
    return line


@st.composite
def envoy_texts(draw: st.DrawFn) -> str:
    lines = draw(st.lists(st.one_of(stat_line(), stat_line(), st.sampled_from(
        ["", "# TYPE envoy_cluster_upstream_rq_time histogram", "#", "   "])), max_size=25))
    return "\n".join(lines)


# -- Prometheus answers -----------------------------------------------------------------


def _sample() -> st.SearchStrategy[Any]:
    labels = st.dictionaries(
        st.sampled_from(["envoy_cluster_name", "le", "stat", "instance", "pod", "job", "x"]),
        st.one_of(_label_value(), st.sampled_from(["sum", "count"])), max_size=4)
    value = st.tuples(st.one_of(st.floats(0, 2e9), json_junk(0)),
                      st.one_of(st.sampled_from(_NUMBER_TEXT), json_junk(0))).map(list)
    return _or_junk(st.fixed_dictionaries({"metric": _or_junk(labels),
                                           "value": _or_junk(value)}))


@st.composite
def _complete_vector(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Series for both clusters (and both versions' pods), buckets and sum/count."""
    out = []
    les = draw(st.lists(st.sampled_from(["0.1", "0.5", "1", "+Inf", "5", "NaN", "x", "-1"]),
                        min_size=1, max_size=4, unique=True))
    origin = draw(st.sampled_from(["a:1", "b:2"]))
    for cluster in CLUSTERS.values():
        for le in les:
            stats: list[str | None] = [*draw(st.sampled_from([["sum", "count"], ["sum"]]))]
            for stat in stats if draw(st.booleans()) else [None]:
                labels = {"envoy_cluster_name": cluster, "le": le, "instance": origin}
                if stat is not None:
                    labels["stat"] = stat
                value = draw(st.one_of(st.integers(0, 10**6).map(str),
                                       st.sampled_from(_NUMBER_TEXT)))
                out.append({"metric": labels, "value": [1700000000.5, value]})
    return out


def prom_vector() -> st.SearchStrategy[Any]:
    """The ``result`` of one instant query: an instant vector, mostly."""
    return st.one_of(_complete_vector(), _complete_vector(), st.lists(_sample(), max_size=5),
                     json_junk())


@st.composite
def prom_body(draw: st.DrawFn) -> tuple[int, bytes]:
    """(HTTP status, body) as a Prometheus server (or something else) might answer."""
    status = draw(st.sampled_from([200] * 8 + [400, 422, 500, 503, 204]))
    doc = draw(_or_junk(st.fixed_dictionaries({
        "status": st.sampled_from(["success", "error"]),
        "data": _or_junk(st.fixed_dictionaries({"resultType": st.sampled_from(
            ["vector", "matrix", "scalar"]), "result": prom_vector()}))})))
    body = json.dumps(doc).encode()
    roll = draw(st.integers(0, 29))
    if roll == 0:
        body = draw(st.binary(max_size=100))
    elif roll == 1:
        body = draw(st.sampled_from([b"[" * 5000, b'{"data": ' + b"9" * 5000 + b"}",
                                     b'{"status": NaN}', b"\xff\xfe", b""]))
    elif roll == 2:
        body = draw(damaged(body.decode())).encode("utf-8", "surrogatepass")
    return status, body

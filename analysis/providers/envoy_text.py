"""Envoy's ``/stats/prometheus`` text → cumulative per-version readings (pure).

What Envoy 1.40 prints for a cluster named ``chat/v1`` (the name goes into the
``envoy_cluster_name`` label verbatim, slash included), and what is read:

- requests: ``envoy_cluster_upstream_rq_completed``;
- errors and class ``5xx``: ``envoy_cluster_upstream_rq_xx`` with
  ``envoy_response_code_class="5"``; class ``4xx``: the same with ``"4"``;
- class ``timeout``: ``envoy_cluster_upstream_rq_timeout``;
- class ``reset``: ``envoy_cluster_upstream_rq_rx_reset`` + ``..._tx_reset``;
- class ``connect_fail``: ``envoy_cluster_upstream_cx_connect_fail`` (per
  connection attempt);
- histogram and mean ``latency``: ``envoy_cluster_upstream_rq_time_bucket``,
  ``_sum``, ``_count`` (only requests that got an upstream response).

Requests are ``upstream_rq_completed``, not ``upstream_rq_total``: a request
that never got an upstream connection (connect failure, no healthy host) is
answered by Envoy with a 503 that is charged to ``upstream_rq_xx`` and
``upstream_rq_completed`` but not to ``upstream_rq_total``, so the total would
let errors exceed requests. ``upstream_rq_completed`` is exactly the sum of the
``upstream_rq_xx`` classes, and, like them and ``upstream_rq_time``, counts a
request when it ends. With retries configured every try counts.

``upstream_rq_5xx`` does not appear in this output: Envoy's tag extraction
turns it into ``upstream_rq_xx`` with ``envoy_response_code_class="5"``.
``upstream_rq_xx`` and ``upstream_rq_time`` are created on first use (absent:
zero); the other counters exist from the start. ``upstream_rq_time`` is in
milliseconds; bounds and sums are converted to seconds. Histograms are what
Envoy merged at its last stats flush, counters are live.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from analysis.providers import HistogramReading, ProviderError, VersionReading

__all__ = ["ENVOY_ERROR_CLASSES", "cluster_filter", "excerpt", "parse_envoy_stats"]

CLUSTER_LABEL = "envoy_cluster_name"
CLASS_LABEL = "envoy_response_code_class"
RQ_TIME = "envoy_cluster_upstream_rq_time"
# ``<service>/<version>/affinity`` (routing policy hybrid) is summed into its version;
# ``<service>/<version>/batch`` (the offline class) is left out of experiments.
AFFINITY_SUFFIX = "/affinity"
ENVOY_ERROR_CLASSES = ("5xx", "4xx", "timeout", "reset", "connect_fail")

# metric name -> (what it adds to, response code class it needs or None)
_COUNTERS: Mapping[str, tuple[tuple[str, str | None], ...]] = {
    "envoy_cluster_upstream_rq_completed": (("requests", None),),
    "envoy_cluster_upstream_rq_xx": (("5xx", "5"), ("4xx", "4")),
    "envoy_cluster_upstream_rq_timeout": (("timeout", None),),
    "envoy_cluster_upstream_rq_rx_reset": (("reset", None),),
    "envoy_cluster_upstream_rq_tx_reset": (("reset", None),),
    "envoy_cluster_upstream_cx_connect_fail": (("connect_fail", None),),
}
_HISTOGRAM = {f"{RQ_TIME}_bucket", f"{RQ_TIME}_sum", f"{RQ_TIME}_count"}
_WANTED = frozenset(_COUNTERS) | _HISTOGRAM

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\\n]|\\.)*)"\s*([,}])')
_UNESCAPE = re.compile(r"\\(.)")


def excerpt(text: str, limit: int = 40) -> str:
    """``text`` quoted, cut to ``limit`` characters (error messages never echo a whole body)."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def cluster_filter(cluster_names: Mapping[str, str] | list[str]) -> str:
    """An RE2 regex for the admin ``filter`` parameter: only these clusters' stats.

    Envoy matches it against the stat's full name (``cluster.chat/v1.upstream_rq_total``).
    """
    names = sorted(cluster_names.values() if isinstance(cluster_names, Mapping) else cluster_names)
    return r"^cluster\.(" + "|".join(re.escape(n) for n in names) + r")(/affinity)?\."


def _labels(line: str, start: int, lineno: int) -> tuple[dict[str, str], int]:
    labels: dict[str, str] = {}
    if start >= len(line) or line[start] != "{":
        return labels, start
    pos = start + 1
    if line[pos : pos + 1] == "}":
        return labels, pos + 1
    while True:
        m = _LABEL.match(line, pos)
        if m is None:
            raise ProviderError(f"line {lineno}: bad labels at {excerpt(line[pos:])}")
        labels[m.group(1)] = _UNESCAPE.sub(
            lambda e: "\n" if e.group(1) == "n" else e.group(1), m.group(2)
        )
        pos = m.end()
        if m.group(3) == "}":
            return labels, pos


def _value(rest: str, lineno: int) -> float:
    parts = rest.split()
    if not 1 <= len(parts) <= 2:
        raise ProviderError(f"line {lineno}: expected a value, got {excerpt(rest.strip())}")
    try:
        value = float(parts[0])
    except ValueError:
        raise ProviderError(f"line {lineno}: bad value {excerpt(parts[0])}") from None
    if not math.isfinite(value) or value < 0:
        raise ProviderError(f"line {lineno}: bad value {excerpt(parts[0])}")
    return value


def _bound(text: str, lineno: int) -> float:
    try:
        bound = float(text)
    except ValueError:
        bound = math.nan
    if math.isnan(bound) or bound < 0:
        raise ProviderError(f"line {lineno}: bad bucket bound le={excerpt(text)}")
    return bound


@dataclass
class _Cluster:
    counters: dict[str, float] = field(default_factory=dict)
    buckets: dict[float, float] = field(default_factory=dict)  # le (ms) -> cumulative
    total_ms: float = 0.0
    count: float | None = None

    def add(self, key: str, value: float) -> None:
        self.counters[key] = self.counters.get(key, 0.0) + value

    def reading(self, cluster: str) -> VersionReading:
        classes = {c: self.counters.get(c, 0.0) for c in ENVOY_ERROR_CLASSES}
        histograms: dict[str, HistogramReading] = {}
        means: dict[str, tuple[float, float]] = {}
        if self.buckets:
            if math.inf not in self.buckets:
                raise ProviderError(f"{cluster}: {RQ_TIME} has no +Inf bucket")
            bounds = sorted(self.buckets)
            cumulative = tuple(self.buckets[b] for b in bounds)
            if any(a > b for a, b in itertools.pairwise(cumulative)):
                raise ProviderError(f"{cluster}: {RQ_TIME} buckets are not cumulative")
            histograms["latency"] = HistogramReading(
                tuple(b / 1000 for b in bounds), cumulative, self.total_ms / 1000
            )
            count = self.count if self.count is not None else cumulative[-1]
            means["latency"] = (self.total_ms / 1000, count)
        return VersionReading(
            requests=self.counters.get("requests", 0.0),
            errors=classes["5xx"],
            error_classes=classes,
            histograms=histograms,
            means=means,
        )


def parse_envoy_stats(text: str, clusters: Mapping[str, str]) -> dict[str, VersionReading]:
    """Readings for the versions whose cluster (``clusters``: version -> name) is in ``text``.

    Lines of other stats are skipped after their name is checked; a malformed
    line of a wanted stat (or a line that does not start with a metric name)
    raises :class:`ProviderError` quoting at most ~40 characters of it.
    """
    by_name = {name: version for version, name in clusters.items()}
    found: dict[str, _Cluster] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _NAME.match(line)
        if m is None:
            raise ProviderError(f"line {lineno}: expected a metric name, got {excerpt(line)}")
        name = m.group(0)
        if name not in _WANTED:
            continue
        labels, end = _labels(line, m.end(), lineno)
        cluster = labels.get(CLUSTER_LABEL)
        if cluster is not None and cluster.endswith(AFFINITY_SUFFIX):
            # A hybrid version's hash cluster carries part of its online traffic.
            cluster = cluster.removesuffix(AFFINITY_SUFFIX)
        if cluster not in by_name:
            continue
        state = found.setdefault(cluster, _Cluster())
        rest = line[end:]
        if name in _COUNTERS:
            value = _value(rest, lineno)
            for key, code_class in _COUNTERS[name]:
                if code_class is None or labels.get(CLASS_LABEL) == code_class:
                    state.add(key, value)
        elif name.endswith("_bucket"):
            le = _bound(labels.get("le", ""), lineno)
            state.buckets[le] = state.buckets.get(le, 0.0) + _value(rest, lineno)
        elif name.endswith("_sum"):
            state.total_ms += _value(rest, lineno)
        else:
            state.count = (state.count or 0.0) + _value(rest, lineno)
    return {by_name[c]: s.reading(c) for c, s in found.items()}

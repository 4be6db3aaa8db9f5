"""Two readings in, one window per version out (pure: no I/O, no clock).

``windows_between(prev, cur, target, weights)`` subtracts cumulative counters
origin by origin and sums the differences per version:

- only origins that carry the version in *both* readings count. An origin
  (or a version in it) that is new in ``cur`` only sets its baseline this
  window; one that disappeared contributes nothing;
- inside an origin present in both, a series that is new in ``cur`` counts
  from zero (Envoy creates ``upstream_rq_xx`` and ``upstream_rq_time`` on
  first use), while one that vanished excludes the look;
- any decrease of any counter, histogram bucket or sum of any origin is a
  counter reset (a restarted process): the look is excluded and the reason
  returned, never a guessed value summed;
- a bucket layout that changed between readings or differs between origins,
  a non-monotone histogram difference or a non-finite value excludes the
  look the same way (a reason, not an exception);
- ``Reading.increments`` (custom queries that already give per-window counts)
  are added as they are; a negative one excludes the look.

Counts are rounded to the nearest integer: cumulative counters are integers
already, custom increments from PromQL ``increase()`` are not.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from analysis.providers import HistogramReading, Reading, Target, VersionReading
from analysis.samples import Histogram, SamplesError, SumCount, Window

__all__ = ["windows_between"]


class _Excluded(Exception):
    """Internal: the look cannot be used; the message is the reason."""


@dataclass
class _Acc:
    """Per-window differences of one version, summed over origins."""

    requests: float = 0.0
    errors: float = 0.0
    error_classes: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, tuple[tuple[float, ...], list[float], float]] = field(
        default_factory=dict
    )
    means: dict[str, tuple[float, float]] = field(default_factory=dict)


def _finite(where: str, values: Iterable[float]) -> None:
    for v in values:
        if not math.isfinite(v):
            raise _Excluded(f"{where}: value is not finite ({v})")


def _delta(where: str, name: str, before: float, after: float) -> float:
    _finite(where, (before, after))
    if after < before:
        raise _Excluded(f"counter reset in {where}: {name} went from {before:g} to {after:g}")
    return after - before


def _check_layout(where: str, name: str, h: HistogramReading) -> None:
    _finite(where, (*h.cumulative, h.total))
    if len(h.bounds) != len(h.cumulative) or not h.bounds:
        raise _Excluded(
            f"{where}: histogram {name} has {len(h.bounds)} bounds and {len(h.cumulative)} counts"
        )
    if h.bounds[-1] != math.inf or any(math.isnan(b) for b in h.bounds):
        raise _Excluded(f"{where}: histogram {name} does not end with a +Inf bucket")
    if any(not lo < hi for lo, hi in itertools.pairwise(h.bounds)):
        raise _Excluded(f"{where}: histogram {name} bounds are not increasing")


def _hist_delta(
    where: str, name: str, before: HistogramReading | None, after: HistogramReading
) -> tuple[tuple[float, ...], list[float], float]:
    _check_layout(where, name, after)
    if before is None:  # new series in a continuing origin: it started from zero
        return after.bounds, list(after.cumulative), after.total
    _check_layout(where, name, before)
    if before.bounds != after.bounds:
        raise _Excluded(
            f"bucket layout of {name} changed in {where} "
            f"({len(before.bounds)} -> {len(after.bounds)} buckets)"
        )
    cumulative = [
        _delta(where, f"{name} bucket le={b:g}", p, c)
        for b, p, c in zip(after.bounds, before.cumulative, after.cumulative, strict=True)
    ]
    return after.bounds, cumulative, _delta(where, f"{name} sum", before.total, after.total)


def _keyed_deltas(
    where: str, what: str, before: Mapping[str, float], after: Mapping[str, float]
) -> dict[str, float]:
    gone = sorted(set(before) - set(after))
    if gone:
        raise _Excluded(f"{where}: {what} {gone[0]} vanished")
    return {k: _delta(where, f"{what} {k}", before.get(k, 0.0), v) for k, v in after.items()}


def _add(acc: _Acc, where: str, p: VersionReading, c: VersionReading) -> None:
    acc.requests += _delta(where, "requests", p.requests, c.requests)
    acc.errors += _delta(where, "errors", p.errors, c.errors)
    for k, d in _keyed_deltas(where, "error class", p.error_classes, c.error_classes).items():
        acc.error_classes[k] = acc.error_classes.get(k, 0.0) + d
    gone = sorted(set(p.histograms) - set(c.histograms))
    if gone:
        raise _Excluded(f"{where}: histogram {gone[0]} vanished")
    for name, h in c.histograms.items():
        _merge_hist(acc, where, name, _hist_delta(where, name, p.histograms.get(name), h))
    gone = sorted(set(p.means) - set(c.means))
    if gone:
        raise _Excluded(f"{where}: mean {gone[0]} vanished")
    for name, (total, count) in c.means.items():
        p_total, p_count = p.means.get(name, (0.0, 0.0))
        d_total = _delta(where, f"mean {name} sum", p_total, total)
        d_count = _delta(where, f"mean {name} count", p_count, count)
        s, n = acc.means.get(name, (0.0, 0.0))
        acc.means[name] = (s + d_total, n + d_count)


def _merge_hist(
    acc: _Acc, where: str, name: str, delta: tuple[tuple[float, ...], list[float], float]
) -> None:
    bounds, cumulative, total = delta
    have = acc.histograms.get(name)
    if have is None:
        acc.histograms[name] = (bounds, cumulative, total)
        return
    if have[0] != bounds:
        raise _Excluded(
            f"bucket layout of {name} differs between origins "
            f"({len(have[0])} vs {len(bounds)} buckets, at {where})"
        )
    acc.histograms[name] = (
        bounds,
        [a + b for a, b in zip(have[1], cumulative, strict=True)],
        have[2] + total,
    )


def _add_increments(acc: _Acc, where: str, inc: VersionReading) -> None:
    """Per-window values: no baseline, but never negative."""
    values = [
        inc.requests,
        inc.errors,
        *inc.error_classes.values(),
        *(v for s, n in inc.means.values() for v in (s, n)),
        *(v for h in inc.histograms.values() for v in (*h.cumulative, h.total)),
    ]
    _finite(where, values)
    if any(v < 0 for v in values):
        raise _Excluded(f"{where}: a per-window increment is negative")
    zero = VersionReading(
        error_classes={k: 0.0 for k in inc.error_classes},
        means={k: (0.0, 0.0) for k in inc.means},
    )
    _add(acc, where, zero, inc)


def _histogram(
    name: str, bounds: tuple[float, ...], cumulative: list[float], total: float
) -> Histogram:
    counts: list[int] = []
    previous = 0
    for b, c in zip(bounds, cumulative, strict=True):
        running = round(c)
        if running < previous:
            raise _Excluded(
                f"histogram {name}: bucket le={b:g} holds fewer than the one "
                "below it (buckets not read together)"
            )
        counts.append(running - previous)
        previous = running
    try:
        return Histogram(bounds, tuple(counts), total)
    except SamplesError as exc:
        raise _Excluded(f"histogram {name}: {exc}") from None


def _window(t: float, version: str, acc: _Acc, weight: float | None) -> Window:
    return Window(
        t=t,
        version=version,
        requests=round(acc.requests),
        errors=round(acc.errors),
        error_classes={k: round(v) for k, v in acc.error_classes.items()},
        histograms={k: _histogram(k, *v) for k, v in acc.histograms.items()},
        means={k: SumCount(s, round(n)) for k, (s, n) in acc.means.items()},
        weight=weight,
    )


def windows_between(
    prev: Reading,
    cur: Reading,
    target: Target,
    weights: Mapping[str, float] | None = None,
) -> tuple[dict[str, Window], str | None]:
    """Per-version windows between two readings, or ``({}, reason)`` when the look is excluded.

    A version that no origin carries in both readings (and that has no
    increments) gets no window: the judge treats it as missing (NODATA).
    Readings whose times are not increasing are excluded too.
    ``Window.t`` is ``cur.t``; ``Window.weight`` is ``weights[version]`` when given.
    """
    if not cur.t > prev.t:  # a wall clock stepped back: no window can be trusted
        return {}, f"readings out of order: t={prev.t:g} then t={cur.t:g}"
    wanted = set(target.versions)
    accs: dict[str, _Acc] = {}
    try:
        for origin in sorted(set(prev.origins) & set(cur.origins)):
            before, after = prev.origins[origin], cur.origins[origin]
            for version in target.versions:
                p, c = before.get(version), after.get(version)
                if p is not None and c is not None:
                    _add(accs.setdefault(version, _Acc()), f"{origin} {version}", p, c)
        for version, inc in sorted(cur.increments.items()):
            if version in wanted:
                _add_increments(accs.setdefault(version, _Acc()), f"increments {version}", inc)
        windows = {
            v: _window(cur.t, v, accs[v], None if weights is None else weights.get(v))
            for v in target.versions
            if v in accs
        }
    except _Excluded as exc:
        return {}, str(exc)
    return windows, None

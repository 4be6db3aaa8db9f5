"""``sluice replay``: the offline (retrospective) mode of the judge.

Reads sample windows (one JSON object per line, per-window increments; bucket
counts cumulative over ``le`` as in Prometheus) and writes one JSON line per
look per input file with the decision and every metric's verdict. Input line::

    {"t": 60, "version": "v2", "requests": 31, "errors": 0, "weight": 5,
     "latency": {"unit": "ms", "buckets": {"100": 20, "+Inf": 31}, "sum": 2712.5}}

Optional keys: ``errorClasses`` ({class: n}), ``histograms`` ({name: like
``latency``}), ``means`` ({name: {"sum": x, "count": n, "sumSquares": y}}),
``ratios`` ({name: {"numerator": y, "denominator": x, "count": n}}, the
per-window sums behind a ratio metric such as output tokens over seconds,
optionally with the per-request ``numeratorSquares``, ``denominatorSquares``
and ``crossProducts``, all three or none; ``analysis.means`` says why).
Bad lines are reported as ``file:line: message`` and the exit code is 2. A
negative increment (a counter reset upstream) is not an error: that look's
windows are excluded and the look holds. The experiment is taken to start one
window before the first sample (for soak times).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from analysis.classic import kayenta_classify
from analysis.judge import Judgment, Look, judge, start
from analysis.samples import (
    BucketLayoutMismatch,
    Histogram,
    Integrity,
    LatencyUnit,
    RatioSums,
    SamplesError,
    SumCount,
    Window,
    check_window,
    histogram_from_cumulative,
)
from analysis.spec import ExperimentSpec, MetricSpec
from analysis.verdicts import point_value

_LINE_KEYS = {"t", "version", "requests", "errors", "errorClasses", "latency", "histograms",
              "means", "weight", "ratios"}
_RATIO_MOMENTS = ("numeratorSquares", "denominatorSquares", "crossProducts")


class LineError(ValueError):
    pass


@dataclass(frozen=True)
class Parsed:
    window: Window
    reset: bool
    line: int


def _isfinite(v: float) -> bool:
    """``math.isfinite``, False for an integer too large for a float (JSON allows them)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _count(v: Any, path: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float) or not _isfinite(v):
        raise LineError(f"{path}: must be a finite number")
    if v != int(v):
        raise LineError(f"{path}: must be a whole number")
    return int(v)


def _histogram(raw: Any, path: str) -> tuple[Histogram | None, list[float]]:
    """(histogram or None when it holds negative increments, raw numbers)."""
    if not isinstance(raw, dict):
        raise LineError(f"{path}: must be an object")
    unknown = set(raw) - {"unit", "buckets", "sum"}
    if unknown:
        raise LineError(f"{path}.{sorted(unknown)[0]}: unknown field")
    try:
        unit = LatencyUnit(raw.get("unit", "s"))
    except ValueError:
        raise LineError(f"{path}.unit: must be 'ms' or 's'") from None
    buckets = raw.get("buckets")
    if not isinstance(buckets, dict) or not buckets:
        raise LineError(f"{path}.buckets: must be a non-empty object")
    parsed: dict[float, int] = {}
    for key, v in buckets.items():
        try:
            bound = math.inf if key in ("+Inf", "Inf", "inf") else float(key)
        except ValueError:
            raise LineError(f"{path}.buckets: bad bound {key!r}") from None
        if math.isnan(bound) or bound < 0:
            raise LineError(f"{path}.buckets: bad bound {key!r}")
        parsed[bound] = _count(v, f"{path}.buckets[{key!r}]")
    total = raw.get("sum")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int | float)
                              or not _isfinite(total)):
        raise LineError(f"{path}.sum: must be a finite number")
    numbers = [float(c) for c in parsed.values()] + ([float(total)] if total is not None else [])
    if any(n < 0 for n in numbers):
        return None, numbers
    try:
        return histogram_from_cumulative(parsed, unit, total), numbers
    except SamplesError as exc:
        raise LineError(f"{path}.buckets: {exc}") from None


def _finite(v: Any, path: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not _isfinite(v):
        raise LineError(f"{path}: must be a finite number")
    return float(v)


def _ratios(raw: Any) -> dict[str, RatioSums]:
    if not isinstance(raw, dict):
        raise LineError("ratios: must be an object")
    out: dict[str, RatioSums] = {}
    for name, r in raw.items():
        path = f"ratios.{name}"
        if not isinstance(r, dict) or not {"numerator", "denominator", "count"} <= set(r):
            raise LineError(f"{path}: needs 'numerator', 'denominator' and 'count'")
        unknown = set(r) - {"numerator", "denominator", "count", *_RATIO_MOMENTS}
        if unknown:
            raise LineError(f"{path}.{sorted(unknown)[0]}: unknown field")
        given = [k for k in _RATIO_MOMENTS if k in r]
        if given and len(given) != len(_RATIO_MOMENTS):
            raise LineError(f"{path}: give all of {', '.join(_RATIO_MOMENTS)} or none")
        moments: list[float | None] = [_finite(r[k], f"{path}.{k}") for k in given]
        out[name] = RatioSums(_finite(r["numerator"], f"{path}.numerator"),
                              _finite(r["denominator"], f"{path}.denominator"),
                              _count(r["count"], f"{path}.count"),
                              *(moments or [None, None, None]))
    return out


def parse_line(obj: Any, line: int) -> Parsed:
    if not isinstance(obj, dict):
        raise LineError("expected a JSON object")
    unknown = set(obj) - _LINE_KEYS
    if unknown:
        raise LineError(f"{sorted(unknown)[0]}: unknown field")
    for key in ("t", "version", "requests", "errors"):
        if key not in obj:
            raise LineError(f"{key}: is required")
    t = obj["t"]
    if isinstance(t, bool) or not isinstance(t, int | float) or not _isfinite(t):
        raise LineError("t: must be a finite number of seconds")
    version = obj["version"]
    if not isinstance(version, str) or not version:
        raise LineError("version: must be a non-empty string")
    requests, errors = _count(obj["requests"], "requests"), _count(obj["errors"], "errors")
    classes_raw = obj.get("errorClasses", {})
    if not isinstance(classes_raw, dict):
        raise LineError("errorClasses: must be an object")
    classes = {k: _count(v, f"errorClasses.{k}") for k, v in classes_raw.items()}
    hists: dict[str, Histogram] = {}
    numbers: list[float] = []
    broken = False
    raw_h = obj.get("histograms", {}) or {}
    if not isinstance(raw_h, dict):
        raise LineError("histograms: must be an object")
    raw_h = dict(raw_h)
    if "latency" in obj:
        raw_h["latency"] = obj["latency"]
    for name, raw in raw_h.items():
        path = "latency" if name == "latency" and "latency" in obj else f"histograms.{name}"
        h, nums = _histogram(raw, path)
        numbers += nums
        if h is None:
            broken = True
        else:
            hists[name] = h
    means: dict[str, SumCount] = {}
    raw_means = obj.get("means", {})
    if not isinstance(raw_means, dict):
        raise LineError("means: must be an object")
    for name, raw in raw_means.items():
        if not isinstance(raw, dict) or "sum" not in raw or "count" not in raw:
            raise LineError(f"means.{name}: needs 'sum' and 'count'")
        total = raw["sum"]
        if isinstance(total, bool) or not isinstance(total, int | float) or not _isfinite(
            total
        ):
            raise LineError(f"means.{name}.sum: must be a finite number")
        sq = raw.get("sumSquares")
        if sq is not None and (not isinstance(sq, int | float) or not _isfinite(sq)):
            raise LineError(f"means.{name}.sumSquares: must be a finite number")
        count = _count(raw["count"], f"means.{name}.count")
        numbers.append(float(count))
        means[name] = SumCount(float(total), count, None if sq is None else float(sq))
    ratios = _ratios(obj.get("ratios", {}))
    for r in ratios.values():
        numbers += [float(r.count), r.numerator, r.denominator]
    weight = obj.get("weight")
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int | float)
                               or not 0 <= weight <= 100):
        raise LineError("weight: must be a percent between 0 and 100")
    integrity = check_window(requests=requests, errors=errors, error_classes=classes,
                             bucket_counts=numbers, sums=[])
    reset = broken or integrity is Integrity.COUNTER_RESET
    if not reset and errors > requests:
        raise LineError(f"errors: {errors} exceeds requests {requests}")
    window = Window(float(t), version, max(requests, 0), max(errors, 0), classes, hists, means,
                    None if weight is None else float(weight), ratios)
    return Parsed(window, reset, line)


def read_samples(name: str, stream: TextIO, spec: ExperimentSpec) -> tuple[list[Parsed],
                                                                            list[str]]:
    out: list[Parsed] = []
    errors: list[str] = []
    seen: dict[tuple[float, str], int] = {}
    layouts: dict[str, tuple[tuple[float, ...], int]] = {}
    for lineno, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text, parse_constant=_reject_constant)
            p = parse_line(obj, lineno)
            w = p.window
            if w.version not in (spec.baseline, spec.candidate):
                raise LineError(f"version: {w.version!r} is neither baseline "
                                f"{spec.baseline!r} nor candidate {spec.candidate!r}")
            key = (w.t, w.version)
            if key in seen:
                raise LineError(f"duplicate window for {w.version!r} at t={w.t:g} "
                                f"(first at line {seen[key]})")
            seen[key] = lineno
            for hname, h in w.histograms.items():
                first = layouts.setdefault(hname, (h.bounds, lineno))
                if first[0] != h.bounds:
                    raise LineError(f"{hname}: bucket bounds differ from those at line "
                                    f"{first[1]} (comparing them would be a guess)")
            out.append(p)
        except json.JSONDecodeError as exc:
            errors.append(f"{name}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})")
        except (LineError, SamplesError) as exc:
            errors.append(f"{name}:{lineno}: {exc}")
        except RecursionError:
            errors.append(f"{name}:{lineno}: invalid JSON: nested too deeply")
        except ValueError as exc:  # json: an integer of more than 4,300 digits
            errors.append(f"{name}:{lineno}: invalid JSON: {str(exc)[:80]}")
    return out, errors


def _reject_constant(name: str) -> float:
    raise LineError(f"{name} is not a number")


def looks_from(parsed: Sequence[Parsed], spec: ExperimentSpec) -> list[tuple[Look, int]]:
    by_t: dict[float, dict[str, Parsed]] = {}
    for p in parsed:
        by_t.setdefault(p.window.t, {})[p.window.version] = p
    looks: list[tuple[Look, int]] = []
    for t in sorted(by_t):
        group = by_t[t]
        c, b = group.get(spec.candidate), group.get(spec.baseline)
        excluded = None
        if any(p.reset for p in group.values()):
            excluded = "negative increment (counter reset); not summed"
        line = min(p.line for p in group.values())
        looks.append((Look(t, c.window if c else None, b.window if b else None, excluded), line))
    return looks


def _bound_key(b: float) -> str:
    return "+Inf" if b == math.inf else repr(b)


def window_line(w: Window) -> dict[str, Any]:
    """One window as a replay input line (``parse_line`` reads it back to an equal window)."""
    line: dict[str, Any] = {"t": w.t, "version": w.version, "requests": w.requests,
                            "errors": w.errors}
    if w.weight is not None:
        line["weight"] = w.weight
    if w.error_classes:
        line["errorClasses"] = dict(w.error_classes)
    if w.histograms:
        line["histograms"] = {
            name: {"unit": "s", "buckets": {_bound_key(b): c for b, c in
                                            zip(h.bounds, h.cumulative(), strict=True)},
                   **({"sum": h.total_sum} if h.total_sum is not None else {})}
            for name, h in w.histograms.items()
        }
    if w.means:
        line["means"] = {
            name: {"sum": sc.total, "count": sc.count,
                   **({"sumSquares": sc.sum_squares} if sc.sum_squares is not None else {})}
            for name, sc in w.means.items()
        }
    if w.ratios:
        line["ratios"] = {name: _ratio_json(r) for name, r in w.ratios.items()}
    return line


def _ratio_json(r: RatioSums) -> dict[str, Any]:
    out: dict[str, Any] = {"numerator": r.numerator, "denominator": r.denominator,
                           "count": r.count}
    if r.has_moments:
        out.update(zip(_RATIO_MOMENTS, (r.numerator_squares, r.denominator_squares,
                                        r.cross_products), strict=True))
    return out


def _num(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(x)


def judgment_json(name: str, j: Judgment, extra: dict[str, str] | None = None) -> dict[str, Any]:
    metrics = []
    for v in j.metrics:
        m: dict[str, Any] = {
            "name": v.name, "kind": v.kind.value, "gating": v.gating, "verdict": v.verdict.value,
            "window": None if v.window is None else list(v.window),
            "n": {k: _num(x) for k, x in v.n.items()},
            "estimate": _num(v.estimate), "interval": [_num(v.interval[0]), _num(v.interval[1])],
            "evalue": _num(v.evalue), "pvalue": _num(v.pvalue), "alpha": v.alpha,
            "harmMargin": v.harm_margin, "nonInferiorityMargin": v.non_inferiority_margin,
            "reason": v.reason, "details": {k: _num(x) for k, x in v.details.items()},
        }
        if extra and v.name in extra:
            m["kayenta"] = extra[v.name]
        metrics.append(m)
    s = j.srm
    return {
        "file": name, "t": j.t, "decision": j.decision.value, "reason": j.reason,
        "step": j.step, "weight": j.weight,
        "srm": {"mismatch": s.mismatch, "chiSquarePvalue": _num(s.chi_square_pvalue),
                "sequentialPvalue": _num(s.sequential_pvalue),
                "observedShare": _num(s.observed_share)},
        "metrics": metrics,
    }


def _kayenta_points(spec: ExperimentSpec, looks: Sequence[tuple[Look, int]], upto: int,
                    ) -> dict[str, str]:
    """Kayenta-style classification per metric on per-window points (comparison only)."""
    out: dict[str, str] = {}
    for m in spec.metrics:
        cand: list[float] = []
        base: list[float] = []
        for look, _ in looks[: upto + 1]:
            if look.excluded or look.candidate is None or look.baseline is None:
                continue
            pair = [_point(m, w) for w in (look.candidate, look.baseline)]
            if pair[0] is not None and pair[1] is not None:
                cand.append(pair[0])
                base.append(pair[1])
        out[m.name] = kayenta_classify(cand, base).value
    return out


def _point(m: MetricSpec, w: Window) -> float | None:
    found = point_value(m, w)
    return None if found is None else found[0]


def replay_file(name: str, parsed: Sequence[Parsed], spec: ExperimentSpec, out: TextIO,
                compare: bool) -> str | None:
    looks = looks_from(parsed, spec)
    if not looks:
        return None
    ts = [lk.t for lk, _ in looks]
    t0 = ts[0] - (ts[1] - ts[0] if len(ts) > 1 else 0.0)
    state = start(spec, t0)
    for i, (look, line) in enumerate(looks):
        try:
            state, j = judge(state, look)
        except BucketLayoutMismatch as exc:
            return f"{name}:{line}: {exc}"
        extra = _kayenta_points(spec, looks, i) if compare else None
        out.write(json.dumps(judgment_json(name, j, extra), allow_nan=False) + "\n")
    return None

"""``windows_between``: cumulative readings from several origins -> per-version windows."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.providers import HistogramReading, Reading, Target, VersionReading
from analysis.providers.windows import windows_between
from analysis.samples import Histogram, SumCount

INF = math.inf
BOUNDS = (0.01, 0.1, INF)
TARGET = Target(
    service="chat",
    versions=("v1", "v2"),
    clusters={"v1": "chat/v1", "v2": "chat/v2"},
    metrics=(),
    interval_s=60.0,
)


def vr(
    requests: float = 0,
    errors: float = 0,
    classes: Mapping[str, float] | None = None,
    hist: tuple[float, ...] | None = None,
    total: float = 0.0,
    bounds: tuple[float, ...] = BOUNDS,
    means: Mapping[str, tuple[float, float]] | None = None,
) -> VersionReading:
    histograms = {} if hist is None else {"latency": HistogramReading(bounds, hist, total)}
    return VersionReading(requests, errors, dict(classes or {}), histograms, dict(means or {}))


def reading(
    t: float,
    increments: Mapping[str, VersionReading] | None = None,
    **origins: Mapping[str, VersionReading],
) -> Reading:
    return Reading(t, origins, dict(increments or {}))


def test_one_origin_differences() -> None:
    prev = reading(
        10,
        a={
            "v1": vr(100, 2, {"5xx": 2, "timeout": 1}, (5, 8, 10), 1.0),
            "v2": vr(10, 0, {"5xx": 0, "timeout": 0}, (1, 1, 1), 0.1),
        },
    )
    cur = reading(
        70,
        a={
            "v1": vr(160, 5, {"5xx": 5, "timeout": 1}, (9, 15, 20), 2.5),
            "v2": vr(25, 1, {"5xx": 1, "timeout": 0}, (4, 5, 6), 0.6),
        },
    )
    windows, reason = windows_between(prev, cur, TARGET, {"v1": 90.0, "v2": 10.0})
    assert reason is None
    v1, v2 = windows["v1"], windows["v2"]
    assert (v1.t, v1.version, v1.requests, v1.errors, v1.weight) == (70, "v1", 60, 3, 90.0)
    assert v1.error_classes == {"5xx": 3, "timeout": 0}
    assert v1.histograms["latency"] == Histogram(BOUNDS, (4, 3, 3), pytest.approx(1.5))
    assert (v2.requests, v2.errors, v2.weight) == (15, 1, 10.0)
    assert v2.histograms["latency"].counts == (3, 1, 1)
    assert all(isinstance(v, int) for v in (v1.requests, v1.errors, *v1.error_classes.values()))


def test_sums_over_origins_and_no_weights() -> None:
    prev = reading(1, a={"v1": vr(10, 1)}, b={"v1": vr(1000, 50)})
    cur = reading(2, a={"v1": vr(15, 1)}, b={"v1": vr(1010, 52)})
    windows, reason = windows_between(prev, cur, TARGET)
    assert reason is None
    assert (windows["v1"].requests, windows["v1"].errors, windows["v1"].weight) == (15, 2, None)
    assert "v2" not in windows  # no origin carries v2: no window (the judge's NODATA)


def test_new_origin_sets_its_baseline_and_a_gone_one_contributes_nothing() -> None:
    prev = reading(1, a={"v1": vr(10)}, gone={"v1": vr(500)})
    cur = reading(2, a={"v1": vr(12)}, new={"v1": vr(7000)})
    windows, reason = windows_between(prev, cur, TARGET)
    assert reason is None
    assert windows["v1"].requests == 2


def test_version_new_in_an_origin_sets_its_baseline() -> None:
    prev = reading(1, a={"v1": vr(10)})
    cur = reading(2, a={"v1": vr(12), "v2": vr(40)})
    windows, _ = windows_between(prev, cur, TARGET)
    assert set(windows) == {"v1"}


@pytest.mark.parametrize(
    ("before", "after", "what"),
    [
        (vr(10), vr(9), "requests went from 10 to 9"),
        (vr(10, 3), vr(11, 2), "errors"),
        (vr(10, classes={"reset": 4}), vr(11, classes={"reset": 1}), "error class reset"),
        (vr(10, hist=(1, 2, 3)), vr(11, hist=(0, 2, 4)), "latency bucket le=0.01"),
        (vr(10, hist=(1, 2, 3), total=5), vr(11, hist=(1, 2, 3), total=4), "latency sum"),
        (vr(10, means={"ttft": (3.0, 4)}), vr(11, means={"ttft": (4.0, 3)}), "mean ttft count"),
    ],
)
def test_any_decrease_is_a_counter_reset(
    before: VersionReading, after: VersionReading, what: str
) -> None:
    prev = reading(1, a={"v1": vr(1)}, b={"v1": before})
    cur = reading(2, a={"v1": vr(2)}, b={"v1": after})
    windows, reason = windows_between(prev, cur, TARGET)
    assert windows == {}
    assert reason is not None
    assert reason.startswith("counter reset in b v1")
    assert what in reason


def test_new_series_in_a_continuing_origin_counts_from_zero() -> None:
    """Envoy creates upstream_rq_xx and upstream_rq_time on first use."""
    prev = reading(1, a={"v1": vr(10)})
    cur = reading(2, a={"v1": vr(14, 1, {"5xx": 1}, (1, 3, 4), 0.2, means={"latency": (0.2, 4)})})
    windows, reason = windows_between(prev, cur, TARGET)
    assert reason is None
    w = windows["v1"]
    assert (w.requests, w.errors, w.error_classes) == (4, 1, {"5xx": 1})
    assert w.histograms["latency"].counts == (1, 2, 1)
    assert w.means["latency"] == SumCount(0.2, 4)


@pytest.mark.parametrize(
    ("before", "after", "what"),
    [
        (vr(1, classes={"5xx": 0}), vr(2), "error class 5xx vanished"),
        (vr(1, hist=(0, 0, 0)), vr(2), "histogram latency vanished"),
        (vr(1, means={"e2e": (0.0, 0)}), vr(2), "mean e2e vanished"),
    ],
)
def test_a_vanished_series_excludes_the_look(
    before: VersionReading, after: VersionReading, what: str
) -> None:
    windows, reason = windows_between(
        reading(1, a={"v1": before}), reading(2, a={"v1": after}), TARGET
    )
    assert windows == {}
    assert reason is not None and what in reason


def test_layout_change_between_readings_excludes() -> None:
    prev = reading(1, a={"v1": vr(1, hist=(0, 0, 0))})
    cur = reading(2, a={"v1": vr(2, hist=(0, 0, 0, 1), bounds=(0.01, 0.05, 0.1, INF))})
    windows, reason = windows_between(prev, cur, TARGET)
    assert windows == {}
    assert reason == "bucket layout of latency changed in a v1 (3 -> 4 buckets)"


def test_layout_differing_between_origins_excludes() -> None:
    other = (0.02, 0.1, INF)
    prev = reading(
        1, a={"v1": vr(1, hist=(0, 0, 0))}, b={"v1": vr(1, hist=(0, 0, 0), bounds=other)}
    )
    cur = reading(2, a={"v1": vr(2, hist=(1, 1, 1))}, b={"v1": vr(2, hist=(1, 1, 1), bounds=other)})
    windows, reason = windows_between(prev, cur, TARGET)
    assert windows == {}
    assert reason is not None and "differs between origins" in reason


@pytest.mark.parametrize(
    ("bounds", "cumulative", "what"),
    [
        ((0.1, 0.2), (1, 2), "+Inf"),
        ((0.2, 0.1, INF), (1, 2, 3), "not increasing"),
        ((0.1, INF), (1, 2, 3), "2 bounds and 3 counts"),
        ((0.1, INF), (1, math.nan), "not finite"),
    ],
)
def test_malformed_histograms_exclude_not_raise(
    bounds: tuple[float, ...], cumulative: tuple[float, ...], what: str
) -> None:
    cur = VersionReading(1, histograms={"latency": HistogramReading(bounds, cumulative)})
    windows, reason = windows_between(
        reading(1, a={"v1": vr(0)}), reading(2, a={"v1": cur}), TARGET
    )
    assert windows == {}
    assert reason is not None and what in reason


def test_non_monotone_histogram_difference_excludes() -> None:
    prev = reading(1, a={"v1": vr(1, hist=(0, 5, 5))})
    cur = reading(2, a={"v1": vr(2, hist=(3, 6, 6))})  # +3 at 0.01 but +1 at 0.1
    windows, reason = windows_between(prev, cur, TARGET)
    assert windows == {}
    assert reason is not None and "fewer than the one below" in reason


def test_non_finite_counter_excludes() -> None:
    windows, reason = windows_between(
        reading(1, a={"v1": vr(1)}), reading(2, a={"v1": vr(math.inf)}), TARGET
    )
    assert windows == {} and reason is not None and "not finite" in reason


def test_increments_are_added_as_they_are_and_rounded() -> None:
    prev = reading(1, a={"v1": vr(10, 1), "v2": vr(10)})
    inc = VersionReading(
        errors=2.4,
        error_classes={"pod": 1.6},
        histograms={"ttft": HistogramReading(BOUNDS, (1.2, 3.9, 5.1), 0.7)},
        means={"tokens": (120.0, 3.0)},
    )
    cur = reading(2, {"v1": inc, "v3": inc}, a={"v1": vr(20, 1), "v2": vr(11)})
    windows, reason = windows_between(prev, cur, TARGET)
    assert reason is None
    w = windows["v1"]
    assert (w.requests, w.errors, w.error_classes) == (10, 2, {"pod": 2})
    assert w.histograms["ttft"].counts == (1, 3, 1)
    assert w.means["tokens"] == SumCount(120.0, 3)
    assert "v3" not in windows  # not a target version


def test_increments_alone_make_a_window() -> None:
    cur = reading(2, {"v2": VersionReading(errors=3)})
    windows, reason = windows_between(reading(1), cur, TARGET)
    assert reason is None
    assert (windows["v2"].requests, windows["v2"].errors) == (0, 3)


def test_negative_increment_excludes() -> None:
    cur = reading(2, {"v1": VersionReading(errors=-1)})
    windows, reason = windows_between(reading(1), cur, TARGET)
    assert windows == {} and reason == "increments v1: a per-window increment is negative"


def test_readings_out_of_order_are_excluded() -> None:
    """The loop stamps readings with the wall clock, which can step back."""
    assert windows_between(reading(5), reading(5), TARGET) == (
        {},
        "readings out of order: t=5 then t=5",
    )


# --------------------------------------------------------------------------- properties

small = st.integers(min_value=0, max_value=1_000)


@st.composite
def origin_history(draw: st.DrawFn) -> list[VersionReading]:
    """Cumulative readings of one origin at three instants (any non-zero start)."""
    buckets = [draw(st.integers(1, 1_000)), draw(small), draw(small)]
    errors = draw(st.integers(1, sum(buckets)))
    out = []
    for step in range(3):
        if step:
            new = [draw(small) for _ in buckets]
            errors += draw(st.integers(0, sum(new)))
            buckets = [b + n for b, n in zip(buckets, new, strict=True)]
        cumulative = (buckets[0], buckets[0] + buckets[1], sum(buckets))
        out.append(vr(sum(buckets), errors, {"5xx": errors}, cumulative, float(sum(buckets))))
    return out


def _sum(parts: list[VersionReading]) -> VersionReading:
    hs = [p.histograms["latency"] for p in parts]
    return vr(
        sum(p.requests for p in parts),
        sum(p.errors for p in parts),
        {"5xx": sum(p.error_classes["5xx"] for p in parts)},
        tuple(sum(c) for c in zip(*(h.cumulative for h in hs), strict=True)),
        sum(h.total for h in hs),
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(origin_history(), min_size=1, max_size=5))
def test_splitting_traffic_over_origins_gives_the_same_windows(
    histories: list[list[VersionReading]],
) -> None:
    for i in (1, 2):
        prev = Reading(i, {f"o{k}": {"v1": h[i - 1]} for k, h in enumerate(histories)})
        cur = Reading(i + 1, {f"o{k}": {"v1": h[i]} for k, h in enumerate(histories)})
        one_prev = reading(i, a={"v1": _sum([h[i - 1] for h in histories])})
        one_cur = reading(i + 1, a={"v1": _sum([h[i] for h in histories])})
        got, r1 = windows_between(prev, cur, TARGET, {"v1": 5.0})
        expected, r2 = windows_between(one_prev, one_cur, TARGET, {"v1": 5.0})
        assert r1 is None and r2 is None
        assert got == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(origin_history(), min_size=1, max_size=5),
    st.data(),
    st.sampled_from(["requests", "errors", "5xx", "bucket", "inf-bucket"]),
    st.integers(1, 1_000),
)
def test_a_reset_in_any_origin_always_excludes(
    histories: list[list[VersionReading]], data: st.DataObject, what: str, drop: int
) -> None:
    victim = data.draw(st.integers(0, len(histories) - 1))
    prev = {f"o{k}": {"v1": h[1]} for k, h in enumerate(histories)}
    cur = {f"o{k}": {"v1": h[2]} for k, h in enumerate(histories)}
    p = histories[victim][1]
    h = p.histograms["latency"]
    d = min(drop, int(h.cumulative[0]))  # every value of p is at least cumulative[0] >= 1
    if what == "requests":
        restarted = vr(p.requests - d, p.errors, p.error_classes, h.cumulative, h.total)
    elif what == "errors":
        restarted = vr(p.requests, p.errors - 1, p.error_classes, h.cumulative, h.total)
    elif what == "5xx":
        restarted = vr(p.requests, p.errors, {"5xx": p.errors - 1}, h.cumulative, h.total)
    elif what == "bucket":
        low = (h.cumulative[0] - d, *h.cumulative[1:])
        restarted = vr(p.requests, p.errors, p.error_classes, low, h.total)
    else:
        restarted = vr(
            p.requests, p.errors, p.error_classes, tuple(c - d for c in h.cumulative), h.total
        )
    cur[f"o{victim}"] = {"v1": restarted}
    windows, reason = windows_between(Reading(1, prev), Reading(2, cur), TARGET)
    assert windows == {}
    assert reason is not None and reason.startswith(f"counter reset in o{victim} v1")

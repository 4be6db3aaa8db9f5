import math

import pytest

from analysis.samples import (
    BucketLayoutMismatch,
    Histogram,
    Integrity,
    LatencyUnit,
    SamplesError,
    check_window,
    counter_increase,
    histogram_from_cumulative,
)


def test_cumulative_ms_buckets_become_per_bucket_seconds() -> None:
    h = histogram_from_cumulative({100.0: 3, 250.0: 7, math.inf: 10}, LatencyUnit.MS, 1500.0)
    assert h.bounds == (0.1, 0.25, math.inf)
    assert h.counts == (3, 4, 3)
    assert h.count == 10
    assert h.cumulative() == (3, 7, 10)
    assert h.total_sum == pytest.approx(1.5)


def test_decreasing_cumulative_counts_are_an_error() -> None:
    with pytest.raises(SamplesError, match="below the previous bucket"):
        histogram_from_cumulative({0.1: 5, 0.2: 4, math.inf: 6}, LatencyUnit.S)


def test_missing_inf_bucket_is_an_error() -> None:
    with pytest.raises(SamplesError, match=r"\+Inf"):
        histogram_from_cumulative({0.1: 5}, LatencyUnit.S)


def test_merging_different_layouts_is_an_error_not_a_guess() -> None:
    a = Histogram((0.1, math.inf), (1, 2))
    b = Histogram((0.2, math.inf), (1, 2))
    with pytest.raises(BucketLayoutMismatch):
        a.plus(b)
    assert a.plus(a).counts == (2, 4)


def test_counter_reset_is_flagged_not_summed() -> None:
    assert counter_increase(100, 130) == counter_increase(0, 30)
    assert not counter_increase(100, 130).reset
    reset = counter_increase(100, 20)
    assert reset.reset and reset.value == 20


def test_negative_increment_classifies_window_as_reset() -> None:
    ok = check_window(requests=10, errors=1, error_classes={}, bucket_counts=[1, 2], sums=[])
    assert ok is Integrity.OK
    bad = check_window(requests=10, errors=-3, error_classes={}, bucket_counts=[1], sums=[])
    assert bad is Integrity.COUNTER_RESET
    bad2 = check_window(requests=10, errors=0, error_classes={}, bucket_counts=[-1], sums=[])
    assert bad2 is Integrity.COUNTER_RESET


def test_nan_is_rejected() -> None:
    with pytest.raises(SamplesError, match="finite"):
        check_window(requests=math.nan, errors=0, error_classes={}, bucket_counts=[], sums=[])
    with pytest.raises(SamplesError):
        Histogram((math.nan, math.inf), (1, 1))

"""Replay input for ratio metrics: the ``ratios`` key, read back exactly, errors by line."""

from __future__ import annotations

import math

import pytest

from analysis.replay import LineError, parse_line, window_line
from analysis.samples import Histogram, RatioSums, Window


def test_window_with_ratios_round_trips() -> None:
    w = Window(60.0, "v2", 10, 1, histograms={"latency": Histogram((0.5, math.inf), (8, 2))},
               weight=5.0, ratios={"tps": RatioSums(420.0, 10.5, 10),
                                   "ttft-per-token": RatioSums(3.0, 900.0, 10, 1.5, 9e4, 300.0)})
    assert parse_line(window_line(w), 1).window == w


@pytest.mark.parametrize(("ratios", "message"), [
    ({"tps": {"numerator": 1, "count": 2}}, "ratios.tps: needs 'numerator', 'denominator'"),
    ({"tps": {"numerator": 1, "denominator": 2, "count": 2, "numeratorSquares": 1}},
     "give all of numeratorSquares, denominatorSquares, crossProducts or none"),
    ({"tps": {"numerator": 1, "denominator": 2, "count": 2.5}}, "ratios.tps.count"),
    ({"tps": {"numerator": "x", "denominator": 2, "count": 2}}, "ratios.tps.numerator"),
    ({"tps": {"numerator": 1, "denominator": 2, "count": 2, "extra": 1}},
     "ratios.tps.extra: unknown field"),
    ([1], "ratios: must be an object"),
])
def test_bad_ratios_are_line_errors(ratios: object, message: str) -> None:
    with pytest.raises(LineError, match=message.replace("(", r"\(")):
        parse_line({"t": 60, "version": "v1", "requests": 2, "errors": 0, "ratios": ratios}, 3)


def test_a_negative_ratio_sum_is_a_counter_reset_not_an_error() -> None:
    p = parse_line({"t": 60, "version": "v1", "requests": 2, "errors": 0,
                    "ratios": {"tps": {"numerator": -5, "denominator": 2, "count": 2}}}, 1)
    assert p.reset

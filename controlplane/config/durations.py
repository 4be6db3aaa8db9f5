"""Durations as written in YAML (``500ms``, ``5s``, ``2m``, ``1h``) and as int milliseconds."""

from __future__ import annotations

import re

from controlplane.config.errors import excerpt

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000}
# JSON Schema patterns (also used by the checker, which adds the messages).
DURATION_PATTERN = r"^[0-9]{1,9}(ms|s|m|h)$"
POSITIVE_DURATION_PATTERN = r"^0*[1-9][0-9]{0,8}(ms|s|m|h)$"
_DURATION = re.compile(r"([0-9]+)(ms|s|m|h)")


# Fractional durations for measured quantities (latency thresholds, margins).
TIME_PATTERN = r"^[0-9]{1,9}(\.[0-9]{1,9})?(us|ms|s|m|h)$"
_TIME = re.compile(TIME_PATTERN)
_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class DurationError(ValueError):
    pass


def parse_time(text: str) -> float:
    """``"20ms"`` → 0.02, ``"0.5s"`` → 0.5 (seconds, float); a number and a unit."""
    match = _TIME.fullmatch(text)
    if match is None:
        raise DurationError(
            f"invalid duration {excerpt(text)}: write a number and a unit, one of us, ms, s, "
            "m, h (e.g. 20ms, 0.5s)"
        )
    return float(text[: match.start(2)]) * _UNITS_S[match.group(2)]


def format_time(seconds: float) -> str:
    """A readable spelling of seconds: 0.02 → ``20ms``, 1.5 → ``1.5s``."""
    if seconds != 0 and abs(seconds) < 1e-3:
        return f"{seconds * 1e6:g}us"
    if abs(seconds) < 1:
        return f"{seconds * 1e3:g}ms"
    return f"{seconds:g}s"


def parse_duration(text: str) -> int:
    """``"1500ms"`` → 1500; one integer and one unit (ms, s, m, h)."""
    match = _DURATION.fullmatch(text)
    if match is None or len(match.group(1)) > 9:
        raise DurationError(
            f"invalid duration {excerpt(text)}: write an integer and a unit, one of ms, s, m, h "
            "(e.g. 500ms, 5s, 2m, 1h)"
        )
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def format_duration(ms: int) -> str:
    """The shortest exact spelling: 3_600_000 → ``1h``, 1500 → ``1500ms``, 0 → ``0s``."""
    if ms == 0:
        return "0s"
    for unit in ("h", "m", "s"):
        if ms % _UNITS_MS[unit] == 0:
            return f"{ms // _UNITS_MS[unit]}{unit}"
    return f"{ms}ms"

"""Runs fuzz targets for a time budget and reports inputs tried and crashes found.

Hypothesis engine: the target's strategy is run in batches of examples with
successive seeds until the budget is spent. A crash (any exception the target
lets escape) is shrunk to a minimal input once; later inputs that hit the
same crash (same exception type at the same line) are counted, not shrunk
again, so the run goes on looking for others.
"""

from __future__ import annotations

import math
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as with_seed

from tests.fuzz.targets import Broken, FuzzTarget

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Crash:
    key: str
    error: str
    example: str
    hits: int = 0


@dataclass
class Result:
    target: str
    engine: str
    seconds: float = 0.0
    tried: int = 0
    crashes: dict[str, Crash] = field(default_factory=dict)

    def line(self) -> str:
        rate = self.tried / self.seconds if self.seconds else 0.0
        return (f"{self.target:<13} {self.engine:<10} {self.seconds:6.1f}s  "
                f"inputs {self.tried:>9,} ({rate:,.0f}/s)  crashes {len(self.crashes)}")


def crash_key(exc: BaseException) -> str:
    """What makes two crashes the same: the exception type and where it was raised
    (the innermost frame in this project), plus the property for ``Broken``."""
    where = "?"
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename)
        if ROOT in path.parents and ".venv" not in path.parts:
            where = f"{path.relative_to(ROOT)}:{frame.lineno}"
            break
    kind = type(exc).__name__
    if isinstance(exc, Broken):
        kind += f" ({exc.kind})"
    return f"{kind} at {where}"


def summary(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + "..."


def run_hypothesis(target: FuzzTarget, seconds: float, seed: int = 0) -> Result:
    result = Result(target.name, "hypothesis")
    start = time.monotonic()
    deadline = start + seconds
    batch = 20

    def check(value: object) -> None:
        result.tried += 1
        try:
            target.check(value)
        except Exception as exc:
            known = result.crashes.get(crash_key(exc))
            if known is None:
                raise
            known.hits += 1

    while time.monotonic() < deadline:
        began = time.monotonic()

        def body(value: object) -> None:
            check(value)

        configured = settings(
            max_examples=batch, deadline=None, database=None,
            suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
            phases=[Phase.generate, Phase.shrink],
        )(given(target.strategy)(body))
        try:
            with_seed(seed)(configured)()
        except Exception as exc:
            key = crash_key(exc)
            example = "\n".join(getattr(exc, "__notes__", []))
            result.crashes.setdefault(key, Crash(key, summary(exc), example)).hits += 1
        seed += 1
        took = max(time.monotonic() - began, 1e-3)
        left = deadline - time.monotonic()
        # Batches of about two seconds, never far past the budget.
        batch = max(1, min(2000, math.floor(batch * min(4.0, 2.0 / took))))
        batch = max(1, min(batch, math.floor(batch * max(left, 0.0) / 2.0) or 1))
    result.seconds = time.monotonic() - start
    return result


def report(results: list[Result], out: list[str] | None = None) -> str:
    lines = out if out is not None else []
    for r in results:
        lines.append(r.line())
    for r in results:
        for crash in r.crashes.values():
            lines.append("")
            lines.append(f"CRASH {r.target}: {crash.key} (hit {crash.hits}x)")
            lines.append(f"  {crash.error}")
            for text in crash.example.splitlines()[:40]:
                lines.append("  " + _printable(text))
    total = sum(len(r.crashes) for r in results)
    tried = sum(r.tried for r in results)
    lines.append("")
    lines.append(f"{len(results)} targets, {tried:,} inputs, {total} distinct crashes")
    return "\n".join(lines)


def _printable(text: str, limit: int = 400) -> str:
    text = re.sub(r"[\x00-\x08\x0b-\x1f]", "?", text)
    return text if len(text) <= limit else text[:limit] + "..."

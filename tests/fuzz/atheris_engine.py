"""The atheris engine: libFuzzer, with coverage feedback, drives a target's strategy.

``run_atheris(name, seconds, seed)`` runs ``python -m tests.fuzz.atheris_engine``
for one target in a child process (libFuzzer ends its process when the time is
up). The child feeds libFuzzer's bytes to the strategy through Hypothesis's
``fuzz_one_input``, so both engines fuzz exactly the same inputs and
properties; every crash is recorded (and its input saved), not fatal, so one
run finds more than one. The child writes its figures to a JSON file the
parent reads back.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fuzz.runner import Result

ROOT = Path(__file__).resolve().parents[2]
# Coverage is traced in the project's code only (instrumenting every loaded module
# takes minutes).
INSTRUMENTED = ["analysis", "controlplane", "xds", "tests.fuzz"]


def run_atheris(name: str, seconds: float, seed: int) -> Result:
    # Imported here: the child must import the project under instrumentation.
    from tests.fuzz.runner import Crash, Result
    out = Path(tempfile.mkdtemp(prefix=f"sluice-fuzz-{name}-"))
    stats = out / "stats.json"
    args = [sys.executable, "-m", "tests.fuzz.atheris_engine", name, str(int(max(1, seconds))),
            str(seed), str(out)]
    began = time.monotonic()
    with (out / "libfuzzer.log").open("wb") as log:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    result = Result(name, "atheris", time.monotonic() - began)
    try:
        data: dict[str, Any] = json.loads(stats.read_text())
    except (OSError, ValueError):
        result.crashes["no figures"] = Crash("no figures", f"the child wrote none; see {out}",
                                             "", 1)
        return result
    result.tried = int(data["tried"])
    for c in data["crashes"]:
        result.crashes[c["key"]] = Crash(c["key"], c["error"],
                                         f"{c['example']}\n(input saved: {c['file']})", c["hits"])
    if not result.crashes:
        shutil.rmtree(out, ignore_errors=True)
    return result


def _child(name: str, seconds: int, seed: int, out: Path) -> None:
    import atheris  # type: ignore[import-untyped, import-not-found]
    from hypothesis import HealthCheck, given, settings

    with atheris.instrument_imports(include=INSTRUMENTED):
        from tests.fuzz.runner import crash_key, summary
        from tests.fuzz.targets import targets

    target = targets()[name]
    tried = 0
    crashes: dict[str, dict[str, Any]] = {}
    last_write = 0.0
    current = b""

    def write(force: bool = False) -> None:
        nonlocal last_write
        if force or time.monotonic() - last_write > 0.5:
            last_write = time.monotonic()
            tmp = out / "stats.json.tmp"
            tmp.write_text(json.dumps({"tried": tried, "crashes": list(crashes.values())}))
            tmp.replace(out / "stats.json")

    @settings(database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(target.strategy)
    def body(value: Any) -> None:
        nonlocal tried
        tried += 1
        try:
            target.check(value)
        except Exception as exc:
            key = crash_key(exc)
            if key in crashes:
                crashes[key]["hits"] += 1
            else:
                file = out / f"crash-{hashlib.sha1(key.encode()).hexdigest()[:12]}.bin"
                file.write_bytes(current)
                crashes[key] = {"key": key, "error": summary(exc), "hits": 1,
                                "example": repr(value)[:2000], "file": str(file)}
            write(force=True)
        write()

    fuzz_one = body.hypothesis.fuzz_one_input  # type: ignore[attr-defined]

    def one_input(data: bytes) -> None:
        nonlocal current
        current = data
        fuzz_one(data)

    write(force=True)
    atheris.Setup([sys.argv[0], f"-max_total_time={seconds}", f"-seed={seed + 1}",
                   "-rss_limit_mb=4096", f"-artifact_prefix={out}/"], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))

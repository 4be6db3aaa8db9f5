"""How many cores this process may use: the default for ``sluice serve --workers``.

``os.cpu_count()`` is the machine's count; in a container limited to 2 CPUs on a
64-core node that would start 64 processes. The CPUs it may run on
(``sched_getaffinity``) and a CFS quota (cgroup v2 ``cpu.max``, v1
``cpu.cfs_quota_us``/``cpu.cfs_period_us``) both bound it; the quota is
rounded up (1.5 CPUs can keep 2 processes busy half the time).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def quota_cores(cpu_max: str | None, cfs_quota: str | None = None,
                cfs_period: str | None = None) -> int | None:
    """Cores a CFS quota allows (None: no quota, or text that is not one)."""
    try:
        if cpu_max is not None:
            quota, _, period = cpu_max.strip().partition(" ")
            if quota == "max":
                return None
            return max(1, math.ceil(int(quota) / int(period or "100000")))
        if cfs_quota is not None and cfs_period is not None:
            q, p = int(cfs_quota), int(cfs_period)
            return None if q <= 0 or p <= 0 else max(1, math.ceil(q / p))
    except ValueError:
        return None
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def available_cores(root: Path = CGROUP) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = quota_cores(_read(root / "cpu.max"), _read(root / "cpu" / "cpu.cfs_quota_us"),
                        _read(root / "cpu" / "cpu.cfs_period_us"))
    return max(1, min(cores, quota) if quota is not None else cores)

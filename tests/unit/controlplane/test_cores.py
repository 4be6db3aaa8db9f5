"""The default worker count follows the container's CPU quota, not the node's cores."""

from __future__ import annotations

from pathlib import Path

from controlplane.cores import available_cores, quota_cores


def test_quota_text_in_both_cgroup_versions() -> None:
    assert quota_cores("max 100000\n") is None
    assert quota_cores("200000 100000\n") == 2
    assert quota_cores("150000 100000") == 2  # 1.5 CPUs keep two processes half busy
    assert quota_cores("50000 100000") == 1
    assert quota_cores(None, "-1", "100000") is None
    assert quota_cores(None, "300000", "100000") == 3
    assert quota_cores("garbage") is None and quota_cores(None) is None


def test_the_quota_bounds_the_cores_this_process_may_run_on(tmp_path: Path) -> None:
    unlimited = available_cores(tmp_path)  # no cgroup files: the affinity mask alone
    assert unlimited >= 1
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert available_cores(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cores(tmp_path) == unlimited

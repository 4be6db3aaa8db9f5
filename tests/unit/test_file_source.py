"""The polling file source: fingerprints, and reloads on edits, renames and deletions."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from controlplane.config import LoadResult, load_paths
from controlplane.sources import ConfigSource
from controlplane.sources.file import FileSource, fingerprint

SERVICE = """\
apiVersion: sluice.dev/v1alpha1
kind: ModelService
metadata:
  name: {name}
spec:
  listener: {{address: 127.0.0.1, port: {port}}}
  versions:
    - name: v1
      weight: {w1}
      endpoints: [{{address: 127.0.0.1, port: 18081}}]
    - name: v2
      weight: {w2}
      endpoints: [{{address: 127.0.0.1, port: 18082}}]
"""


def service_yaml(name: str = "chat", w1: int = 90, port: int = 10000) -> str:
    return SERVICE.format(name=name, w1=w1, w2=100 - w1, port=port)


def weights(result: LoadResult) -> dict[str, tuple[int, ...]]:
    assert result.state is not None, [str(e) for e in result.errors]
    return {s.name: tuple(v.weight for v in s.versions) for s in result.state.services}


# ----------------------------------------------------------------- fingerprint


def test_fingerprint_sees_content_listing_and_missing(tmp_path: Path) -> None:
    d = tmp_path / "conf"
    d.mkdir()
    (d / "a.yaml").write_text("a: 1\n")
    (d / "notes.txt").write_text("ignored")
    lone = tmp_path / "lone.yml"
    paths = [d, lone]

    fp0 = fingerprint(paths)
    assert fp0.files() == (str(d / "a.yaml"),)
    assert fingerprint(paths) == fp0

    (d / "notes.txt").write_text("still ignored, longer")
    assert fingerprint(paths) == fp0

    lone.write_text("b: 2\n")  # a missing file appearing is a change
    fp1 = fingerprint(paths)
    assert fp1 != fp0 and fp1.files() == (str(d / "a.yaml"), str(lone))

    (d / "b.yml").write_text("")  # a new file in a directory, even empty
    fp2 = fingerprint(paths)
    assert fp2 != fp1

    (d / "a.yaml").write_text("a: 2\n")  # same size, new content
    assert fingerprint(paths) != fp2

    (d / "sub.yaml").mkdir()  # a directory with a config suffix is not config
    assert str(d / "sub.yaml") not in fingerprint(paths).files()


def test_fingerprint_sees_atomic_rename_and_symlink_swap(tmp_path: Path) -> None:
    target = tmp_path / "svc.yaml"
    target.write_text("x: 1\n")
    before = fingerprint([target])
    tmp = tmp_path / ".svc.yaml.tmp"
    tmp.write_text("x: 1\n")  # identical bytes, new inode
    os.replace(tmp, target)
    assert fingerprint([target]) != before

    # Kubernetes ConfigMap volumes: x.yaml -> ..data/x.yaml, ..data swapped atomically.
    vol = tmp_path / "vol"
    (vol / "..2024_a").mkdir(parents=True)
    (vol / "..2024_a" / "x.yaml").write_text("v: 1\n")
    (vol / "..data").symlink_to("..2024_a")
    (vol / "x.yaml").symlink_to("..data/x.yaml")
    before = fingerprint([vol])
    (vol / "..2024_b").mkdir()
    (vol / "..2024_b" / "x.yaml").write_text("v: 2\n")
    (vol / "..data_tmp").symlink_to("..2024_b")
    os.replace(vol / "..data_tmp", vol / "..data")
    assert fingerprint([vol]) != before


# ----------------------------------------------------------------- FileSource


class Collector:
    """Receives results; tests wait for the next one with a bound."""

    def __init__(self) -> None:
        self.results: list[LoadResult] = []
        self._changed = asyncio.Condition()

    async def __call__(self, result: LoadResult) -> None:
        async with self._changed:
            self.results.append(result)
            self._changed.notify_all()

    async def wait_count(self, n: int, timeout: float = 1.0) -> LoadResult:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.results) >= n), timeout)
        return self.results[n - 1]


@pytest.fixture
async def watch() -> AsyncIterator[Callable[..., asyncio.Task[None]]]:
    """``watch(source, collector)`` runs the source until the test ends."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def start(source: FileSource, collector: Collector) -> asyncio.Task[None]:
        task = asyncio.create_task(source.run(collector, stop))
        tasks.append(task)
        return task

    try:
        yield start
    finally:
        stop.set()
        for task in tasks:
            await asyncio.wait_for(task, 2.0)


def test_file_source_satisfies_the_protocol(tmp_path: Path) -> None:
    source: ConfigSource = FileSource([tmp_path])
    assert source.name == "file"
    with pytest.raises(ValueError, match="at least one path"):
        FileSource([])


async def test_initial_load_then_edit_reloads(
    tmp_path: Path, watch: Callable[..., asyncio.Task[None]]
) -> None:
    (tmp_path / "chat.yaml").write_text(service_yaml(w1=90))
    got = Collector()
    watch(FileSource([tmp_path], interval=0.02, debounce=0.01), got)
    assert weights(await got.wait_count(1)) == {"chat": (90, 10)}

    (tmp_path / "chat.yaml").write_text(service_yaml(w1=50))
    assert weights(await got.wait_count(2)) == {"chat": (50, 50)}

    (tmp_path / "more.yml").write_text(service_yaml("other", port=10001))
    assert weights(await got.wait_count(3)) == {"chat": (50, 50), "other": (90, 10)}
    await asyncio.sleep(0.1)
    assert len(got.results) == 3  # no change, no reload


async def test_changed_at_is_when_the_change_was_seen_not_when_loaded(
    tmp_path: Path, watch: Callable[..., asyncio.Task[None]]
) -> None:
    (tmp_path / "chat.yaml").write_text(service_yaml(w1=90))
    seen: list[tuple[float | None, float]] = []
    source = FileSource([tmp_path], interval=0.02, debounce=0.05)

    got = Collector()

    async def record(result: LoadResult) -> None:
        seen.append((source.changed_at, time.monotonic()))
        await got(result)

    watch(source, record)
    await got.wait_count(1)
    before_edit = time.monotonic()
    (tmp_path / "chat.yaml").write_text(service_yaml(w1=50))
    await got.wait_count(2)
    changed_at, delivered_at = seen[1]
    assert changed_at is not None
    # seen after the edit, and at least one settle period before the load was delivered
    assert before_edit <= changed_at <= delivered_at - 0.05


async def test_invalid_edit_yields_errors_then_recovers(
    tmp_path: Path, watch: Callable[..., asyncio.Task[None]]
) -> None:
    path = tmp_path / "chat.yaml"
    path.write_text(service_yaml())
    got = Collector()
    watch(FileSource([path], interval=0.02, debounce=0.01), got)
    await got.wait_count(1)

    path.write_text(service_yaml(w1=70).replace("weight: 30", "weight: 31"))
    bad = await got.wait_count(2)
    assert bad.state is None and bad.errors
    assert all(e.file == str(path) for e in bad.errors)

    path.write_text(service_yaml(w1=70))
    assert weights(await got.wait_count(3)) == {"chat": (70, 30)}


async def test_file_deleted_and_directory_emptied(
    tmp_path: Path, watch: Callable[..., asyncio.Task[None]]
) -> None:
    d = tmp_path / "conf"
    d.mkdir()
    (d / "a.yaml").write_text(service_yaml("a"))
    (d / "b.yaml").write_text(service_yaml("b", port=10001))
    lone = tmp_path / "lone.yaml"
    lone.write_text(service_yaml("lone", port=10002))
    got = Collector()
    watch(FileSource([d, lone], interval=0.02, debounce=0.01), got)
    assert set(weights(await got.wait_count(1))) == {"a", "b", "lone"}

    (d / "b.yaml").unlink()
    assert set(weights(await got.wait_count(2))) == {"a", "lone"}

    lone.unlink()  # a configured file that disappears is reported, not ignored
    missing = await got.wait_count(3)
    assert missing.state is None
    assert any(e.file == str(lone) for e in missing.errors)

    lone.write_text(service_yaml("lone", port=10002))
    assert set(weights(await got.wait_count(4))) == {"a", "lone"}

    (d / "a.yaml").unlink()
    emptied = await got.wait_count(5)
    assert set(weights(emptied)) == {"lone"}


async def test_atomic_rename_edit_is_read_once(
    tmp_path: Path, watch: Callable[..., asyncio.Task[None]]
) -> None:
    path = tmp_path / "chat.yaml"
    path.write_text(service_yaml(w1=90))
    got = Collector()
    watch(FileSource([tmp_path], interval=0.02, debounce=0.05), got)
    await got.wait_count(1)

    # An editor's save: write a temp file, then rename it over the original.
    tmp = tmp_path / ".chat.yaml.swp"
    tmp.write_text(service_yaml(w1=20)[:40])  # half-written
    tmp.write_text(service_yaml(w1=20))
    os.replace(tmp, path)
    assert weights(await got.wait_count(2)) == {"chat": (20, 80)}
    await asyncio.sleep(0.2)
    assert len(got.results) == 2


async def test_loader_crash_is_reported_and_watch_continues(
    tmp_path: Path, watch: Callable[..., asyncio.Task[None]]
) -> None:
    path = tmp_path / "chat.yaml"
    path.write_text(service_yaml())
    calls = 0

    def flaky(paths: Sequence[str]) -> LoadResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return load_paths(paths)

    got = Collector()
    watch(FileSource([path], interval=0.02, debounce=0.01, loader=flaky), got)
    crashed = await got.wait_count(1)
    assert crashed.state is None
    assert "internal error while loading: boom" in crashed.errors[0].message

    path.write_text(service_yaml(w1=60))
    assert weights(await got.wait_count(2)) == {"chat": (60, 40)}


async def test_sync_callback_and_stop(tmp_path: Path) -> None:
    (tmp_path / "chat.yaml").write_text(service_yaml())
    seen: list[LoadResult] = []
    stop = asyncio.Event()
    source = FileSource([tmp_path], interval=0.02)
    task = asyncio.create_task(source.run(seen.append, stop))
    try:
        async with asyncio.timeout(1.0):
            while not seen:
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(task, 1.0)
    assert len(seen) == 1 and source.loads == 1

"""The per-file load cache: unchanged files are not parsed again; results never differ."""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.config import LoadResult, load_paths, register_kind
from controlplane.config import filecache as filecache_module
from controlplane.config.filecache import FileCache, settled
from controlplane.config.kinds import known_kinds, unregister_kind
from controlplane.config.loader import MAX_FILE_BYTES, FileLoad, bytes_load, read_raw
from controlplane.sources.file import FileSource
from tests.unit.config.util import doc
from tests.unit.test_file_source import service_yaml

FAR_FUTURE_NS = 1 << 62  # a clock at which every file changed long ago: stats are trusted


class CountingParse:
    """``bytes_load`` that records which files it parsed."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, raw: bytes, name: str) -> FileLoad:
        self.names.append(name)
        return bytes_load(raw, name)

    def take(self) -> list[str]:
        names, self.names = sorted(Path(n).name for n in self.names), []
        return names


def same(cached: LoadResult, plain: LoadResult) -> None:
    """Everything a consumer can see of a load is equal."""
    assert cached == plain
    assert [str(e) for e in cached.errors] == [str(e) for e in plain.errors]
    assert [str(w) for w in cached.standalone.warnings] == \
        [str(w) for w in plain.standalone.warnings]
    assert cached.state == plain.state
    assert cached.standalone.statuses == plain.standalone.statuses
    assert [(d.doc.root.mark if d.doc else None) for d in cached.documents] == \
        [(d.doc.root.mark if d.doc else None) for d in plain.documents]


def replace(path: Path, text: str) -> None:
    """Write the way editors and the benchmark do: a new file renamed over the old one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    for i, name in enumerate(("a.yaml", "b.yaml", "c.yml")):
        (tmp_path / name).write_text(service_yaml(name[0], w1=90, port=10000 + i))
    return tmp_path


def load_both(paths: list[Path], cache: FileCache) -> LoadResult:
    cached = load_paths(paths, cache=cache)
    same(cached, load_paths(paths))
    return cached


# ----------------------------------------------------------------- which files are parsed


@pytest.mark.parametrize("settled_stats", [True, False], ids=["settled", "just-written"])
def test_unchanged_files_are_not_parsed_again(config: Path, settled_stats: bool) -> None:
    parse = CountingParse()
    cache = FileCache(parse, clock_ns=lambda: FAR_FUTURE_NS) if settled_stats else \
        FileCache(parse)
    load_both([config], cache)
    assert parse.take() == ["a.yaml", "b.yaml", "c.yml"]
    for _ in range(3):
        load_both([config], cache)
        assert parse.take() == []
    assert cache.parses == 3


def test_settled_unchanged_files_are_not_even_read(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = FileCache(clock_ns=lambda: FAR_FUTURE_NS)
    load_both([config], cache)
    opened: list[str] = []
    real = read_raw

    def counting(path: Path) -> tuple[os.stat_result, bytes]:
        opened.append(path.name)
        return real(path)

    monkeypatch.setattr(filecache_module, "read_raw", counting)
    replace(config / "b.yaml", service_yaml("b", w1=40, port=10001))
    load_both([config], cache)
    assert opened == ["b.yaml"]


def test_in_place_edit_of_the_same_size_is_parsed(config: Path) -> None:
    parse = CountingParse()
    cache = FileCache(parse)
    load_both([config], cache)
    parse.take()
    path = config / "a.yaml"
    before = path.stat()
    path.write_text(service_yaml("a", w1=70, port=10000))  # 90/10 -> 70/30: same size
    assert path.stat().st_size == before.st_size and path.stat().st_ino == before.st_ino
    result = load_both([config], cache)
    assert parse.take() == ["a.yaml"]
    assert result.state is not None
    assert result.state.services[0].versions[0].weight == 70


def test_rename_over_new_and_deleted_files(config: Path) -> None:
    parse = CountingParse()
    cache = FileCache(parse)
    load_both([config], cache)
    parse.take()

    replace(config / "b.yaml", service_yaml("b", w1=10, port=10001))
    load_both([config], cache)
    assert parse.take() == ["b.yaml"]

    (config / "d.yaml").write_text(service_yaml("d", port=10003))
    load_both([config], cache)
    assert parse.take() == ["d.yaml"]
    assert len(cache) == 4

    (config / "c.yml").unlink()
    result = load_both([config], cache)
    assert parse.take() == []
    assert len(cache) == 3 and str(config / "c.yml") not in result.files

    (config / "c.yml").write_text(service_yaml("c", port=10002))  # back: parsed again
    load_both([config], cache)
    assert parse.take() == ["c.yml"]


def test_identical_bytes_under_a_new_stat_are_not_parsed(config: Path) -> None:
    """A touch, or a ConfigMap swap that renames every file for one change."""
    parse = CountingParse()
    cache = FileCache(parse, clock_ns=lambda: FAR_FUTURE_NS)
    load_both([config], cache)
    parse.take()
    replace(config / "a.yaml", (config / "a.yaml").read_text())
    os.utime(config / "b.yaml", ns=(1, 1))
    load_both([config], cache)
    assert parse.take() == []


def test_a_racy_entry_is_checked_by_content(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system whose stat misses an edit (same size, same timestamp tick)."""
    monkeypatch.setattr(filecache_module, "stamp_of", lambda st: (1, 2, 3, 4, 5))
    now = [0]
    parse = CountingParse()
    cache = FileCache(parse, racy_s=2.0, clock_ns=lambda: now[0])
    path = config / "a.yaml"
    now[0] = max(path.stat().st_mtime_ns, path.stat().st_ctime_ns) + 1_000_000_000  # 1 s later
    load_both([config], cache)
    parse.take()
    path.write_text(service_yaml("a", w1=70, port=10000))
    result = load_both([config], cache)  # the stat "did not change", the bytes did
    assert parse.take() == ["a.yaml"]
    assert result.state is not None and result.state.services[0].versions[0].weight == 70


def test_settled_is_measured_from_the_last_change(config: Path) -> None:
    st = (config / "a.yaml").stat()
    last = max(st.st_mtime_ns, st.st_ctime_ns)
    assert not settled(st, last + 1_999_999_999, 2_000_000_000)
    assert settled(st, last + 2_000_000_000, 2_000_000_000)


def test_unreadable_files_are_reported_as_before_and_not_kept(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    (tmp_path / "big.yaml").write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    paths = [tmp_path / "nope.yaml", tmp_path / "latin1.yaml", tmp_path / "big.yaml"]
    parse = CountingParse()
    cache = FileCache(parse)
    for _ in range(2):
        result = load_both(paths, cache)
    assert [e.message.split(":")[0] for e in result.errors] == [
        "cannot read", "not UTF-8 text (byte 9)", "file too large"]
    assert parse.take() == ["big.yaml", "latin1.yaml"]
    assert len(cache) == 2


def test_registering_a_kind_empties_the_cache(config: Path) -> None:
    from tests.unit.config.test_kinds import PIN, PIN_DOC

    (config / "pin.yaml").write_text(PIN_DOC.replace("VERSION", "v1").replace("chat", "a"))
    parse = CountingParse()
    cache = FileCache(parse)
    assert "Pin" not in known_kinds()
    unknown = load_both([config], cache)
    assert [e.message.split(";")[0] for e in unknown.errors] == ["unknown kind 'Pin'"]
    register_kind(PIN)
    try:
        result = load_both([config], cache)
        assert len(parse.take()) == 8
        assert result.errors == () and [d.kind for d in result.documents][-1] == "Pin"
    finally:
        unregister_kind("Pin")
    assert load_both([config], cache).errors == unknown.errors
    assert len(parse.take()) == 4


# ----------------------------------------------------------------- random edit sequences

NAMES = ("a.yaml", "b.yaml", "c.yml")
CONTENTS = [
    service_yaml("chat", w1=90),
    service_yaml("chat", w1=70),  # same size as the one above
    service_yaml("other", w1=55, port=10001),
    service_yaml("chat", w1=70).replace("weight: 30", "weight: 31"),  # weights add to 101
    doc() + "---\napiVersion: v1\nkind: ConfigMap\n---\n" + service_yaml("third", port=10002),
    "not: [valid\n",
    "",
    "apiVersion: sluice.dev/v1alpha1\nkind: Nope\n",
    "name: caf\xe9\n",
]
RAW = [*(c.encode() for c in CONTENTS), b"name: caf\xe9\n", b"#" * (MAX_FILE_BYTES + 1)]

OPS = st.one_of(
    st.tuples(st.sampled_from(["write", "replace"]), st.sampled_from(NAMES),
              st.sampled_from(RAW)),
    st.tuples(st.sampled_from(["delete", "touch"]), st.sampled_from(NAMES), st.just(b"")),
)


@pytest.mark.parametrize("mode", ["stat-trusted", "racy"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(OPS, max_size=12))
def test_random_edits_load_as_without_cache(mode: str, ops: list[tuple[str, str, bytes]]) -> None:
    """Equal to an uncached load after every edit; only the edited file is parsed.

    ``stat-trusted``: every stat is trusted and each write gets a distinct
    mtime (a file system with fine timestamps). ``racy``: the real clock, so
    files written just now are compared by content.
    """
    ticks = itertools.count(1_000_000_000_000_000_000, 1_000)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        parse = CountingParse()
        if mode == "stat-trusted":
            cache = FileCache(parse, clock_ns=lambda: FAR_FUTURE_NS)
        else:
            cache = FileCache(parse)
        load_both([d], cache)
        loaded: dict[str, bytes] = {}
        for op, name, raw in ops:
            path = d / name
            if op == "write":
                path.write_bytes(raw)
            elif op == "replace":
                (d / ".tmp").write_bytes(raw)
                os.replace(d / ".tmp", path)
            elif op == "delete":
                path.unlink(missing_ok=True)
            elif path.exists():
                os.utime(path)
            if mode == "stat-trusted" and path.exists():
                tick = next(ticks)
                os.utime(path, ns=(tick, tick))
            load_both([d], cache)
            changed = op in ("write", "replace") and loaded.get(name) != raw
            assert parse.take() == ([name] if changed else [])
            loaded = {p.name: p.read_bytes() for p in d.iterdir() if p.suffix in (".yaml", ".yml")}
            assert len(cache) == len(loaded)


# ----------------------------------------------------------------- the file source uses it


async def test_file_source_reparses_only_the_edited_file(config: Path) -> None:
    source = FileSource([config], interval=0.02, debounce=0.01)
    results: list[LoadResult] = []
    arrived = asyncio.Event()

    def on_result(result: LoadResult) -> None:
        results.append(result)
        arrived.set()

    async def next_result() -> LoadResult:
        await asyncio.wait_for(arrived.wait(), 2.0)
        arrived.clear()
        return results[-1]

    stop = asyncio.Event()
    task = asyncio.create_task(source.run(on_result, stop))
    try:
        await next_result()
        assert source.cache.parses == 3
        replace(config / "b.yaml", service_yaml("b", w1=20, port=10001))
        result = await next_result()
        assert source.cache.parses == 4
        same(result, load_paths([config]))
    finally:
        stop.set()
        await asyncio.wait_for(task, 2.0)

"""The durable state store: round trips, revisions, events, crash safety, bad files."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.state import ConflictError, StateError, StateStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore.open(tmp_path / "state.db", clock=lambda: 1700000000.5)
    yield s
    s.close()


def test_put_get_roundtrip_and_revisions(store: StateStore) -> None:
    assert store.get("experiment", "chat") is None
    assert store.revision() == 0
    r1 = store.put("experiment", "chat", {"step": 1, "weights": {"v1": 90, "v2": 10}})
    r2 = store.put("experiment", "chat", {"step": 2})
    r3 = store.put("config", "last-good", {"files": ["a.yaml"]})
    assert r1 < r2 < r3 == store.revision()
    rec = store.get("experiment", "chat")
    assert rec is not None
    assert (rec.kind, rec.name, rec.revision) == ("experiment", "chat", r2)
    assert rec.value == {"step": 2}
    assert rec.updated_at == 1700000000.5


def test_list_is_per_kind_and_sorted(store: StateStore) -> None:
    for name in ("b", "a", "c"):
        store.put("svc", name, {"n": name})
    store.put("other", "a", {})
    assert [r.name for r in store.list("svc")] == ["a", "b", "c"]
    assert [r.value["n"] for r in store.list("svc")] == ["a", "b", "c"]
    assert store.list("nothing") == []


def test_delete(store: StateStore) -> None:
    store.put("svc", "a", {"x": 1})
    before = store.revision()
    assert store.delete("svc", "a") is True
    assert store.revision() > before
    assert store.get("svc", "a") is None
    assert store.delete("svc", "a") is False
    # a later write gets a higher revision than anything before the delete
    assert store.put("svc", "a", {"x": 2}) > before


def test_expected_revision(store: StateStore) -> None:
    r1 = store.put("svc", "a", {"x": 1}, expected_revision=0)
    with pytest.raises(ConflictError, match="svc/a: revision is 1, expected 0"):
        store.put("svc", "a", {"x": 2}, expected_revision=0)
    r2 = store.put("svc", "a", {"x": 3}, expected_revision=r1)
    rec = store.get("svc", "a")
    assert rec is not None and rec.revision == r2 and rec.value == {"x": 3}


def test_events_latest_limit_oldest_first(store: StateStore) -> None:
    seqs = [store.append_event("experiment", "chat", {"i": i}) for i in range(5)]
    store.append_event("experiment", "other", {"i": 99})
    assert seqs == sorted(seqs)
    got = store.events("experiment", "chat", limit=3)
    assert [e.event["i"] for e in got] == [2, 3, 4]
    assert [e.seq for e in got] == seqs[2:]
    assert store.events("experiment", "chat", limit=0) == []
    assert store.events("experiment", "nobody") == []


@pytest.mark.parametrize(
    "value",
    [{"x": float("nan")}, {"x": object()}, ["not", "a", "mapping"]],
)
def test_invalid_values_are_refused(store: StateStore, value: object) -> None:
    with pytest.raises(StateError, match="svc/a"):
        store.put("svc", "a", value)  # type: ignore[arg-type]
    assert store.get("svc", "a") is None


@pytest.mark.parametrize("kind,name", [("", "a"), ("svc", ""), (None, "a")])
def test_invalid_keys_are_refused(store: StateStore, kind: object, name: object) -> None:
    with pytest.raises(StateError, match="non-empty string"):
        store.put(kind, name, {})  # type: ignore[arg-type]


def test_reopen_keeps_data_and_does_not_remigrate(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore.open(path) as s:
        rev = s.put("svc", "a", {"x": 1})
        s.append_event("svc", "a", {"what": "created"})
    with StateStore.open(path) as s:
        rec = s.get("svc", "a")
        assert rec is not None and rec.revision == rev
        assert [e.event for e in s.events("svc", "a")] == [{"what": "created"}]
        assert s.put("svc", "b", {}) == rev + 1
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [(1,)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_closed_store_raises(tmp_path: Path) -> None:
    s = StateStore.open(tmp_path / "s.db")
    s.close()
    s.close()  # idempotent
    with pytest.raises(StateError, match="closed"):
        s.get("a", "b")


def test_garbage_file_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(StateError, match=str(path)):
        StateStore.open(path)
    assert path.read_bytes().startswith(b"this is not")


def test_foreign_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "foreign.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match=rf"{path}: not a Sluice state file"):
        StateStore.open(path)
    conn = sqlite3.connect(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert tables == {"customers"}


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match=r"schema version 99, newer"):
        StateStore.open(path)


def test_directory_and_missing_parent_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="is a directory"):
        StateStore.open(tmp_path)
    with pytest.raises(StateError, match="parent directory does not exist"):
        StateStore.open(tmp_path / "nope" / "state.db")


_WRITER = textwrap.dedent(
    """
    import sys
    from controlplane.state import StateStore
    store = StateStore.open(sys.argv[1])
    i = 0
    while True:
        i += 1
        rev = store.put("counter", f"k{i % 7}", {"i": i, "pad": "x" * 500})
        store.append_event("counter", "log", {"i": i})
        print(i, rev, flush=True)
    """
)


def test_committed_writes_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    acknowledged: list[tuple[int, int]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            i, rev = map(int, line.split())
            acknowledged.append((i, rev))
            if len(acknowledged) >= 300:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert len(acknowledged) >= 300
    last_i, last_rev = acknowledged[-1]
    with StateStore.open(path) as s:
        assert s.revision() >= last_rev
        records = {r.name: r for r in s.list("counter")}
        # every key's record is at least as new as the last write we saw acknowledged
        for i, rev in acknowledged[-7:]:
            assert records[f"k{i % 7}"].value["i"] >= i
            assert records[f"k{i % 7}"].revision >= rev
        events = s.events("counter", "log", limit=10_000)
        assert [e.event["i"] for e in events][:last_i] == list(range(1, last_i + 1))
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_empty_file_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.touch()
    with StateStore.open(path) as s:
        assert s.put("svc", "a", {}) == 1


def test_old_events_are_trimmed_by_age_and_by_count(tmp_path: Path) -> None:
    now = [1000.0]
    store = StateStore.open(tmp_path / "s.db", clock=lambda: now[0])
    for i in range(10):
        store.append_event("look", "a", {"i": i})
        now[0] += 1
    now[0] = 1000.0 + 86_400 * 10
    for i in range(4):
        store.append_event("look", "b", {"i": i})
    # a's events are 10 days old; b keeps only its newest 2
    gone = store.trim_events(max_age_s=86_400 * 5, max_per_key=2)
    assert gone == 12
    assert store.events("look", "a") == []
    assert [e.event["i"] for e in store.events("look", "b")] == [2, 3]


def test_commits_are_synced(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path / "s.db")
    with store._locked() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

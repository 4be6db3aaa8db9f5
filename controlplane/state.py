"""Durable state: a small SQLite key/value store with an event log.

``sluice serve --state PATH`` keeps here what must survive a restart: experiment
progress, the weights the rollout machine last set, the last config that loaded
cleanly. The store is generic: a record is addressed by ``(kind, name)`` and
holds a JSON object; callers choose the kinds (e.g. ``("experiment", "chat")``
or ``("config", "last-good")``).

Every write is one SQLite transaction in WAL mode with ``synchronous=FULL``:
the WAL is synced at every commit, so neither a killed process nor a power
cut loses a committed write, and the file is never left corrupt. Events are
trimmed by age and by count per key (``trim_events``). Revisions come from one counter
for the whole store, so a higher revision is always a later write (like etcd's).

The file is stamped with an ``application_id`` and a list of applied schema
migrations; a file from another program, a damaged file or one written by a
newer Sluice is refused with an error that names the path.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "ConflictError",
    "Event",
    "Record",
    "StateError",
    "StateStore",
]

# "SLCE": marks a file as Sluice's so a foreign SQLite database is never migrated.
APPLICATION_ID = 0x534C4345

# Append only: (version, name, statements). Never edit a released entry.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "records, events and the revision counter",
        (
            """CREATE TABLE meta (
                   key   TEXT PRIMARY KEY,
                   value TEXT NOT NULL
               ) STRICT""",
            "INSERT INTO meta (key, value) VALUES ('revision', '0')",
            """CREATE TABLE records (
                   kind       TEXT NOT NULL,
                   name       TEXT NOT NULL,
                   value      TEXT NOT NULL,
                   revision   INTEGER NOT NULL,
                   updated_at REAL NOT NULL,
                   PRIMARY KEY (kind, name)
               ) STRICT""",
            """CREATE TABLE events (
                   seq  INTEGER PRIMARY KEY AUTOINCREMENT,
                   kind TEXT NOT NULL,
                   name TEXT NOT NULL,
                   at   REAL NOT NULL,
                   body TEXT NOT NULL
               ) STRICT""",
            "CREATE INDEX events_by_key ON events (kind, name, seq)",
        ),
    ),
)

_MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
) STRICT"""


class StateError(Exception):
    """The state file cannot be used (foreign, damaged, newer) or a value is invalid."""


class ConflictError(StateError):
    """``put(..., expected_revision=N)`` found a different revision."""


@dataclass(frozen=True)
class Record:
    kind: str
    name: str
    value: Mapping[str, Any]
    revision: int
    updated_at: float  # seconds since the epoch


@dataclass(frozen=True)
class Event:
    kind: str
    name: str
    seq: int  # increases across the whole store
    at: float  # seconds since the epoch
    event: Mapping[str, Any]


def encode(value: Mapping[str, Any], what: str) -> str:
    """Canonical JSON of a record or event (sorted keys, no NaN); StateError otherwise."""
    if not isinstance(value, Mapping):
        raise StateError(f"{what} must be a mapping, got {type(value).__name__}")
    try:
        return json.dumps(dict(value), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StateError(f"{what} is not JSON-encodable: {exc}") from exc


def _check_key(kind: str, name: str) -> None:
    for label, part in (("kind", kind), ("name", name)):
        if not isinstance(part, str) or not part:
            raise StateError(f"{label} must be a non-empty string, got {part!r}")


class StateStore:
    """One open state file. Safe to share between threads (calls are serialized).

    Calls block for a few milliseconds at most (one small transaction); async
    callers may run them directly or through ``asyncio.to_thread``.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, clock: Callable[[], float]) -> None:
        self._path = path
        self._conn = conn
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | Path, *, clock: Callable[[], float] = time.time) -> StateStore:
        """Open (creating if absent) and migrate the state file at ``path``."""
        p = Path(path)
        if p.is_dir():
            raise StateError(f"{p}: is a directory, expected a Sluice state file")
        if not p.parent.is_dir():
            raise StateError(f"{p}: parent directory does not exist")
        try:
            conn = sqlite3.connect(p, isolation_level=None, check_same_thread=False, timeout=5.0)
        except sqlite3.Error as exc:
            raise StateError(f"{p}: cannot open state file: {exc}") from exc
        try:
            _prepare(conn, p, clock)
        except BaseException:
            conn.close()
            raise
        return cls(p, conn, clock)

    @property
    def path(self) -> Path:
        return self._path

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ records

    def put(
        self,
        kind: str,
        name: str,
        value: Mapping[str, Any],
        *,
        expected_revision: int | None = None,
    ) -> int:
        """Store ``value`` under ``(kind, name)``; return the new revision.

        With ``expected_revision`` the write happens only if the record's current
        revision equals it (0 means "must not exist"); otherwise ``ConflictError``.
        """
        _check_key(kind, name)
        body = encode(value, f"value of {kind}/{name}")
        with self._transaction() as conn:
            if expected_revision is not None:
                row = conn.execute(
                    "SELECT revision FROM records WHERE kind = ? AND name = ?", (kind, name)
                ).fetchone()
                current = 0 if row is None else int(row[0])
                if current != expected_revision:
                    raise ConflictError(
                        f"{kind}/{name}: revision is {current}, expected {expected_revision}"
                    )
            revision = _next_revision(conn)
            conn.execute(
                """INSERT INTO records (kind, name, value, revision, updated_at)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (kind, name) DO UPDATE SET
                       value = excluded.value,
                       revision = excluded.revision,
                       updated_at = excluded.updated_at""",
                (kind, name, body, revision, self._clock()),
            )
        return revision

    def get(self, kind: str, name: str) -> Record | None:
        _check_key(kind, name)
        with self._locked() as conn:
            row = conn.execute(
                "SELECT kind, name, value, revision, updated_at FROM records"
                " WHERE kind = ? AND name = ?",
                (kind, name),
            ).fetchone()
        return None if row is None else self._record(row)

    def list(self, kind: str) -> list[Record]:
        """Every record of ``kind``, sorted by name."""
        _check_key(kind, "-")
        with self._locked() as conn:
            rows = conn.execute(
                "SELECT kind, name, value, revision, updated_at FROM records"
                " WHERE kind = ? ORDER BY name",
                (kind,),
            ).fetchall()
        return [self._record(r) for r in rows]

    def delete(self, kind: str, name: str) -> bool:
        """Remove the record; ``True`` if it existed. Its events are kept."""
        _check_key(kind, name)
        with self._transaction() as conn:
            cur = conn.execute("DELETE FROM records WHERE kind = ? AND name = ?", (kind, name))
            if cur.rowcount:
                _next_revision(conn)
        return cur.rowcount > 0

    def revision(self) -> int:
        """The store's latest revision (0 for a fresh store)."""
        with self._locked() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        return int(row[0])

    # ------------------------------------------------------------------- events

    def append_event(self, kind: str, name: str, event: Mapping[str, Any]) -> int:
        """Append to the event log of ``(kind, name)``; return the event's sequence number."""
        _check_key(kind, name)
        body = encode(event, f"event for {kind}/{name}")
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT INTO events (kind, name, at, body) VALUES (?, ?, ?, ?)",
                (kind, name, self._clock(), body),
            )
        seq = cur.lastrowid
        assert seq is not None
        return seq

    def trim_events(self, max_age_s: float, max_per_key: int) -> int:
        """Deletes events older than ``max_age_s`` and all but the newest ``max_per_key``
        of each (kind, name); returns how many went."""
        if max_age_s <= 0 or max_per_key < 1:
            raise StateError("trim_events needs a positive age and count")
        cutoff = self._clock() - max_age_s
        with self._transaction() as conn:
            old = conn.execute("DELETE FROM events WHERE at < ?", (cutoff,)).rowcount
            extra = conn.execute(
                """DELETE FROM events WHERE seq IN (
                       SELECT seq FROM (
                           SELECT seq, ROW_NUMBER() OVER (
                               PARTITION BY kind, name ORDER BY seq DESC) AS newer
                           FROM events)
                       WHERE newer > ?)""",
                (max_per_key,),
            ).rowcount
        return int(old) + int(extra)

    def events(self, kind: str, name: str, limit: int = 100) -> builtins.list[Event]:
        """The latest ``limit`` events of ``(kind, name)``, oldest first."""
        _check_key(kind, name)
        if limit < 0:
            raise StateError(f"limit must be >= 0, got {limit}")
        with self._locked() as conn:
            rows = conn.execute(
                "SELECT seq, at, body FROM events WHERE kind = ? AND name = ?"
                " ORDER BY seq DESC LIMIT ?",
                (kind, name, limit),
            ).fetchall()
        return [
            Event(kind=kind, name=name, seq=int(seq), at=float(at), event=self._decode(body))
            for seq, at, body in reversed(rows)
        ]

    # ------------------------------------------------------------------ helpers

    def _record(self, row: tuple[Any, ...]) -> Record:
        kind, name, value, revision, updated_at = row
        return Record(
            kind=kind,
            name=name,
            value=self._decode(value),
            revision=int(revision),
            updated_at=float(updated_at),
        )

    def _decode(self, body: str) -> Mapping[str, Any]:
        try:
            value = json.loads(body)
        except ValueError as exc:
            raise StateError(f"{self._path}: stored value is not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise StateError(f"{self._path}: stored value is not a JSON object")
        return value

    def _locked(self) -> _Locked:
        if self._closed:
            raise StateError(f"{self._path}: state store is closed")
        return _Locked(self._lock, self._conn, self._path, transaction=False)

    def _transaction(self) -> _Locked:
        if self._closed:
            raise StateError(f"{self._path}: state store is closed")
        return _Locked(self._lock, self._conn, self._path, transaction=True)


class _Locked:
    """Holds the store's lock; with ``transaction`` wraps the body in BEGIN IMMEDIATE."""

    def __init__(
        self, lock: threading.Lock, conn: sqlite3.Connection, path: Path, *, transaction: bool
    ) -> None:
        self._lock = lock
        self._conn = conn
        self._path = path
        self._transaction = transaction

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        if self._transaction:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                self._lock.release()
                raise StateError(f"{self._path}: cannot start a transaction: {exc}") from exc
        return self._conn

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        try:
            if self._transaction:
                if exc_type is None:
                    self._conn.execute("COMMIT")
                else:
                    self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise StateError(f"{self._path}: write failed: {exc}") from exc
        finally:
            self._lock.release()


def _next_revision(conn: sqlite3.Connection) -> int:
    row = conn.execute(
        "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"
        " WHERE key = 'revision' RETURNING value"
    ).fetchone()
    return int(row[0])


def _prepare(conn: sqlite3.Connection, path: Path, clock: Callable[[], float]) -> None:
    """Check the file is ours (or empty), set pragmas, apply pending migrations."""
    try:
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        tables = {
            str(r[0])
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{path}: not a Sluice state file (unreadable: {exc})") from exc
    if app_id != APPLICATION_ID and (app_id != 0 or tables):
        raise StateError(
            f"{path}: not a Sluice state file (application_id={app_id:#x},"
            f" tables={sorted(tables)}); refusing to modify it"
        )
    try:
        mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        if mode.lower() != "wal":
            raise StateError(f"{path}: cannot switch the state file to WAL (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        if app_id == APPLICATION_ID:
            check = str(conn.execute("PRAGMA quick_check").fetchone()[0])
            if check != "ok":
                raise StateError(f"{path}: state file is damaged: {check}")
        _migrate(conn, path, clock)
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{path}: state file is damaged or unreadable: {exc}") from exc


def _migrate(conn: sqlite3.Connection, path: Path, clock: Callable[[], float]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_MIGRATIONS_TABLE)
        applied = {int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")}
        known = {version for version, _, _ in MIGRATIONS}
        newer = sorted(applied - known)
        if newer:
            raise StateError(
                f"{path}: state file has schema version {max(newer)}, newer than this"
                f" Sluice understands (up to {max(known)})"
            )
        for version, name, statements in MIGRATIONS:
            if version in applied:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (version, name, clock()),
            )
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise

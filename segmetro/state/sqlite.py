"""SQLite state: one file on one machine, the default (design §6).

Metronome cannot undo anything and silently ignores a second event with a known
``transaction_id``, so the state is the only record of what was sent. It must survive
``kill -9`` at any instant: the database runs in WAL mode, and every flush of ledger entries and
checkpoints is one transaction, so a crash leaves either all of a flush or none of it. The lock
is one per file: one run at a time (shards running at once need a PostgreSQL state).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from segmetro.errors import ConfigError, LockedError, StateError
from segmetro.files import create_private
from segmetro.state.records import (
    _LEDGER_COLUMNS,
    DEFAULT_API_URL,
    LockInfo,
    _now,
    normalize_api_url,
)
from segmetro.state.store import Row, SqlState, new_account_key

#: Version of the schema this code writes; older files are migrated on open.
SCHEMA_VERSION = 3

# Version 1: the first, minimal schema (no payloads, options, hosts or done flags).
_SCHEMA_V1 = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY, command TEXT NOT NULL, started_at TEXT NOT NULL,
    ended_at TEXT, exit_code INTEGER
);
CREATE TABLE checkpoints (
    source TEXT PRIMARY KEY, identity TEXT NOT NULL, line INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE ledger (
    transaction_id TEXT PRIMARY KEY, digest BLOB NOT NULL, sent_at TEXT NOT NULL, run_id TEXT
);
CREATE TABLE lock (
    id INTEGER PRIMARY KEY CHECK (id = 1), run_id TEXT NOT NULL, pid INTEGER NOT NULL,
    acquired_at TEXT NOT NULL
);
"""

_SCHEMA_V2 = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY, command TEXT NOT NULL, started_at TEXT NOT NULL,
    ended_at TEXT, exit_code INTEGER,
    options TEXT NOT NULL DEFAULT '{}', counts TEXT, pid INTEGER, host TEXT
);
CREATE TABLE checkpoints (
    source TEXT PRIMARY KEY, identity TEXT NOT NULL, line INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0, run_id TEXT
);
CREATE TABLE ledger (
    transaction_id TEXT PRIMARY KEY, digest BLOB NOT NULL, sent_at TEXT NOT NULL, run_id TEXT,
    payload TEXT, mapping TEXT, event_type TEXT, event_day TEXT, event_time TEXT
);
CREATE INDEX ledger_event_time ON ledger (event_time);
CREATE TABLE lock (
    id INTEGER PRIMARY KEY CHECK (id = 1), run_id TEXT NOT NULL, pid INTEGER NOT NULL,
    acquired_at TEXT NOT NULL,
    host TEXT NOT NULL DEFAULT ''
);
"""

_MIGRATE_1_TO_2 = """
ALTER TABLE runs ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
ALTER TABLE runs ADD COLUMN counts TEXT;
ALTER TABLE runs ADD COLUMN pid INTEGER;
ALTER TABLE runs ADD COLUMN host TEXT;
ALTER TABLE checkpoints ADD COLUMN done INTEGER NOT NULL DEFAULT 0;
ALTER TABLE checkpoints ADD COLUMN run_id TEXT;
ALTER TABLE ledger ADD COLUMN payload TEXT;
ALTER TABLE ledger ADD COLUMN mapping TEXT;
ALTER TABLE ledger ADD COLUMN event_type TEXT;
ALTER TABLE ledger ADD COLUMN event_day TEXT;
ALTER TABLE ledger ADD COLUMN event_time TEXT;
CREATE INDEX ledger_event_time ON ledger (event_time);
ALTER TABLE lock ADD COLUMN host TEXT NOT NULL DEFAULT '';
"""

# Version 3: checkpoints, ledger and undeliverable events belong to a destination. The parts
# the 2 -> 3 migration creates on their own have names.
_V3_DESTINATIONS = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE destinations (
    id INTEGER PRIMARY KEY, api_url TEXT NOT NULL, account TEXT,
    created_at TEXT NOT NULL, claimed_at TEXT,
    UNIQUE (api_url, account)
);
"""

_V3_PER_DESTINATION = """
CREATE TABLE checkpoints (
    destination INTEGER NOT NULL REFERENCES destinations (id),
    source TEXT NOT NULL, identity TEXT NOT NULL, line INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0, run_id TEXT,
    PRIMARY KEY (destination, source)
);
CREATE TABLE ledger (
    destination INTEGER NOT NULL REFERENCES destinations (id),
    transaction_id TEXT NOT NULL, digest BLOB NOT NULL, sent_at TEXT NOT NULL, run_id TEXT,
    payload TEXT, mapping TEXT, event_type TEXT, event_day TEXT, event_time TEXT,
    PRIMARY KEY (destination, transaction_id)
);
CREATE INDEX ledger_event_time ON ledger (destination, event_time);
CREATE TABLE undeliverable (
    destination INTEGER NOT NULL REFERENCES destinations (id),
    transaction_id TEXT NOT NULL, run_id TEXT NOT NULL, recorded_at TEXT NOT NULL,
    PRIMARY KEY (destination, transaction_id, run_id)
);
"""

_SCHEMA_V3 = (
    _V3_DESTINATIONS
    + """
CREATE TABLE runs (
    id TEXT PRIMARY KEY, command TEXT NOT NULL, started_at TEXT NOT NULL,
    ended_at TEXT, exit_code INTEGER,
    options TEXT NOT NULL DEFAULT '{}', counts TEXT, pid INTEGER, host TEXT,
    destination INTEGER REFERENCES destinations (id)
);
CREATE TABLE lock (
    id INTEGER PRIMARY KEY CHECK (id = 1), run_id TEXT NOT NULL, pid INTEGER NOT NULL,
    acquired_at TEXT NOT NULL,
    host TEXT NOT NULL DEFAULT ''
);
"""
    + _V3_PER_DESTINATION
)

#: The HMAC key of account fingerprints, in ``meta``.


def _migrate_2_to_3(conn: sqlite3.Connection) -> None:
    """Give every existing checkpoint and ledger row a destination whose account is unknown.

    A row goes to the API URL of the replay run that wrote it (``runs.options``); rows of runs
    that recorded none go to the URL of the latest replay run that did, else to
    ``DEFAULT_API_URL``. The first real run to such a URL claims the destination for its token.
    """
    _run_script(conn, _V3_DESTINATIONS)
    new_account_key(_SqliteWriter(conn))
    conn.execute("ALTER TABLE runs ADD COLUMN destination INTEGER REFERENCES destinations (id)")
    run_urls: dict[str, str] = {}
    fallback = DEFAULT_API_URL
    rows = conn.execute(
        "SELECT id, options FROM runs WHERE command = 'replay' ORDER BY started_at, id"
    ).fetchall()
    order = {run_id: n for n, (run_id, _) in enumerate(rows)}
    for run_id, options in rows:
        url = _url_of_options(options)
        if url is not None:
            run_urls[run_id] = fallback = url
    by_url: dict[str, int] = {}

    def destination_of(run_id: str | None) -> int:
        url = run_urls.get(run_id or "", fallback)
        if url not in by_url:
            cur = conn.execute(
                "INSERT INTO destinations (api_url, account, created_at) VALUES (?, NULL, ?)",
                (url, _now()),
            )
            by_url[url] = int(cur.lastrowid or 0)
        return by_url[url]

    for table in ("checkpoints", "ledger"):
        conn.execute(f"ALTER TABLE {table} RENAME TO {table}_v2")
    conn.execute("DROP INDEX IF EXISTS ledger_event_time")
    _run_script(conn, _V3_PER_DESTINATION)
    conn.execute("CREATE TABLE run_destination_v2 (run_id TEXT PRIMARY KEY, destination INTEGER)")
    run_ids = {
        r[0]
        for table in ("checkpoints_v2", "ledger_v2")
        for r in conn.execute(f"SELECT DISTINCT run_id FROM {table}")
    }
    conn.executemany(
        "INSERT INTO run_destination_v2 VALUES (?, ?)",
        [
            (run_id or "", destination_of(run_id))
            for run_id in sorted(run_ids, key=lambda r: (order.get(r, len(order)), str(r)))
        ],
    )
    join = "JOIN run_destination_v2 AS r ON r.run_id = coalesce(old.run_id, '')"
    conn.execute(
        "INSERT INTO checkpoints (destination, source, identity, line, updated_at, done, run_id) "
        "SELECT r.destination, old.source, old.identity, old.line, old.updated_at, old.done, "
        f"old.run_id FROM checkpoints_v2 AS old {join}"
    )
    columns = ", ".join(f"old.{c.strip()}" for c in _LEDGER_COLUMNS.split(","))
    conn.execute(
        f"INSERT INTO ledger (destination, {_LEDGER_COLUMNS}) "
        f"SELECT r.destination, {columns} FROM ledger_v2 AS old {join}"
    )
    conn.executemany(
        "UPDATE runs SET destination = ? WHERE id = ?",
        [(by_url[url], run_id) for run_id, url in run_urls.items() if url in by_url],
    )
    conn.execute("DROP TABLE run_destination_v2")
    conn.execute("DROP TABLE checkpoints_v2")
    conn.execute("DROP TABLE ledger_v2")


def _url_of_options(options: str | None) -> str | None:
    try:
        value = orjson.loads(options or "{}").get("api_url")
        return normalize_api_url(value) if isinstance(value, str) else None
    except (orjson.JSONDecodeError, AttributeError, ConfigError):
        return None


#: ``_MIGRATIONS[v]`` turns a version-v file into version v + 1, inside the open transaction.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: lambda conn: _run_script(conn, _MIGRATE_1_TO_2),
    2: _migrate_2_to_3,
}


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (a zombie counts as alive)."""
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate it on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


class _SqliteWriter:
    """The ``Writer`` of an open SQLite transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._conn.execute(sql, params).fetchall()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        return self._conn.executemany(sql, rows).rowcount

    def insert_id(self, sql: str, params: Sequence[Any]) -> int:
        return int(self._conn.execute(sql, params).lastrowid or 0)


class StateDB(SqlState):
    """One open SQLite state file. Not for concurrent use by several threads at once."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self.took_over = None
        self.claimed = None

    @property
    def where(self) -> str:
        return str(self.path)

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False) -> StateDB:
        """Open or create a state file, migrating an older schema; refuse anything else.

        ``readonly`` (dry runs, ``status``, ``verify``) never creates, migrates or writes the
        file: it must exist, and a file of an older schema is migrated in a copy in memory.
        """
        path = Path(path)
        if path.is_dir():
            raise StateError(f"state file {path} is a directory: give the state file's path.")
        if readonly:
            return cls._open_readonly(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create the directory of state file {path}: {exc}") from exc
        try:
            create_private(path)
            conn = sqlite3.connect(
                path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
        except OSError as exc:
            raise StateError(f"cannot open state file {path}: {exc.strerror}") from None
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state file {path}: {exc}") from exc
        try:
            cls._prepare(conn, path)
        except BaseException:
            conn.close()
            raise
        return cls(conn, path)

    @classmethod
    def _open_readonly(cls, path: Path) -> StateDB:
        if not path.is_file():
            raise StateError(f"state file {path} does not exist")
        uri = f"file:{quote(str(path.resolve()))}?mode=ro"
        try:
            conn = sqlite3.connect(
                uri, uri=True, timeout=10.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state file {path}: {exc}") from exc
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateError(_newer_message(path, version))
            if version < SCHEMA_VERSION:
                memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                try:
                    conn.backup(memory)
                    _migrate(memory, path)
                except BaseException:
                    memory.close()
                    raise
                conn.close()
                conn = memory
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StateError(f"{path} is not a usable segmetro state file: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return cls(conn, path)

    @staticmethod
    def _prepare(conn: sqlite3.Connection, path: Path) -> None:
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateError(_newer_message(path, version))
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            if version < SCHEMA_VERSION:
                _migrate(conn, path)
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{path} is not a usable segmetro state file: {exc}") from exc

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> StateDB:
        return self

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._conn.execute(sql, params).fetchall()

    @contextmanager
    def _transaction(self, *, serialized: bool = False) -> Iterator[_SqliteWriter]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``: all or nothing, even under ``kill -9``.

        Every write transaction of a file is already serialized by SQLite.
        """
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StateError(f"cannot write state file {self.path}: {exc}") from exc
        try:
            yield _SqliteWriter(conn)
        except sqlite3.OperationalError as exc:  # disk full, read-only file: a clear error
            conn.execute("ROLLBACK")
            raise StateError(f"cannot write state file {self.path}: {exc}") from exc
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise StateError(f"cannot write state file {self.path}: {exc}") from exc

    # -- lock -------------------------------------------------------------------------------

    def lock_holder(self) -> LockInfo | None:
        row = self._conn.execute("SELECT run_id, pid, host, acquired_at FROM lock").fetchone()
        if row is None:
            return None
        return LockInfo(row[0], row[1], row[2], row[3], shard=self._shard_of_run(row[0]))

    def _shard_of_run(self, run_id: str) -> str | None:
        row = self._conn.execute("SELECT options FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        try:
            shard = orjson.loads(row[0] or "{}").get("shard")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return shard if isinstance(shard, str) else None

    def locks(self) -> list[LockInfo]:
        holder = self.lock_holder()
        return [] if holder is None else [holder]

    def acquire_lock(self, run_id: str, shard: str | None = None) -> LockInfo | None:
        """Take the lock for ``run_id``; returns the stale lock it took over, if any.

        The lock is the file's, whatever ``shard``: one run at a time. A lock held by a live
        process, or by a process on another host (whose liveness cannot be checked), raises
        :class:`LockedError`. A lock left on this host by a process that no longer exists is
        taken over; the old holder is returned and kept in ``took_over``.
        """
        host = socket.gethostname()
        pid = os.getpid()
        stale: LockInfo | None = None
        with self._transaction() as tx:
            rows = tx.query("SELECT run_id, pid, host, acquired_at FROM lock")
            if rows:
                holder = LockInfo(*rows[0])
                if holder.run_id == run_id and holder.pid == pid and holder.host == host:
                    return None
                if holder.host != host or _pid_alive(holder.pid):
                    together = (
                        " An SQLite state serves one run at a time: shards that run at once "
                        "need a PostgreSQL state (--state postgresql://...)."
                        if shard
                        else ""
                    )
                    raise LockedError(
                        f"state file {self.path} is locked by {holder.describe()}; another "
                        "segmetro run is using it. Wait for it to finish (a lock left by a "
                        "crashed run on the same host is taken over automatically; one left on "
                        f"another host is removed with `segmetro unlock --state {self.path}`)."
                        + together
                    )
                stale = holder
            tx.execute(
                "INSERT OR REPLACE INTO lock (id, run_id, pid, host, acquired_at) "
                "VALUES (1, ?, ?, ?, ?)",
                (run_id, pid, host, _now()),
            )
        self.took_over = stale
        return stale

    def release_lock(self, run_id: str) -> None:
        """Release the lock if ``run_id`` holds it; a no-op otherwise."""
        with self._transaction() as tx:
            tx.execute("DELETE FROM lock WHERE run_id = ?", (run_id,))

    def break_lock(self) -> LockInfo | None:
        """Remove a lock whose holder cannot be checked (another host); returns who held it.

        A holder alive on this host keeps its lock: breaking it would let two runs overlap.
        """
        holder = self.lock_holder()
        if holder is None:
            return None
        if holder.host == socket.gethostname() and _pid_alive(holder.pid):
            raise LockedError(
                f"state file {self.path} is locked by {holder.describe()}, which is still "
                "running; stop it instead of unlocking."
            )
        with self._transaction() as tx:
            tx.execute("DELETE FROM lock WHERE run_id = ?", (holder.run_id,))
        return holder

    def break_locks(self) -> list[LockInfo]:
        """``break_lock`` as a list, like a state with a lock per shard."""
        holder = self.break_lock()
        return [] if holder is None else [holder]


def _newer_message(path: Path, version: int) -> str:
    return (
        f"state file {path} was written by a newer segmetro (schema version {version}; this "
        f"version understands up to {SCHEMA_VERSION}): upgrade segmetro to use it"
    )


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the file to ``SCHEMA_VERSION`` in one transaction (re-checked under the lock)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(_newer_message(path, version))
        if version == 0:
            tables = {
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%'"
                )
            }
            if tables:
                raise StateError(
                    f"{path} is an SQLite file but not a segmetro state file "
                    f"(it has tables {', '.join(sorted(tables))})"
                )
            _run_script(conn, _SCHEMA_V3)
            new_account_key(_SqliteWriter(conn))
        else:
            while version < SCHEMA_VERSION:
                _MIGRATIONS[version](conn)
                version += 1
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run statements one by one: ``executescript`` would commit the open transaction."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)

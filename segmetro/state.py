"""SQLite state: runs, destinations, checkpoints, the sent ledger and the run lock (design §6).

Metronome cannot undo anything and silently ignores a second event with a known
``transaction_id``, so this file is the only record of what was sent. It must survive
``kill -9`` at any instant: the database runs in WAL mode, and every flush of ledger entries and
checkpoints is one transaction, so a crash leaves either all of a flush or none of it.

What was sent is only true of one *destination*: an API base URL and the Metronome account
behind the token. Checkpoints, the ledger and undeliverable events are kept per destination
(:class:`DestinationState` is the view of one), so a rehearsal against a fake or a sandbox never
makes a production run skip events. The account is known by an HMAC-SHA256 of the token under
a random key kept in the file (``meta``): the token itself, or anything it could be recovered
from, is never stored. The lock stays per file.

Timestamps are stored and returned as RFC 3339 UTC strings with milliseconds (the same normal
form as payload timestamps), so they compare correctly as text.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket
import sqlite3
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import orjson

from segmetro.dedup import canonical_bytes, digest_canonical
from segmetro.errors import ConfigError, LockedError, StateError
from segmetro.files import create_private
from segmetro.models import format_timestamp as format_time

__all__ = [
    "DEFAULT_API_URL",
    "SCHEMA_VERSION",
    "UNRECORDED_PAYLOAD",
    "Checkpoint",
    "CheckpointTracker",
    "Destination",
    "DestinationState",
    "DestinationSummary",
    "LedgerEntry",
    "LockInfo",
    "RunInfo",
    "StateDB",
    "StateStore",
    "UndeliverableRun",
    "format_time",
    "new_run_id",
    "normalize_api_url",
]

#: Version of the schema this code writes; older files are migrated on open.
SCHEMA_VERSION = 3

#: Where rows of an older file go when no replay run recorded its ``--api-url``.
DEFAULT_API_URL = "https://api.metronome.com"

#: Shown instead of a field diff for a ledger entry from schema v1, which kept no payload.
UNRECORDED_PAYLOAD = (
    "(the payload sent then was not recorded by this older state file; only its digest differs)"
)

#: Host parameters per ``IN (...)`` query: below SQLite's historical limit of 999.
_IN_CHUNK = 500

#: Option names never written to the runs table, whatever the caller passes.
_SECRET_WORDS = ("token", "secret", "password", "authorization", "credential", "api_key")

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
_ACCOUNT_KEY = "account_hmac_key"


def _migrate_2_to_3(conn: sqlite3.Connection) -> None:
    """Give every existing checkpoint and ledger row a destination whose account is unknown.

    A row goes to the API URL of the replay run that wrote it (``runs.options``); rows of runs
    that recorded none go to the URL of the latest replay run that did, else to
    ``DEFAULT_API_URL``. The first real run to such a URL claims the destination for its token.
    """
    _run_script(conn, _V3_DESTINATIONS)
    _new_account_key(conn)
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


def _new_account_key(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?)", (_ACCOUNT_KEY, secrets.token_hex(32))
    )


#: ``_MIGRATIONS[v]`` turns a version-v file into version v + 1, inside the open transaction.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: lambda conn: _run_script(conn, _MIGRATE_1_TO_2),
    2: _migrate_2_to_3,
}


def normalize_api_url(url: str) -> str:
    """The identity of an API base URL, so that spellings of one URL are one destination.

    Scheme, lower-case host, port (unless the scheme's default) and path without a trailing
    slash. User info, query and fragment are dropped: credentials in a URL never reach the file.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"API URL {url!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        raise ConfigError(f"API URL must start with http:// or https://, got {url!r}")
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path.rstrip('/')}"


def _now() -> str:
    return format_time(datetime.now(UTC))


def new_run_id() -> str:
    """Sortable by start time, unique enough for concurrent starts on many hosts."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _scrub(options: Mapping[str, Any]) -> dict[str, Any]:
    """Drop anything that looks like a credential, recursively: tokens never reach the file."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if any(word in str(key).lower() for word in _SECRET_WORDS):
            continue
        out[str(key)] = _scrub(value) if isinstance(value, Mapping) else value
    return out


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


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


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """How far one source object is done: every event of lines ≤ ``line`` is resolved."""

    source: str
    identity: str
    line: int
    done: bool = False
    updated_at: str | None = None
    run_id: str | None = None
    #: Id of the destination it belongs to (set on checkpoints read from the file).
    destination: int | None = None


@dataclass(slots=True)
class LedgerEntry:
    """One delivered event: what Metronome now holds for this ``transaction_id``.

    The payload is kept as its canonical JSON text and parsed only when asked for: lookups run
    for every event of a re-run, diffs only for the few that changed. Not frozen, because a
    frozen dataclass costs ~3x more to build on this hot path.
    """

    transaction_id: str
    digest: bytes
    payload_json: str | None = None  # None only for entries migrated from schema v1
    sent_at: str | None = None
    run_id: str | None = None
    mapping: str | None = None
    event_type: str | None = None
    event_day: str | None = None
    event_time: str | None = None

    @property
    def payload(self) -> dict[str, Any] | None:
        """The payload that was sent, or None for entries from before payloads were kept."""
        return None if self.payload_json is None else orjson.loads(self.payload_json)

    @classmethod
    def from_payload(
        cls,
        payload: Mapping[str, Any],
        *,
        mapping: str | None = None,
        run_id: str | None = None,
        sent_at: str | None = None,
        canonical: bytes | None = None,
    ) -> LedgerEntry:
        """Build an entry from a mapped payload; pass ``canonical`` if the deduper made it."""
        if canonical is None:
            canonical = canonical_bytes(payload)
        timestamp = payload.get("timestamp")
        event_time = timestamp if isinstance(timestamp, str) else None
        event_type = payload.get("event_type")
        return cls(
            str(payload["transaction_id"]),
            digest_canonical(canonical),
            canonical.decode(),
            sent_at,
            run_id,
            mapping,
            None if event_type is None else str(event_type),
            event_time[:10] if event_time else None,
            event_time,
        )


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One row of the runs table."""

    id: str
    command: str
    started_at: str
    ended_at: str | None
    exit_code: int | None
    options: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] | None = None
    pid: int | None = None
    host: str | None = None
    destination: int | None = None


@dataclass(frozen=True, slots=True)
class Destination:
    """Where events were sent: an API base URL and the account behind the token.

    ``account`` is the hex HMAC-SHA256 of the token under this file's random key; None for a
    destination migrated from an older file, until the first run to its URL claims it.
    """

    id: int
    api_url: str
    account: str | None
    created_at: str
    claimed_at: str | None = None

    @property
    def fingerprint(self) -> str:
        """Short enough to show; meaningless outside this file, whose HMAC key is random."""
        return self.account[:8] if self.account is not None else "unclaimed"

    def describe(self) -> str:
        return f"destination #{self.id} {self.api_url} (account {self.fingerprint})"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "api_url": self.api_url,
            "account": self.fingerprint if self.account is not None else None,
            "claimed_at": self.claimed_at,
        }


@dataclass(frozen=True, slots=True)
class UndeliverableRun:
    """The undeliverable events one run recorded for a destination, and how many were sent since."""

    run_id: str
    events: int
    delivered_since: int

    @property
    def still_open(self) -> int:
        return self.events - self.delivered_since


@dataclass(frozen=True, slots=True)
class DestinationSummary:
    """What ``status`` shows of one destination."""

    destination: Destination
    ledger: int
    checkpoints: list[Checkpoint]
    undeliverable: list[UndeliverableRun]


@dataclass(frozen=True, slots=True)
class LockInfo:
    """Who holds (or held) the lock."""

    run_id: str
    pid: int
    host: str
    acquired_at: str

    def describe(self) -> str:
        host = self.host or "unknown host"
        return f"run {self.run_id} (pid {self.pid} on host {host}) since {self.acquired_at}"


_LEDGER_COLUMNS = (
    "transaction_id, digest, payload, sent_at, run_id, mapping, event_type, event_day, event_time"
)


def _ledger_row(row: Sequence[Any]) -> LedgerEntry:
    return LedgerEntry(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8])


class StateDB:
    """One open state file. Not for concurrent use by several threads at once."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        #: Set by :meth:`acquire_lock` when it took over a lock left by a dead process.
        self.took_over: LockInfo | None = None
        #: Set by :meth:`destination` when it bound an unclaimed destination to a token.
        self.claimed: Destination | None = None

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

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``: all or nothing, even under ``kill -9``."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StateError(f"cannot write state file {self.path}: {exc}") from exc
        try:
            yield conn
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
        return None if row is None else LockInfo(row[0], row[1], row[2], row[3])

    def acquire_lock(self, run_id: str) -> LockInfo | None:
        """Take the lock for ``run_id``; returns the stale lock it took over, if any.

        A lock held by a live process, or by a process on another host (whose liveness cannot
        be checked), raises :class:`LockedError`. A lock left on this host by a process that no
        longer exists is taken over; the old holder is returned and kept in ``took_over``.
        """
        host = socket.gethostname()
        pid = os.getpid()
        stale: LockInfo | None = None
        with self._transaction() as conn:
            row = conn.execute("SELECT run_id, pid, host, acquired_at FROM lock").fetchone()
            if row is not None:
                holder = LockInfo(row[0], row[1], row[2], row[3])
                if holder.run_id == run_id and holder.pid == pid and holder.host == host:
                    return None
                if holder.host != host or _pid_alive(holder.pid):
                    raise LockedError(
                        f"state file {self.path} is locked by {holder.describe()}; another "
                        "segmetro run is using it. Wait for it to finish (a lock left by a "
                        "crashed run on the same host is taken over automatically; one left on "
                        f"another host is removed with `segmetro unlock --state {self.path}`)."
                    )
                stale = holder
            conn.execute(
                "INSERT OR REPLACE INTO lock (id, run_id, pid, host, acquired_at) "
                "VALUES (1, ?, ?, ?, ?)",
                (run_id, pid, host, _now()),
            )
        self.took_over = stale
        return stale

    def release_lock(self, run_id: str) -> None:
        """Release the lock if ``run_id`` holds it; a no-op otherwise."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM lock WHERE run_id = ?", (run_id,))

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
        with self._transaction() as conn:
            conn.execute("DELETE FROM lock WHERE run_id = ?", (holder.run_id,))
        return holder

    # -- runs -------------------------------------------------------------------------------

    def begin_run(
        self,
        command: str,
        options: Mapping[str, Any],
        *,
        run_id: str | None = None,
        destination: Destination | None = None,
    ) -> str:
        """Record the start of a run; credential-like options are dropped before writing."""
        run_id = run_id or new_run_id()
        dest = None if destination is None else destination.id
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO runs (id, command, started_at, options, pid, host, destination) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, command, _now(), _dumps(_scrub(options)), os.getpid(),
                 socket.gethostname(), dest),
            )  # fmt: skip
        return run_id

    def end_run(self, run_id: str, counts: Mapping[str, Any], exit_code: int) -> None:
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE runs SET ended_at = ?, counts = ?, exit_code = ? WHERE id = ?",
                (_now(), _dumps(dict(counts)), exit_code, run_id),
            )
            if cur.rowcount != 1:
                raise StateError(f"no run {run_id} in state file {self.path}")

    def runs(self, limit: int = 20) -> list[RunInfo]:
        """The latest runs, newest first."""
        rows = self._conn.execute(
            "SELECT id, command, started_at, ended_at, exit_code, options, counts, pid, host, "
            "destination FROM runs ORDER BY started_at DESC, id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            RunInfo(
                id=r[0],
                command=r[1],
                started_at=r[2],
                ended_at=r[3],
                exit_code=r[4],
                options=orjson.loads(r[5]) if r[5] else {},
                counts=None if r[6] is None else orjson.loads(r[6]),
                pid=r[7],
                host=r[8],
                destination=r[9],
            )
            for r in rows
        ]

    # -- destinations -----------------------------------------------------------------------

    def account_of(self, token: str) -> str:
        """The hex HMAC of a token under this file's key: who the token is, never what it is."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (_ACCOUNT_KEY,)).fetchone()
        if row is None:
            raise StateError(f"state file {self.path} has no account key; it is damaged")
        return hmac.new(bytes.fromhex(row[0]), token.encode(), hashlib.sha256).hexdigest()

    def destinations(self, api_url: str | None = None) -> list[Destination]:
        """Every destination of the file (or of one API URL), oldest first."""
        sql = "SELECT id, api_url, account, created_at, claimed_at FROM destinations"
        params: tuple[str, ...] = ()
        if api_url is not None:
            sql += " WHERE api_url = ?"
            params = (normalize_api_url(api_url),)
        rows = self._conn.execute(sql + " ORDER BY id", params).fetchall()
        return [Destination(*r) for r in rows]

    def find_destination(self, api_url: str, token: str) -> Destination | None:
        """The destination a run with this URL and token would use, without writing anything.

        That is the one bound to the token's account, else the unclaimed one of that URL
        (migrated from an older file), which such a run would claim.
        """
        url = normalize_api_url(api_url)
        account = self.account_of(token)
        unclaimed = None
        for dest in self.destinations(url):
            if dest.account == account:
                return dest
            if dest.account is None:
                unclaimed = dest
        return unclaimed

    def destination(self, api_url: str, token: str) -> Destination:
        """The destination of a real run: found, claimed, or created.

        Claiming binds an unclaimed destination to this token's account; the claimed one is
        also kept in ``claimed`` so the caller can say so.
        """
        url = normalize_api_url(api_url)
        account = self.account_of(token)
        self.claimed = None
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT id, api_url, account, created_at, claimed_at FROM destinations "
                "WHERE api_url = ? AND (account = ? OR account IS NULL) ORDER BY account IS NULL",
                (url, account),
            ).fetchall()
            if rows and rows[0][2] == account:
                return Destination(*rows[0])
            now = _now()
            if rows:
                conn.execute(
                    "UPDATE destinations SET account = ?, claimed_at = ? WHERE id = ?",
                    (account, now, rows[0][0]),
                )
                found = Destination(rows[0][0], url, account, rows[0][3], now)
                self.claimed = found
                return found
            cur = conn.execute(
                "INSERT INTO destinations (api_url, account, created_at) VALUES (?, ?, ?)",
                (url, account, now),
            )
            return Destination(int(cur.lastrowid or 0), url, account, now)

    def unclaim(self, destination: Destination) -> None:
        """Give back a claim made by a run that failed before Metronome accepted anything.

        A refused or mistyped token must not take over the checkpoints and ledger of the
        account that wrote them.
        """
        with self._transaction() as conn:
            conn.execute(
                "UPDATE destinations SET account = NULL, claimed_at = NULL WHERE id = ?",
                (destination.id,),
            )

    def for_destination(self, destination: Destination) -> DestinationState:
        """The checkpoints, ledger and undeliverable events of one destination."""
        return DestinationState(self, destination)

    def summaries(self) -> list[DestinationSummary]:
        """Every destination with its ledger size, checkpoints and undeliverable runs."""
        out = []
        for dest in self.destinations():
            view = self.for_destination(dest)
            out.append(
                DestinationSummary(
                    destination=dest,
                    ledger=view.ledger_size(),
                    checkpoints=view.checkpoints(),
                    undeliverable=view.undeliverable(),
                )
            )
        return out

    # -- the whole file -----------------------------------------------------------------------

    def checkpoints(self) -> list[Checkpoint]:
        """Checkpoints of every destination, by destination then source."""
        rows = self._conn.execute(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints ORDER BY destination, source"
        ).fetchall()
        return [_checkpoint_row(r) for r in rows]

    def ledger_size(self) -> int:
        """Delivered events of every destination."""
        return int(self._conn.execute("SELECT count(*) FROM ledger").fetchone()[0])


_CHECKPOINT_COLUMNS = "source, identity, line, done, updated_at, run_id, destination"


class StateStore(Protocol):
    """What a run needs of its state: the seam another backend (e.g. PostgreSQL) plugs into.

    One destination's checkpoints and ledger; ``flush`` writes acknowledged events, the
    checkpoints they allow and undeliverable events in one transaction.
    """

    @property
    def path(self) -> Path: ...

    def checkpoint(self, source: str) -> Checkpoint | None: ...

    def checkpoints(self) -> list[Checkpoint]: ...

    def flush(
        self,
        *,
        delivered: Iterable[LedgerEntry] = (),
        checkpoints: Iterable[Checkpoint] = (),
        undeliverable: Iterable[tuple[str, str | None]] = (),
    ) -> None: ...

    def ledger_lookup(self, transaction_ids: Sequence[str]) -> dict[str, LedgerEntry]: ...

    def ledger_size(self) -> int: ...

    def ledger_sample(self, n: int, *, since: datetime) -> list[LedgerEntry]: ...


class DestinationState:
    """One destination's view of the state: what the pipeline, the plan and verify use.

    Every query and write is confined to the destination, so a run against another URL or
    account starts from zero.
    """

    def __init__(self, db: StateDB, destination: Destination) -> None:
        self.db = db
        self.destination = destination
        self._id = destination.id

    @property
    def path(self) -> Path:
        return self.db.path

    def checkpoint(self, source: str) -> Checkpoint | None:
        row = self.db._conn.execute(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints WHERE destination = ? AND source = ?",
            (self._id, source),
        ).fetchone()
        return None if row is None else _checkpoint_row(row)

    def checkpoints(self) -> list[Checkpoint]:
        rows = self.db._conn.execute(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints WHERE destination = ? ORDER BY source",
            (self._id,),
        ).fetchall()
        return [_checkpoint_row(r) for r in rows]

    def flush(
        self,
        *,
        delivered: Iterable[LedgerEntry] = (),
        checkpoints: Iterable[Checkpoint] = (),
        undeliverable: Iterable[tuple[str, str | None]] = (),
    ) -> None:
        """Write delivered events, the checkpoints they allow and undeliverable events in ONE
        transaction.

        A checkpoint must never be on disk without the ledger entries before it, so callers
        that advance both should use this rather than the separate calls. ``undeliverable``
        holds ``(transaction_id, run_id)`` pairs of events whose retries were exhausted.
        """
        now = _now()
        dest = self._id
        ledger_rows = [
            (
                dest,
                e.transaction_id,
                e.digest,
                e.payload_json,
                e.sent_at or now,
                e.run_id,
                e.mapping,
                e.event_type,
                e.event_day,
                e.event_time,
            )
            for e in delivered
        ]
        checkpoint_rows = [
            (dest, c.source, c.identity, c.line, int(c.done), c.updated_at or now, c.run_id)
            for c in checkpoints
        ]
        undeliverable_rows = [(dest, tid, run_id or "", now) for tid, run_id in undeliverable]
        if not ledger_rows and not checkpoint_rows and not undeliverable_rows:
            return
        with self.db._transaction() as conn:
            # Metronome keeps the first payload for an id, so the ledger does too.
            conn.executemany(
                f"INSERT INTO ledger (destination, {_LEDGER_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (destination, transaction_id) DO NOTHING",
                ledger_rows,
            )
            conn.executemany(
                "INSERT INTO checkpoints (destination, source, identity, line, done, updated_at, "
                "run_id) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (destination, source) DO UPDATE "
                "SET identity = excluded.identity, line = excluded.line, done = excluded.done, "
                "updated_at = excluded.updated_at, run_id = excluded.run_id",
                checkpoint_rows,
            )
            conn.executemany(
                "INSERT INTO undeliverable (destination, transaction_id, run_id, recorded_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                undeliverable_rows,
            )

    def save_checkpoints(self, updates: Iterable[Checkpoint]) -> None:
        self.flush(checkpoints=updates)

    def record_delivered(self, entries: Iterable[LedgerEntry]) -> None:
        self.flush(delivered=entries)

    def ledger_lookup(self, transaction_ids: Sequence[str]) -> dict[str, LedgerEntry]:
        """Entries for the ids that are in the ledger (batched ``IN`` queries)."""
        found: dict[str, LedgerEntry] = {}
        unique = list(dict.fromkeys(transaction_ids))
        conn = self.db._conn
        for start in range(0, len(unique), _IN_CHUNK):
            chunk = unique[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(
                f"SELECT {_LEDGER_COLUMNS} FROM ledger "
                f"WHERE destination = ? AND transaction_id IN ({marks})",
                [self._id, *chunk],
            ):
                found[row[0]] = _ledger_row(row)
        return found

    def ledger_size(self) -> int:
        return int(
            self.db._conn.execute(
                "SELECT count(*) FROM ledger WHERE destination = ?", (self._id,)
            ).fetchone()[0]
        )

    def ledger_sample(self, n: int, *, since: datetime) -> list[LedgerEntry]:
        """Up to ``n`` random entries whose event timestamp is at or after ``since``."""
        rows = self.db._conn.execute(
            f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE destination = ? AND event_time >= ? "
            "ORDER BY random() LIMIT ?",
            (self._id, format_time(since), n),
        ).fetchall()
        return [_ledger_row(r) for r in rows]

    def undeliverable(self) -> list[UndeliverableRun]:
        """Undeliverable events by run, oldest run first, with how many a later run delivered.

        An event counts as delivered since when the ledger holds its ``transaction_id`` with a
        send time after it was recorded undeliverable.
        """
        rows = self.db._conn.execute(
            "SELECT u.run_id, count(*), count(l.transaction_id) FROM undeliverable AS u "
            "LEFT JOIN ledger AS l ON l.destination = u.destination "
            "AND l.transaction_id = u.transaction_id AND l.sent_at >= u.recorded_at "
            "WHERE u.destination = ? GROUP BY u.run_id ORDER BY min(u.recorded_at), u.run_id",
            (self._id,),
        ).fetchall()
        return [UndeliverableRun(r[0], r[1], r[2]) for r in rows]


def _checkpoint_row(row: Sequence[Any]) -> Checkpoint:
    return Checkpoint(
        source=row[0],
        identity=row[1],
        line=row[2],
        done=bool(row[3]),
        updated_at=row[4],
        run_id=row[5],
        destination=row[6],
    )


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
            _new_account_key(conn)
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


# -- in-flight bookkeeping ---------------------------------------------------------------------


class _SourceProgress:
    __slots__ = ("counts", "finished", "last", "order", "reported")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}  # line -> unresolved events, only lines with some
        self.order: deque[int] = deque()  # lines with unresolved events, ascending
        self.last: int | None = None  # highest line registered
        self.finished = False
        self.reported: int | None = None


class CheckpointTracker:
    """Which line of each source is safe to checkpoint, while events resolve in any order.

    The reader registers lines in increasing order with the number of outbound events each
    produced (0 for filtered or rejected lines); each event is later resolved — acknowledged by
    Metronome or written to the rejects file — in any order. Memory is proportional to the
    events in flight, not to the lines read.
    """

    def __init__(self) -> None:
        self._sources: dict[str, _SourceProgress] = {}
        self._pending = 0

    def _progress(self, source: str) -> _SourceProgress:
        progress = self._sources.get(source)
        if progress is None:
            progress = self._sources[source] = _SourceProgress()
        return progress

    def register(self, source: str, line: int, events: int = 0) -> None:
        """Line ``line`` of ``source`` produced ``events`` outbound events still to resolve.

        Registering the current last line again adds events to it.
        """
        if events < 0:
            raise ValueError("events must be >= 0")
        progress = self._progress(source)
        if progress.finished:
            raise ValueError(f"{source} is already finished")
        if progress.last is not None and line < progress.last:
            raise ValueError(f"{source}: line {line} registered after line {progress.last}")
        progress.last = line
        if events:
            if line in progress.counts:
                progress.counts[line] += events
            else:
                progress.counts[line] = events
                progress.order.append(line)
            self._pending += events

    def resolve(self, source: str, line: int, events: int = 1) -> None:
        """``events`` outbound events of that line were acknowledged or rejected."""
        progress = self._sources.get(source)
        remaining = None if progress is None else progress.counts.get(line)
        if progress is None or remaining is None or remaining < events or events < 1:
            raise ValueError(f"{source}:{line} has no {events} unresolved event(s)")
        if remaining == events:
            del progress.counts[line]
            order = progress.order
            while order and order[0] not in progress.counts:
                order.popleft()
        else:
            progress.counts[line] = remaining - events
        self._pending -= events

    def finish(self, source: str) -> None:
        """The reader has handed out every line of ``source``."""
        self._progress(source).finished = True

    def safe_line(self, source: str) -> int | None:
        """Highest line L such that every line ≤ L is fully resolved; None before any line."""
        progress = self._sources.get(source)
        if progress is None or progress.last is None:
            return None
        if progress.order:
            return progress.order[0] - 1
        return progress.last

    def is_done(self, source: str) -> bool:
        """Finished reading and nothing left in flight."""
        progress = self._sources.get(source)
        return progress is not None and progress.finished and not progress.order

    def pending(self, source: str | None = None) -> int:
        """Unresolved events, for one source or all."""
        if source is None:
            return self._pending
        progress = self._sources.get(source)
        return 0 if progress is None else sum(progress.counts.values())

    def advanced(self) -> dict[str, int]:
        """Sources whose safe line moved since the last call, with the new safe line."""
        out: dict[str, int] = {}
        for source, progress in self._sources.items():
            line = self.safe_line(source)
            if line is not None and line != progress.reported:
                progress.reported = line
                out[source] = line
        return out

    def forget(self, source: str) -> None:
        """Drop a finished source once its final checkpoint is saved."""
        progress = self._sources.pop(source, None)
        if progress is not None:
            self._pending -= sum(progress.counts.values())

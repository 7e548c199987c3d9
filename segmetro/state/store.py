"""The state's semantics, once, in SQL both backends run: runs, destinations, the ledger.

``SqlState`` holds every query that means the same in SQLite and PostgreSQL; a backend
supplies the connection (``_query`` and ``_transaction``, SQL written with ``?`` marks), its
schema and migrations, and its lock. ``DestinationState`` is one destination's view, what a
run reads and writes.

What was sent is only true of one *destination*: an API base URL and the Metronome account
behind the token. Checkpoints, the ledger and undeliverable events are kept per destination,
so a rehearsal against a fake or a sandbox never makes a production run skip events. The
account is known by an HMAC-SHA256 of the token under a random key kept in the state
(``meta``): the token itself, or anything it could be recovered from, is never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

import orjson

from segmetro.errors import StateError
from segmetro.state.records import (
    _CHECKPOINT_COLUMNS,
    _IN_CHUNK,
    _LEDGER_COLUMNS,
    Checkpoint,
    Destination,
    DestinationSummary,
    LedgerEntry,
    LockInfo,
    RunInfo,
    ShardStatus,
    UndeliverableRun,
    _checkpoint_row,
    _dumps,
    _ledger_row,
    _now,
    _scrub,
    format_time,
    new_run_id,
    normalize_api_url,
)

#: The HMAC key of account fingerprints, in ``meta``.
_ACCOUNT_KEY = "account_hmac_key"

Row = tuple[Any, ...]


class Writer(Protocol):
    """The statements of one open transaction."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int: ...

    def insert_id(self, sql: str, params: Sequence[Any]) -> int:
        """Run an ``INSERT`` of one row into a table with an ``id`` key; the new id."""
        ...


def new_account_key(tx: Writer) -> None:
    tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (_ACCOUNT_KEY, secrets.token_hex(32)))


class StateStore(Protocol):
    """What a run needs of its state: one destination's checkpoints and ledger.

    ``flush`` writes acknowledged events, the checkpoints they allow and undeliverable events
    in one transaction, and returns the entries another run had already recorded with a
    different payload (a ``conflict``: Metronome keeps whichever came first).
    """

    @property
    def where(self) -> str: ...

    def checkpoint(self, source: str) -> Checkpoint | None: ...

    def checkpoints(self) -> list[Checkpoint]: ...

    def flush(
        self,
        *,
        delivered: Iterable[LedgerEntry] = (),
        checkpoints: Iterable[Checkpoint] = (),
        undeliverable: Iterable[tuple[str, str | None]] = (),
    ) -> list[tuple[LedgerEntry, LedgerEntry]]: ...

    def ledger_lookup(self, transaction_ids: Sequence[str]) -> dict[str, LedgerEntry]: ...

    def ledger_size(self) -> int: ...

    def ledger_sample(self, n: int, *, since: datetime) -> list[LedgerEntry]: ...


class SqlState:
    """An open state: the queries both backends share. Not for several threads at once."""

    #: Set by ``acquire_lock`` when it took over a lock left by a run that is gone.
    took_over: LockInfo | None = None
    #: Set by :meth:`destination` when it bound an unclaimed destination to a token.
    claimed: Destination | None = None

    @property
    def where(self) -> str:
        """The state's name as shown: a file path, or a database URL without its password."""
        raise NotImplementedError

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    def _transaction(self, *, serialized: bool = False) -> AbstractContextManager[Writer]:
        """All or nothing; ``serialized`` transactions run one at a time across processes."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def lock_holder(self) -> LockInfo | None:
        raise NotImplementedError

    def locks(self) -> list[LockInfo]:
        """Every lock held or left behind, one per shard."""
        raise NotImplementedError

    def acquire_lock(self, run_id: str, shard: str | None = None) -> LockInfo | None:
        """Take the run's lock; the stale lock of a dead run it took over, if any."""
        raise NotImplementedError

    def release_lock(self, run_id: str) -> None:
        raise NotImplementedError

    def break_locks(self) -> list[LockInfo]:
        """Remove locks whose holders cannot be alive; never a live run's."""
        raise NotImplementedError

    @property
    def schema_version(self) -> int:
        raise NotImplementedError

    def __enter__(self) -> SqlState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        with self._transaction() as tx:
            tx.execute(
                "INSERT INTO runs (id, command, started_at, options, pid, host, destination) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, command, _now(), _dumps(_scrub(options)), os.getpid(),
                 socket.gethostname(), dest),
            )  # fmt: skip
        return run_id

    def end_run(self, run_id: str, counts: Mapping[str, Any], exit_code: int) -> None:
        with self._transaction() as tx:
            changed = tx.execute(
                "UPDATE runs SET ended_at = ?, counts = ?, exit_code = ? WHERE id = ?",
                (_now(), _dumps(dict(counts)), exit_code, run_id),
            )
            if changed != 1:
                raise StateError(f"no run {run_id} in state {self.where}")

    def runs(self, limit: int = 20) -> list[RunInfo]:
        """The latest runs, newest first."""
        rows = self._query(
            "SELECT id, command, started_at, ended_at, exit_code, options, counts, pid, host, "
            "destination FROM runs ORDER BY started_at DESC, id DESC LIMIT ?",
            (limit,),
        )
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

    def shards(self, recent: int = 500) -> list[ShardStatus]:
        """Each shard seen in the recent runs or the locks: its latest run and its lock."""
        latest: dict[str, RunInfo] = {}
        for run in reversed(self.runs(recent)):
            shard = run.options.get("shard")
            if isinstance(shard, str):
                latest[shard] = run
        locks = {lock.shard: lock for lock in self.locks() if lock.shard}
        names = sorted(latest.keys() | locks.keys(), key=_shard_order)
        return [ShardStatus(name, latest.get(name), locks.get(name)) for name in names]

    # -- destinations -----------------------------------------------------------------------

    def account_of(self, token: str) -> str:
        """The hex HMAC of a token under this state's key: who the token is, never what it is."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (_ACCOUNT_KEY,))
        if not rows:
            raise StateError(f"state {self.where} has no account key; it is damaged")
        return hmac.new(bytes.fromhex(rows[0][0]), token.encode(), hashlib.sha256).hexdigest()

    def destinations(self, api_url: str | None = None) -> list[Destination]:
        """Every destination of the state (or of one API URL), oldest first."""
        sql = "SELECT id, api_url, account, created_at, claimed_at FROM destinations"
        params: tuple[str, ...] = ()
        if api_url is not None:
            sql += " WHERE api_url = ?"
            params = (normalize_api_url(api_url),)
        return [Destination(*r) for r in self._query(sql + " ORDER BY id", params)]

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
        also kept in ``claimed`` so the caller can say so. Serialized, so shards starting at
        once agree on one destination.
        """
        url = normalize_api_url(api_url)
        account = self.account_of(token)
        self.claimed = None
        with self._transaction(serialized=True) as tx:
            rows = tx.query(
                "SELECT id, api_url, account, created_at, claimed_at FROM destinations "
                "WHERE api_url = ? AND (account = ? OR account IS NULL) ORDER BY account IS NULL",
                (url, account),
            )
            if rows and rows[0][2] == account:
                return Destination(*rows[0])
            now = _now()
            if rows:
                tx.execute(
                    "UPDATE destinations SET account = ?, claimed_at = ? WHERE id = ?",
                    (account, now, rows[0][0]),
                )
                found = Destination(rows[0][0], url, account, rows[0][3], now)
                self.claimed = found
                return found
            new_id = tx.insert_id(
                "INSERT INTO destinations (api_url, account, created_at) VALUES (?, ?, ?)",
                (url, account, now),
            )
            return Destination(new_id, url, account, now)

    def unclaim(self, destination: Destination) -> None:
        """Give back a claim made by a run that failed before Metronome accepted anything.

        A refused or mistyped token must not take over the checkpoints and ledger of the
        account that wrote them.
        """
        with self._transaction() as tx:
            tx.execute(
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

    # -- the whole state ----------------------------------------------------------------------

    def checkpoints(self) -> list[Checkpoint]:
        """Checkpoints of every destination, by destination then source."""
        rows = self._query(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints ORDER BY destination, source"
        )
        return [_checkpoint_row(r) for r in rows]

    def ledger_size(self) -> int:
        """Delivered events of every destination."""
        return int(self._query("SELECT count(*) FROM ledger")[0][0])


def _shard_order(label: str) -> tuple[int, int, str]:
    index, _, count = label.partition("/")
    try:
        return int(count), int(index), label
    except ValueError:
        return 0, 0, label


class DestinationState:
    """One destination's view of the state: what the pipeline, the plan and verify use.

    Every query and write is confined to the destination, so a run against another URL or
    account starts from zero.
    """

    def __init__(self, db: SqlState, destination: Destination) -> None:
        self.db = db
        self.destination = destination
        self._id = destination.id

    @property
    def where(self) -> str:
        return self.db.where

    def checkpoint(self, source: str) -> Checkpoint | None:
        rows = self.db._query(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints WHERE destination = ? AND source = ?",
            (self._id, source),
        )
        return _checkpoint_row(rows[0]) if rows else None

    def checkpoints(self) -> list[Checkpoint]:
        rows = self.db._query(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints WHERE destination = ? ORDER BY source",
            (self._id,),
        )
        return [_checkpoint_row(r) for r in rows]

    def flush(
        self,
        *,
        delivered: Iterable[LedgerEntry] = (),
        checkpoints: Iterable[Checkpoint] = (),
        undeliverable: Iterable[tuple[str, str | None]] = (),
    ) -> list[tuple[LedgerEntry, LedgerEntry]]:
        """Write delivered events, the checkpoints they allow and undeliverable events in ONE
        transaction; return ``(ours, theirs)`` for ids the ledger already held otherwise.

        A checkpoint must never be stored without the ledger entries before it, so callers
        that advance both should use this rather than the separate calls. ``undeliverable``
        holds ``(transaction_id, run_id)`` pairs of events whose retries were exhausted. An id
        already in the ledger keeps its entry (Metronome keeps the first payload too); when
        its payload differs, another run (a shard) sent a different version at the same time.
        """
        now = _now()
        dest = self._id
        entries = list(delivered)
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
            for e in entries
        ]
        checkpoint_rows = [
            (dest, c.source, c.identity, c.line, int(c.done), c.updated_at or now, c.run_id)
            for c in checkpoints
        ]
        undeliverable_rows = [(dest, tid, run_id or "", now) for tid, run_id in undeliverable]
        if not ledger_rows and not checkpoint_rows and not undeliverable_rows:
            return []
        conflicts: list[tuple[LedgerEntry, LedgerEntry]] = []
        with self.db._transaction() as tx:
            inserted = tx.executemany(
                f"INSERT INTO ledger (destination, {_LEDGER_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (destination, transaction_id) DO NOTHING",
                ledger_rows,
            )
            if inserted < len(ledger_rows):
                held = self._lookup(tx.query, [e.transaction_id for e in entries])
                for entry in entries:
                    theirs = held.get(entry.transaction_id)
                    if (
                        theirs is not None
                        and theirs.run_id != entry.run_id
                        and theirs.digest != entry.digest
                    ):
                        conflicts.append((entry, theirs))
            tx.executemany(
                "INSERT INTO checkpoints (destination, source, identity, line, done, updated_at, "
                "run_id) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (destination, source) DO UPDATE "
                "SET identity = excluded.identity, line = excluded.line, done = excluded.done, "
                "updated_at = excluded.updated_at, run_id = excluded.run_id",
                checkpoint_rows,
            )
            tx.executemany(
                "INSERT INTO undeliverable (destination, transaction_id, run_id, recorded_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                undeliverable_rows,
            )
        return conflicts

    def save_checkpoints(self, updates: Iterable[Checkpoint]) -> None:
        self.flush(checkpoints=updates)

    def record_delivered(self, entries: Iterable[LedgerEntry]) -> None:
        self.flush(delivered=entries)

    def ledger_lookup(self, transaction_ids: Sequence[str]) -> dict[str, LedgerEntry]:
        """Entries for the ids that are in the ledger (batched ``IN`` queries)."""
        return self._lookup(self.db._query, transaction_ids)

    def _lookup(self, query: Any, transaction_ids: Sequence[str]) -> dict[str, LedgerEntry]:
        found: dict[str, LedgerEntry] = {}
        unique = list(dict.fromkeys(transaction_ids))
        for chunk in _chunks(unique):
            marks = ",".join("?" * len(chunk))
            for row in query(
                f"SELECT {_LEDGER_COLUMNS} FROM ledger "
                f"WHERE destination = ? AND transaction_id IN ({marks})",
                [self._id, *chunk],
            ):
                found[row[0]] = _ledger_row(row)
        return found

    def ledger_size(self) -> int:
        rows = self.db._query("SELECT count(*) FROM ledger WHERE destination = ?", (self._id,))
        return int(rows[0][0])

    def ledger_sample(self, n: int, *, since: datetime) -> list[LedgerEntry]:
        """Up to ``n`` random entries whose event timestamp is at or after ``since``."""
        rows = self.db._query(
            f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE destination = ? AND event_time >= ? "
            "ORDER BY random() LIMIT ?",
            (self._id, format_time(since), n),
        )
        return [_ledger_row(r) for r in rows]

    def undeliverable(self) -> list[UndeliverableRun]:
        """Undeliverable events by run, oldest run first, with how many a later run delivered.

        An event counts as delivered since when the ledger holds its ``transaction_id`` with a
        send time after it was recorded undeliverable.
        """
        rows = self.db._query(
            "SELECT u.run_id, count(*), count(l.transaction_id) FROM undeliverable AS u "
            "LEFT JOIN ledger AS l ON l.destination = u.destination "
            "AND l.transaction_id = u.transaction_id AND l.sent_at >= u.recorded_at "
            "WHERE u.destination = ? GROUP BY u.run_id ORDER BY min(u.recorded_at), u.run_id",
            (self._id,),
        )
        return [UndeliverableRun(r[0], r[1], r[2]) for r in rows]


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]

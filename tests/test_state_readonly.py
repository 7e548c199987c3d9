"""StateDB.open(readonly=True): what dry runs, `status` and `verify` use."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from segmetro.errors import StateError
from segmetro.state import DEFAULT_API_URL, SCHEMA_VERSION, LedgerEntry, StateDB


def test_readonly_never_creates_a_file(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="does not exist"):
        StateDB.open(tmp_path / "dir" / "state.db", readonly=True)
    assert list(tmp_path.iterdir()) == []


def test_readonly_reads_but_refuses_to_write(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    payload = {"transaction_id": "t1", "customer_id": "c", "event_type": "e",
               "timestamp": "2026-11-25T00:00:00.000Z"}  # fmt: skip
    with StateDB.open(path) as db:
        view = db.for_destination(db.destination(DEFAULT_API_URL, "tok"))
        view.flush(delivered=[LedgerEntry.from_payload(payload, run_id="r1")])
    before = path.read_bytes()
    with StateDB.open(path, readonly=True) as db:
        assert db.schema_version == SCHEMA_VERSION
        dest = db.find_destination(DEFAULT_API_URL, "tok")
        assert dest is not None
        assert set(db.for_destination(dest).ledger_lookup(["t1", "t2"])) == {"t1"}
        assert db.find_destination(DEFAULT_API_URL, "another-tok") is None
        with pytest.raises(StateError, match="cannot write state file"):
            db.acquire_lock("r2")
        with pytest.raises(StateError, match="readonly"):
            db.begin_run("replay", {})
        with pytest.raises(StateError, match="cannot write state file"):
            db.destination(DEFAULT_API_URL, "another-tok")
    assert path.read_bytes() == before


def test_readonly_on_an_older_schema_migrates_a_copy_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE runs (id TEXT PRIMARY KEY, command TEXT NOT NULL, "
        "started_at TEXT NOT NULL, ended_at TEXT, exit_code INTEGER);"
        "CREATE TABLE checkpoints (source TEXT PRIMARY KEY, identity TEXT NOT NULL, "
        "line INTEGER NOT NULL, updated_at TEXT NOT NULL);"
        "CREATE TABLE ledger (transaction_id TEXT PRIMARY KEY, digest BLOB NOT NULL, "
        "sent_at TEXT NOT NULL, run_id TEXT);"
        "CREATE TABLE lock (id INTEGER PRIMARY KEY CHECK (id = 1), run_id TEXT NOT NULL, "
        "pid INTEGER NOT NULL, acquired_at TEXT NOT NULL);"
        "INSERT INTO ledger VALUES ('t-old', X'00', '2026-11-01T00:00:00.000Z', 'r1');"
        "PRAGMA user_version = 1;"
    )
    conn.close()
    before = path.read_bytes()
    with StateDB.open(path, readonly=True) as db:
        assert db.schema_version == SCHEMA_VERSION
        dest = db.find_destination(DEFAULT_API_URL, "any-token")
        assert dest is not None
        assert dest.account is None  # unclaimed, and a read-only open claims nothing
        (entry,) = db.for_destination(dest).ledger_lookup(["t-old"]).values()
        assert entry.payload is None
        assert db.lock_holder() is None
    assert path.read_bytes() == before
    with StateDB.open(path) as db:  # a normal open migrates the file itself
        assert db.schema_version == SCHEMA_VERSION

"""State file: schema and migrations, runs, checkpoints, ledger, lock, crash safety, tracker."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import segmetro
from segmetro.dedup import canonical_bytes, payload_digest
from segmetro.errors import LockedError, StateError
from segmetro.state import (
    DEFAULT_API_URL,
    SCHEMA_VERSION,
    Checkpoint,
    CheckpointTracker,
    DestinationState,
    LedgerEntry,
    StateDB,
    format_time,
)

ROOT = Path(segmetro.__file__).resolve().parent.parent


def _view(db: StateDB, url: str = DEFAULT_API_URL, token: str = "tok-a") -> DestinationState:
    """The state of one destination, created (or claimed) as a real run would."""
    return db.for_destination(db.destination(url, token))


def _payload(tid: str, ts: str = "2024-05-01T10:00:00.000Z", **props: Any) -> dict[str, Any]:
    return {
        "transaction_id": tid,
        "customer_id": "cus_1",
        "event_type": "jobs",
        "timestamp": ts,
        "properties": props,
    }


# -- schema ---------------------------------------------------------------------------------


def test_open_creates_parents_wal_and_current_version(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    with StateDB.open(path) as db:
        assert db.schema_version == SCHEMA_VERSION == 3
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert {
        "meta", "destinations", "runs", "checkpoints", "ledger", "undeliverable", "lock"
    } <= tables  # fmt: skip
    with StateDB.open(str(path)) as db:  # reopening is a no-op
        assert db.schema_version == 3


_V1 = """
CREATE TABLE runs (id TEXT PRIMARY KEY, command TEXT NOT NULL, started_at TEXT NOT NULL,
                   ended_at TEXT, exit_code INTEGER);
CREATE TABLE checkpoints (source TEXT PRIMARY KEY, identity TEXT NOT NULL,
                          line INTEGER NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE ledger (transaction_id TEXT PRIMARY KEY, digest BLOB NOT NULL,
                     sent_at TEXT NOT NULL, run_id TEXT);
CREATE TABLE lock (id INTEGER PRIMARY KEY CHECK (id = 1), run_id TEXT NOT NULL,
                   pid INTEGER NOT NULL, acquired_at TEXT NOT NULL);
INSERT INTO runs VALUES ('r1', 'replay', '2024-05-01T00:00:00.000Z',
                         '2024-05-01T00:01:00.000Z', 0);
INSERT INTO checkpoints VALUES ('/data/a.jsonl', '10:1700000000', 42, '2024-05-01T00:01:00.000Z');
INSERT INTO ledger VALUES ('t-old', X'00112233445566778899aabbccddeeff',
                           '2024-05-01T00:00:30.000Z', 'r1');
PRAGMA user_version = 1;
"""


def test_migrates_a_version_1_file(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(_V1)
    conn.close()

    with StateDB.open(path) as db:
        assert db.schema_version == 3
        [run] = db.runs()
        assert (run.id, run.command, run.exit_code, run.options, run.counts) == (
            "r1",
            "replay",
            0,
            {},
            None,
        )
        [old_cp] = db.checkpoints()
        assert (old_cp.source, old_cp.identity, old_cp.line, old_cp.done) == (
            "/data/a.jsonl",
            "10:1700000000",
            42,
            False,
        )
        # v1 recorded no --api-url: its rows go to the default URL, account unknown.
        [dest] = db.destinations()
        assert (dest.api_url, dest.account, dest.fingerprint) == (
            DEFAULT_API_URL,
            None,
            "unclaimed",
        )
        assert old_cp.destination == dest.id
        view = _view(db)
        assert db.claimed is not None
        assert view.destination.id == dest.id
        old = view.ledger_lookup(["t-old"])["t-old"]
        assert old.payload is None  # v1 kept no payloads
        assert old.digest == bytes.fromhex("00112233445566778899aabbccddeeff")
        # The migrated file takes every v3 write.
        view.record_delivered([LedgerEntry.from_payload(_payload("t-new"), mapping="m")])
        view.save_checkpoints([Checkpoint("/data/a.jsonl", "10:1700000000", 50, done=True)])
        run_id = db.begin_run("replay", {"batch_size": 10}, destination=view.destination)
        db.end_run(run_id, {"read": 1}, 0)
        db.acquire_lock(run_id)
        assert db.lock_holder() is not None
        assert db.ledger_size() == view.ledger_size() == 2
    with StateDB.open(path) as db:
        view = _view(db)
        assert db.claimed is None  # claimed once, by the first run
        cp = view.checkpoint("/data/a.jsonl")
        assert cp is not None
        assert (cp.line, cp.done) == (50, True)


def test_newer_version_asks_to_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with StateDB.open(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 4")
    conn.close()
    with pytest.raises(StateError, match=r"newer segmetro.*version 4.*upgrade segmetro"):
        StateDB.open(path)


def test_not_sqlite_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database, just some text" * 100)
    with pytest.raises(StateError, match="not a usable segmetro state file"):
        StateDB.open(path)


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match=r"not a segmetro state file.*customers"):
        StateDB.open(path)


def test_unwritable_parent_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateError, match="cannot create the directory"):
        StateDB.open(blocker / "sub" / "state.db")


# -- runs, checkpoints, ledger ----------------------------------------------------------------


def test_runs_record_options_without_secrets(tmp_path: Path) -> None:
    with StateDB.open(tmp_path / "s.db") as db:
        first = db.begin_run(
            "replay",
            {
                "inputs": ["a.jsonl"],
                "state": tmp_path / "s.db",
                "api_token": "tok_secret_1",
                "nested": {"Authorization": "Bearer tok_secret_2", "rate": 5},
            },
        )
        second = db.begin_run("map", {}, run_id="zz-explicit")
        db.end_run(first, {"read": 3, "rejected": {"too_old": 1}}, 1)
        runs = db.runs()
        assert {r.id for r in runs} == {first, second}
        by_id = {r.id: r for r in runs}
        done = by_id[first]
        assert done.options == {
            "inputs": ["a.jsonl"],
            "state": str(tmp_path / "s.db"),
            "nested": {"rate": 5},
        }
        assert done.counts == {"read": 3, "rejected": {"too_old": 1}}
        assert done.exit_code == 1
        assert done.ended_at is not None
        assert done.pid == os.getpid()
        assert done.host == socket.gethostname()
        assert by_id["zz-explicit"].ended_at is None
        assert len(db.runs(limit=1)) == 1
        with pytest.raises(StateError, match="no run nope"):
            db.end_run("nope", {}, 0)
    raw = b"".join(f.read_bytes() for f in tmp_path.glob("s.db*"))
    assert b"tok_secret" not in raw


def test_checkpoints_upsert(tmp_path: Path) -> None:
    with StateDB.open(tmp_path / "s.db") as state:
        db = _view(state)
        assert db.checkpoint("a") is None
        db.save_checkpoints([Checkpoint("b", "1:2", 10, run_id="r"), Checkpoint("a", "3:4", 5)])
        db.save_checkpoints([Checkpoint("a", "3:4", 9, done=True)])
        a = db.checkpoint("a")
        assert a is not None
        assert (a.line, a.done, a.identity) == (9, True, "3:4")
        assert a.updated_at is not None
        assert a.updated_at.endswith("Z")
        assert [c.source for c in db.checkpoints()] == ["a", "b"]
        db.save_checkpoints([])  # nothing to write is fine


def test_ledger_record_lookup_and_first_payload_wins(tmp_path: Path) -> None:
    with StateDB.open(tmp_path / "s.db") as state:
        db = _view(state)
        entries = [
            LedgerEntry.from_payload(_payload(f"t{i}", n=i), mapping="jobs", run_id="r1")
            for i in range(1200)
        ]
        db.record_delivered(entries)
        assert db.ledger_size() == 1200
        # A later different payload does not replace what Metronome holds.
        db.record_delivered([LedgerEntry.from_payload(_payload("t5", n=-1), mapping="jobs")])
        ids = [f"t{i}" for i in range(0, 1200, 2)] + ["missing", "t4", "t4"]
        found = db.ledger_lookup(ids)
        assert set(found) == {f"t{i}" for i in range(0, 1200, 2)}
        t4 = found["t4"]
        assert t4.payload == _payload("t4", n=4)
        assert t4.digest == payload_digest(_payload("t4", n=4))
        assert (t4.mapping, t4.event_type, t4.event_day, t4.run_id) == (
            "jobs",
            "jobs",
            "2024-05-01",
            "r1",
        )
        assert t4.event_time == "2024-05-01T10:00:00.000Z"
        assert t4.sent_at is not None
        assert db.ledger_lookup(["t5"])["t5"].payload == _payload("t5", n=5)
        shared = canonical_bytes(_payload("t4", n=4))
        assert LedgerEntry.from_payload(_payload("t4", n=4), canonical=shared).digest == t4.digest
        assert db.ledger_lookup([]) == {}


def test_ledger_sample_respects_window(tmp_path: Path) -> None:
    with StateDB.open(tmp_path / "s.db") as state:
        db = _view(state)
        db.record_delivered(
            [
                LedgerEntry.from_payload(_payload(f"old{i}", "2024-01-01T00:00:00.000Z"))
                for i in range(50)
            ]
            + [
                LedgerEntry.from_payload(_payload(f"new{i}", "2024-06-01T00:00:00.000Z"))
                for i in range(50)
            ]
        )
        since = datetime(2024, 5, 1, tzinfo=UTC)
        sample = db.ledger_sample(20, since=since)
        assert len(sample) == 20
        assert len({e.transaction_id for e in sample}) == 20
        assert all(e.transaction_id.startswith("new") for e in sample)
        assert len(db.ledger_sample(500, since=datetime(2024, 5, 1))) == 50  # naive = UTC
        samples = {
            tuple(e.transaction_id for e in db.ledger_sample(5, since=since)) for _ in range(5)
        }
        assert len(samples) > 1  # random, not the first rows


def test_flush_is_all_or_nothing(tmp_path: Path) -> None:
    with StateDB.open(tmp_path / "s.db") as state:
        db = _view(state)
        good = LedgerEntry.from_payload(_payload("ok"))
        bad = LedgerEntry("bad", digest=object())  # type: ignore[arg-type]
        with pytest.raises(sqlite3.Error):
            db.flush(delivered=[good, bad], checkpoints=[Checkpoint("s", "i", 7)])
        assert db.ledger_size() == 0
        assert db.checkpoint("s") is None
        db.flush(delivered=[good], checkpoints=[Checkpoint("s", "i", 7)])
        assert db.ledger_size() == 1


def test_format_time() -> None:
    assert format_time(datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)) == (
        "2024-05-01T10:00:00.123Z"
    )
    assert format_time(datetime(2024, 5, 1)) == "2024-05-01T00:00:00.000Z"


# -- lock -----------------------------------------------------------------------------------


def test_two_handles_cannot_both_hold_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with StateDB.open(path) as a, StateDB.open(path) as b:
        assert a.acquire_lock("run-a") is None
        assert a.acquire_lock("run-a") is None  # re-entrant for the holder
        with pytest.raises(LockedError) as info:
            b.acquire_lock("run-b")
        message = str(info.value)
        assert "is locked by run run-a" in message
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
        assert info.value.exit_code == 3
        b.release_lock("run-b")  # not the holder: no effect
        with pytest.raises(LockedError):
            b.acquire_lock("run-b")
        a.release_lock("run-a")
        assert b.acquire_lock("run-b") is None
        holder = a.lock_holder()
        assert holder is not None
        assert holder.run_id == "run-b"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with StateDB.open(path):
        pass
    pid = _dead_pid()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO lock (id, run_id, pid, host, acquired_at) VALUES (1, 'crashed', ?, ?, ?)",
            (pid, socket.gethostname(), "2024-05-01T00:00:00.000Z"),
        )
    conn.close()
    with StateDB.open(path) as db:
        stale = db.acquire_lock("mine")
        assert stale is not None
        assert (stale.run_id, stale.pid) == ("crashed", pid)
        assert db.took_over == stale
        assert "run crashed (pid" in stale.describe()
        holder = db.lock_holder()
        assert holder is not None
        assert (holder.run_id, holder.pid) == ("mine", os.getpid())


def test_lock_from_another_host_is_respected(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with StateDB.open(path):
        pass
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "INSERT INTO lock VALUES (1, 'elsewhere', ?, ?, 'other-host.example')",
            (_dead_pid(), "2024-05-01T00:00:00.000Z"),
        )
    conn.close()
    with StateDB.open(path) as db, pytest.raises(LockedError, match=r"on host other-host\.example"):
        db.acquire_lock("mine")


# -- crash safety ---------------------------------------------------------------------------

_WRITER = """
import sys
from segmetro.state import Checkpoint, LedgerEntry, StateDB

state = StateDB.open(sys.argv[1])
state.acquire_lock(sys.argv[2])
db = state.for_destination(state.destination("https://api.metronome.com", "tok"))
run = state.begin_run("replay", {})
cp = db.checkpoint("src")
line = 0 if cp is None else cp.line
print("ready", flush=True)
while True:
    batch = [
        LedgerEntry.from_payload(
            {"transaction_id": f"src:{line + i}", "customer_id": "c", "event_type": "e",
             "timestamp": "2024-05-01T00:00:00.000Z", "properties": {"pad": "x" * 300}},
            mapping="m", run_id=run)
        for i in range(1, 101)
    ]
    line += 100
    db.flush(delivered=batch, checkpoints=[Checkpoint("src", "id", line, run_id=run)])
    print("flushed", line, flush=True)
"""


@pytest.mark.slow
def test_sigkill_mid_write_leaves_a_consistent_file(tmp_path: Path) -> None:
    """SIGKILL at varying points of a writer that never stops flushing: every file it leaves
    passes the integrity check, its checkpoint and ledger agree, and each flush the writer said
    was done is there. The points are counted in flushes, not guessed with sleeps."""
    path = tmp_path / "state.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    last_line = 0
    for attempt, flushes in enumerate([0, 1, 3, 8, 20]):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), f"child-{attempt}"],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        with proc.stdout:
            assert proc.stdout.readline() == b"ready\n"
            done = last_line
            for _ in range(flushes):
                word, reported = proc.stdout.readline().split()
                assert word == b"flushed"
                done = int(reported)
            proc.send_signal(signal.SIGKILL)  # most likely inside the next flush
            proc.wait()
        assert proc.returncode == -signal.SIGKILL

        with StateDB.open(path) as db:
            conn = sqlite3.connect(path)
            try:
                assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
                ids = {r[0] for r in conn.execute("SELECT transaction_id FROM ledger")}
            finally:
                conn.close()
            cp = _view(db, token="tok").checkpoint("src")
            line = 0 if cp is None else cp.line
            # Invariant: the checkpoint and the ledger moved together, flush by flush.
            assert ids == {f"src:{i}" for i in range(1, line + 1)}
            assert line >= done == last_line + 100 * flushes  # no committed flush was lost
            last_line = line
            # The killed child's lock is stale: the next run takes it over.
            stale = db.acquire_lock("parent")
            assert stale is not None
            assert (stale.run_id, stale.pid) == (f"child-{attempt}", proc.pid)
            db.release_lock("parent")
    assert last_line > 0


# -- checkpoint tracker ---------------------------------------------------------------------


def test_tracker_basics() -> None:
    t = CheckpointTracker()
    assert t.safe_line("a") is None
    t.register("a", 1, 2)
    t.register("a", 2)  # filtered line: nothing to wait for
    t.register("a", 3, 1)
    assert t.safe_line("a") == 0
    assert t.pending() == 3
    t.resolve("a", 3)
    assert t.safe_line("a") == 0
    t.resolve("a", 1)
    assert t.safe_line("a") == 0
    assert t.pending("a") == 1
    t.resolve("a", 1)
    assert t.safe_line("a") == 3
    assert t.advanced() == {"a": 3}
    assert t.advanced() == {}
    t.register("a", 5, 1)
    t.register("a", 5, 1)  # more events of the same line
    assert t.pending() == 2
    assert not t.is_done("a")
    t.finish("a")
    t.resolve("a", 5, 2)
    assert t.is_done("a")
    assert t.safe_line("a") == 5
    t.forget("a")
    assert t.safe_line("a") is None


def test_tracker_rejects_misuse() -> None:
    t = CheckpointTracker()
    t.register("a", 5, 1)
    with pytest.raises(ValueError, match="after line 5"):
        t.register("a", 4)
    with pytest.raises(ValueError, match="no 2 unresolved"):
        t.resolve("a", 5, 2)
    with pytest.raises(ValueError, match="unresolved"):
        t.resolve("a", 6)
    with pytest.raises(ValueError, match="unresolved"):
        t.resolve("b", 1)
    with pytest.raises(ValueError, match=">= 0"):
        t.register("a", 6, -1)
    t.finish("a")
    with pytest.raises(ValueError, match="finished"):
        t.register("a", 7)


def test_tracker_memory_follows_in_flight_events_not_lines() -> None:
    t = CheckpointTracker()
    for line in range(1, 200_001):
        t.register("s", line, line % 3)
        if line % 3:
            t.resolve("s", line, line % 3)
    assert t.safe_line("s") == 200_000
    progress = t._sources["s"]
    assert progress.counts == {}
    assert len(progress.order) == 0


@st.composite
def _scenarios(draw: st.DrawFn) -> list[tuple[str, list[tuple[int, int]]]]:
    sources = []
    for name in draw(st.lists(st.sampled_from("abc"), min_size=1, max_size=3, unique=True)):
        gaps = draw(st.lists(st.integers(1, 3), min_size=1, max_size=25))
        counts = draw(st.lists(st.integers(0, 3), min_size=len(gaps), max_size=len(gaps)))
        line = draw(st.integers(0, 5))
        lines = []
        for gap, count in zip(gaps, counts, strict=True):
            line += gap
            lines.append((line, count))
        sources.append((name, lines))
    return sources


@settings(max_examples=300, deadline=None)
@given(scenario=_scenarios(), data=st.data())
def test_tracker_never_reports_past_an_unresolved_event(
    scenario: list[tuple[str, list[tuple[int, int]]]], data: st.DataObject
) -> None:
    t = CheckpointTracker()
    to_register = {name: list(lines) for name, lines in scenario}
    unresolved: list[tuple[str, int]] = []  # one item per outbound event
    registered_last: dict[str, int] = {}

    def check() -> None:
        assert t.pending() == len(unresolved)
        for name, _ in scenario:
            safe = t.safe_line(name)
            open_lines = [line for src, line in unresolved if src == name]
            if name not in registered_last:
                assert safe is None
            elif open_lines:
                assert safe == min(open_lines) - 1  # never beyond an unresolved event
            else:
                assert safe == registered_last[name]

    while any(to_register.values()) or unresolved:
        can_register = [name for name, rest in to_register.items() if rest]
        if can_register and (not unresolved or data.draw(st.booleans())):
            name = data.draw(st.sampled_from(can_register))
            line, count = to_register[name].pop(0)
            t.register(name, line, count)
            registered_last[name] = line
            unresolved.extend([(name, line)] * count)
        else:
            i = data.draw(st.integers(0, len(unresolved) - 1))
            name, line = unresolved.pop(i)
            t.resolve(name, line)
        check()
    for name, lines in scenario:
        t.finish(name)
        assert t.safe_line(name) == lines[-1][0]
        assert t.is_done(name)
    assert t.pending() == 0

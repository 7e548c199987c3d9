"""The PostgreSQL state against a real server: the SQLite state's semantics, a lock per shard."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import pgserver
import psycopg
import pytest
from typer.testing import CliRunner

from segmetro.cli import app
from segmetro.errors import LockedError, StateError
from segmetro.fake_metronome import FakeMetronome
from segmetro.state import Checkpoint, LedgerEntry, open_state, redact, state_exists
from segmetro.state.postgres import SCHEMA_VERSION, PostgresState, StateConnectionError
from tests.exports import messages, write_jsonl
from tests.support import SAMPLES, SAMPLES_NOW, SAMPLES_NOW_DT, TOKEN

pg_server = pgserver.pg_server
pg_url = pgserver.pg_url
PgServer = pgserver.PgServer
MAPPING = str(SAMPLES / "mapping.yaml")


def entry(tid: str, value: int, run_id: str) -> LedgerEntry:
    payload = {"transaction_id": tid, "timestamp": "2026-11-24T10:00:00.000Z", "n": value}
    return LedgerEntry.from_payload(payload, run_id=run_id, mapping="usage")


def test_schema_is_created_once_and_reopened(pg_url: str) -> None:
    assert not state_exists(pg_url)
    with pytest.raises(StateError, match="has no segmetro state yet"):
        open_state(pg_url, readonly=True)
    assert not state_exists(pg_url)  # a read-only open wrote nothing
    with open_state(pg_url) as db:
        assert db.schema_version == SCHEMA_VERSION
        dest = db.destination("https://api.metronome.com/", TOKEN)
    with open_state(pg_url) as again, open_state(pg_url, readonly=True) as reader:
        assert again.destinations() == reader.destinations() == [dest]
        assert dest.account is not None
        assert TOKEN not in dest.account
        with pytest.raises(StateError, match="read-only transaction"):
            reader.begin_run("replay", {})


def test_newer_schema_and_foreign_tables_are_refused(pg_url: str) -> None:
    with open_state(pg_url):
        pass
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE segmetro.meta SET value = '99' WHERE key = 'schema_version'")
    for readonly in (False, True):
        with pytest.raises(StateError, match=r"newer segmetro \(schema version 99"):
            open_state(pg_url, readonly=readonly)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA segmetro CASCADE")
        conn.execute("CREATE SCHEMA segmetro")
        conn.execute("CREATE TABLE segmetro.orders (id int)")
    with pytest.raises(StateError, match=r"not a segmetro state \(orders\)"):
        open_state(pg_url)


def test_flush_is_one_transaction_and_reports_another_runs_version(pg_url: str) -> None:
    with open_state(pg_url) as a, open_state(pg_url) as b:
        dest = a.destination("http://127.0.0.1:1", TOKEN)
        assert b.destination("http://127.0.0.1:1", TOKEN) == dest
        va, vb = a.for_destination(dest), b.for_destination(dest)
        assert (
            va.flush(
                delivered=[entry("t1", 1, "run-a"), entry("t2", 2, "run-a")],
                checkpoints=[Checkpoint("f0", "id0", 10, run_id="run-a")],
            )
            == []
        )
        # The other shard sent t2 with the same payload (a re-send) and t1 with another one.
        conflicts = vb.flush(
            delivered=[entry("t1", 9, "run-b"), entry("t2", 2, "run-b"), entry("t3", 3, "run-b")]
        )
        assert [(ours.transaction_id, theirs.run_id) for ours, theirs in conflicts] == [
            ("t1", "run-a")
        ]
        assert sorted(va.ledger_lookup(["t1", "t2", "t3"])) == ["t1", "t2", "t3"]
        assert va.ledger_lookup(["t1"])["t1"].payload == {
            "transaction_id": "t1", "timestamp": "2026-11-24T10:00:00.000Z", "n": 1,
        }  # fmt: skip
        # A failing statement rolls back the whole flush: no ledger row without its checkpoint.
        bad = Checkpoint("f1", None, 5, run_id="run-a")  # type: ignore[arg-type]
        with pytest.raises(StateError, match="not-null"):
            va.flush(delivered=[entry("t4", 4, "run-a")], checkpoints=[bad])
        assert va.ledger_lookup(["t4"]) == {}
        assert [c.source for c in va.checkpoints()] == ["f0"]


def test_a_lock_per_shard_taken_over_when_its_session_dies(pg_url: str) -> None:
    first = open_state(pg_url)
    with open_state(pg_url) as second, open_state(pg_url) as third:
        assert isinstance(second, PostgresState)
        second.lock_grace = 0.0  # a live holder is refused at once
        assert first.acquire_lock("run-0", "0/2") is None
        with pytest.raises(LockedError, match="shard 0/2 is locked by run run-0"):
            second.acquire_lock("run-0b", "0/2")
        assert second.acquire_lock("run-1", "1/2") is None
        with pytest.raises(LockedError, match=r"split 2 ways; shard 3/4 would read"):
            third.acquire_lock("run-x", "3/4")
        with pytest.raises(LockedError, match="the unsharded run"):
            third.acquire_lock("run-all", None)
        assert {lock.shard for lock in third.live_locks()} == {"0/2", "1/2"}
        first._conn.close()  # the shard dies without releasing anything
        stale = third.acquire_lock("run-0c", "0/2")
        assert stale is not None
        assert stale.run_id == "run-0"
        assert third.took_over == stale
        second.release_lock("run-1")
        third.release_lock("run-0c")
        assert third.live_locks() == []
        assert third.acquire_lock("run-all", None) is None
        third.release_lock("run-all")


def test_unlock_removes_only_the_locks_of_gone_sessions(runner: CliRunner, pg_url: str) -> None:
    with open_state(pg_url) as live:
        live.acquire_lock("live-run", "0/2")
        held = runner.invoke(app, ["unlock", "--state", pg_url])
        assert held.exit_code == 3
        assert "is still running (its session is connected)" in held.stderr
        dead = open_state(pg_url)
        dead.acquire_lock("dead-run", "1/2")
        dead._conn.close()
        removed = runner.invoke(app, ["unlock", "--state", pg_url])
        assert removed.exit_code == 0, removed.output
        assert "removed the lock of run dead-run for shard 1/2" in removed.stderr
        assert [lock.run_id for lock in live.locks()] == ["live-run"]
        live.release_lock("live-run")
    free = runner.invoke(app, ["unlock", "--state", pg_url])
    assert free.exit_code == 0
    assert "not locked" in free.stderr


def test_a_lost_connection_is_a_state_error_of_exit_3(pg_url: str, pg_server: PgServer) -> None:
    with open_state(pg_url) as db:
        dest = db.destination("http://127.0.0.1:1", TOKEN)
        view = db.for_destination(dest)
        view.flush(delivered=[entry("t1", 1, "r")])
        assert pg_server.terminate(pg_url.rsplit("/", 1)[1]) == 1
        with pytest.raises(StateConnectionError) as caught:
            view.flush(delivered=[entry("t2", 2, "r")])
        assert caught.value.exit_code == 3
        assert "lost the connection to the PostgreSQL state" in str(caught.value)
        assert pg_server.password not in str(caught.value)
    with open_state(pg_url, readonly=True) as db:
        assert db.ledger_size() == 1


def test_replay_status_verify_with_the_password_from_url_pgpassword_or_pgpass(
    runner: CliRunner,
    pg_server: PgServer,
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_metronome: Callable[..., FakeMetronome],
) -> None:
    database = pg_url.rsplit("/", 1)[1]
    bare = pg_server.url(database, password=False)
    src = write_jsonl(
        tmp_path / "e.jsonl",
        [
            {**m, "event": "API Call"}
            for m in messages(30, start=SAMPLES_NOW_DT.replace(day=23), seed=3)
        ],
    )
    server = fake_metronome()
    secret = pg_server.password

    def replay(state: str) -> str:
        result = runner.invoke(
            app,
            ["replay", "-m", MAPPING, "--now", SAMPLES_NOW, "--api-url", server.url,
             "--state", state, "--json", str(src)],
            env={"METRONOME_BEARER_TOKEN": TOKEN},
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        status = runner.invoke(app, ["status", "--state", state])
        assert status.exit_code == 0, status.output
        return result.output + status.output

    seen = replay(pg_url)  # from the URL
    assert redact(pg_url) in seen
    assert ":***@" in redact(pg_url)
    monkeypatch.setenv("PGPASSWORD", secret)
    seen += replay(bare)
    monkeypatch.delenv("PGPASSWORD")
    monkeypatch.setenv("HOME", str(tmp_path))
    pgpass = tmp_path / ".pgpass"
    pgpass.write_text(f"127.0.0.1:{pg_server.port}:{database}:{pgserver.USER}:{secret}\n")
    pgpass.chmod(0o600)
    seen += replay(bare)
    checked = runner.invoke(
        app,
        ["verify", "--state", bare, "--api-url", server.url, "--now", SAMPLES_NOW,
         "--sample", "1000", "--json"],
        env={"METRONOME_BEARER_TOKEN": TOKEN},
    )  # fmt: skip
    assert checked.exit_code == 0, checked.output
    assert orjson.loads(checked.stdout)["found"] == 30
    seen += checked.output
    assert secret not in seen
    wrong = runner.invoke(app, ["status", "--state", pg_url.replace(secret, "nope-" + secret[:4])])
    assert wrong.exit_code == 2
    assert "password authentication failed" in wrong.stderr
    assert "Traceback" not in wrong.output
    with psycopg.connect(pg_url) as conn:
        dumped = conn.execute(
            "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM segmetro.runs) AS t"
        ).fetchone()
        assert dumped is not None
        assert dumped[0] is not None
        assert secret not in dumped[0]
        assert TOKEN not in dumped[0]
    status = runner.invoke(app, ["status", "--state", bare, "--json"])
    shown = orjson.loads(status.stdout)
    assert shown["state"] == bare
    assert shown["ledger"] == 30
    assert os.environ.get("PGPASSWORD") is None


def test_a_shard_sending_another_version_at_the_same_moment_is_a_conflict_reject(
    pg_url: str, tmp_path: Path, fake_metronome: Callable[..., FakeMetronome]
) -> None:
    """Both shards looked the id up before either recorded it: the second one to record it
    learns of the other's payload at its flush and rejects its own as a ``conflict``."""
    import asyncio

    from segmetro.delivery import SenderConfig
    from segmetro.mapping import load_mapping
    from segmetro.pipeline import run_replay
    from segmetro.sources import open_inputs
    from segmetro.state import DestinationState
    from segmetro.window import Window

    class LookedUpTooEarly(DestinationState):
        """The ledger as it was before the other shard's flush: empty."""

        def ledger_lookup(self, transaction_ids: Sequence[str]) -> dict[str, LedgerEntry]:
            return {}

    items = [{**m, "event": "API Call"} for m in messages(5, start=SAMPLES_NOW_DT.replace(day=23))]
    src = write_jsonl(tmp_path / "e.jsonl", items)
    server = fake_metronome()
    with open_state(pg_url) as db:
        dest = db.destination(server.url, TOKEN)
        other = entry(items[2]["messageId"], 1, "the-other-shard")
        db.for_destination(dest).flush(delivered=[other])
        report = asyncio.run(
            run_replay(
                load_mapping(Path(MAPPING)),
                open_inputs([str(src)]),
                window=Window.from_options(since=None, until=None, now=SAMPLES_NOW),
                sender=SenderConfig(api_url=server.url, token=TOKEN),
                rejects_path=tmp_path / "rejects.jsonl",
                state=LookedUpTooEarly(db, dest),
                run_id="this-shard",
            )
        )
        kept = db.for_destination(dest).ledger_lookup([items[2]["messageId"]])
    assert report.delivery.sent == 5
    assert dict(report.counts.rejected) == {"conflict": 1}
    assert report.exit_code == 1
    (reject,) = [
        orjson.loads(line) for line in (tmp_path / "rejects.jsonl").read_bytes().splitlines()
    ]
    assert reject["reason"] == "conflict"
    assert "also sent, at the same time, by run the-other-shard" in reject["detail"]
    assert kept[items[2]["messageId"]].run_id == "the-other-shard"

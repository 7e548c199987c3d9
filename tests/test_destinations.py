"""State per destination (issue 9.3) and rejects that are never lost (issue 9.4).

A destination is an API base URL plus the Metronome account behind the token. A rehearsal
against one fake must never make a run to another URL or account skip events; the token is
never written anywhere; every run keeps its rejects in a file of its own.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from segmetro.cli import app
from segmetro.errors import ConfigError
from segmetro.fake_metronome import FakeMetronome
from segmetro.state import (
    DEFAULT_API_URL,
    SCHEMA_VERSION,
    Checkpoint,
    LedgerEntry,
    StateDB,
    UndeliverableRun,
    normalize_api_url,
)
from segmetro.state import sqlite as state_module
from tests.exports import messages, write_jsonl
from tests.support import SAMPLES, SAMPLES_NOW, TOKEN, summary_json

EVENTS = str(SAMPLES / "events")
#: Billable events and rejects of the sample export.
SAMPLE_SENT = 115
SAMPLE_REJECTED = 5
OTHER_TOKEN = "tok_live_2nd-ACCOUNT-do-not-leak-7c1d"


def _payload(tid: str, ts: str = "2026-11-24T10:00:00.000Z") -> dict[str, Any]:
    return {"transaction_id": tid, "customer_id": "c", "event_type": "e", "timestamp": ts}


def mapping_copy(directory: Path) -> Path:
    """The samples' mapping in a directory of the test's: the default state goes beside it."""
    return Path(shutil.copy(SAMPLES / "mapping.yaml", directory / "mapping.yaml"))


def replay(runner: CliRunner, mapping: Path, url: str, *args: str, token: str = TOKEN) -> Any:
    return runner.invoke(
        app,
        ["replay", "-m", str(mapping), "--now", SAMPLES_NOW, "--api-url", url, "-q", *args],
        env={"METRONOME_BEARER_TOKEN": token},
    )


def dry_run(
    runner: CliRunner, mapping: Path, url: str, *args: str, token: str | None = None
) -> Any:
    env = {} if token is None else {"METRONOME_BEARER_TOKEN": token}
    return runner.invoke(
        app,
        ["replay", "--dry-run", "-m", str(mapping), "--now", SAMPLES_NOW, "--api-url", url,
         "--json", *args],
        env=env,
    )  # fmt: skip


def status(runner: CliRunner, state: Path, *args: str) -> Any:
    result = runner.invoke(app, ["status", "--state", str(state), *args])
    assert result.exit_code == 0, result.output
    return result


def state_bytes(directory: Path) -> bytes:
    """Every byte of every file under the state directory (database, WAL, rejects files)."""
    files = [f for f in sorted(directory.rglob("*")) if f.is_file()]
    assert files
    return b"".join(f.read_bytes() for f in files)


def assert_no_token(blob: bytes, *tokens: str) -> None:
    for token in tokens:
        assert token.encode() not in blob
        assert hashlib.sha256(token.encode()).hexdigest().encode() not in blob


# -- the state API ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("https://api.metronome.com", "https://api.metronome.com"),
        ("https://API.Metronome.com/", "https://api.metronome.com"),
        ("https://api.metronome.com:443", "https://api.metronome.com"),
        ("HTTP://127.0.0.1:80/", "http://127.0.0.1"),
        ("http://127.0.0.1:8080//", "http://127.0.0.1:8080"),
        ("https://user:secret@host.example/base/?q=1#f", "https://host.example/base"),
        ("http://[::1]:9000/x/", "http://[::1]:9000/x"),
        ("https://host.example/V1", "https://host.example/V1"),  # paths are case-sensitive
    ],
)
def test_api_urls_are_normalised(url: str, normal: str) -> None:
    assert normalize_api_url(url) == normal


@pytest.mark.parametrize("url", ["api.metronome.com", "ftp://host", "https://", "http://h:x"])
def test_bad_api_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="API URL"):
        normalize_api_url(url)


def test_each_destination_keeps_its_own_checkpoints_and_ledger(tmp_path: Path) -> None:
    """Same URL with another token, or another URL with the same token: nothing is shared."""
    path = tmp_path / "state.db"
    url_a, url_b = "https://api.metronome.com", "http://127.0.0.1:8080"
    with StateDB.open(path) as db:
        a1 = db.destination(url_a, TOKEN)
        assert db.claimed is None
        a2 = db.destination(url_a + "/", OTHER_TOKEN)
        b1 = db.destination(url_b, TOKEN)
        assert len({a1.id, a2.id, b1.id}) == 3
        assert db.destination("https://API.metronome.com:443", TOKEN) == a1
        assert a1.account == b1.account != a2.account
        assert a1.account is not None
        assert len(a1.account) == 64
        assert a1.fingerprint == a1.account[:8]
        view = db.for_destination(a1)
        view.flush(
            delivered=[LedgerEntry.from_payload(_payload("t1"), run_id="r1")],
            checkpoints=[Checkpoint("in.jsonl", "id", 10, done=True)],
        )
        for other in (a2, b1):
            empty = db.for_destination(other)
            assert empty.ledger_lookup(["t1"]) == {}
            assert empty.checkpoint("in.jsonl") is None
            assert empty.ledger_size() == 0
        assert set(view.ledger_lookup(["t1"])) == {"t1"}
        assert db.ledger_size() == 1
        assert [(c.source, c.destination) for c in db.checkpoints()] == [("in.jsonl", a1.id)]
        assert db.find_destination(url_b, OTHER_TOKEN) is None
        assert db.find_destination(url_b, TOKEN) == b1
        assert [d.id for d in db.destinations(url_a)] == [a1.id, a2.id]
        [summary_a1, summary_a2, summary_b1] = db.summaries()
        assert (summary_a1.ledger, len(summary_a1.checkpoints)) == (1, 1)
        assert (summary_a2.ledger, summary_b1.ledger) == (0, 0)
    assert_no_token(state_bytes(tmp_path), TOKEN, OTHER_TOKEN)
    # The HMAC key is random per file: the same token has another fingerprint elsewhere.
    with StateDB.open(tmp_path / "other.db") as other:
        assert other.destination(url_a, TOKEN).account != a1.account


def _v2_file(
    path: Path,
    *,
    runs: Sequence[tuple[str, str, str]],
    ledger: Sequence[tuple[str, str | None]],
    checkpoints: Sequence[tuple[str, str | None]] = (),
) -> Path:
    """A state file as schema v2 wrote it: runs (id, command, options JSON), rows by run."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript(state_module._SCHEMA_V2)
        for i, (run_id, command, options) in enumerate(runs):
            conn.execute(
                "INSERT INTO runs (id, command, started_at, options) VALUES (?, ?, ?, ?)",
                (run_id, command, f"2026-11-2{i}T00:00:00.000Z", options),
            )
        for tid, run_id in ledger:
            e = LedgerEntry.from_payload(_payload(tid), run_id=run_id)
            conn.execute(
                "INSERT INTO ledger (transaction_id, digest, sent_at, run_id, payload, mapping, "
                "event_type, event_day, event_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (e.transaction_id, e.digest, "2026-11-24T00:00:00.000Z", run_id, e.payload_json,
                 e.mapping, e.event_type, e.event_day, e.event_time),
            )  # fmt: skip
        for source, run_id in checkpoints:
            conn.execute(
                "INSERT INTO checkpoints (source, identity, line, updated_at, done, run_id) "
                "VALUES (?, 'id', 7, '2026-11-24T00:00:00.000Z', 1, ?)",
                (source, run_id),
            )
        conn.execute("PRAGMA user_version = 2")
        conn.commit()
    finally:
        conn.close()
    return path


def test_v2_rows_go_to_the_url_of_the_run_that_wrote_them_unclaimed(tmp_path: Path) -> None:
    """Each row follows its run's --api-url; rows of unknown runs follow the latest replay."""
    path = _v2_file(
        tmp_path / "v2.db",
        runs=[
            ("r1", "replay", '{"api_url": "http://127.0.0.1:9001"}'),
            ("r2", "replay", '{"api_url": "HTTP://127.0.0.1:9002/"}'),
            ("r3", "map", "{}"),
        ],
        ledger=[("a", "r1"), ("b", "r2"), ("c", "gone"), ("d", None)],
        checkpoints=[("one.jsonl", "r1"), ("two.jsonl", "r2")],
    )
    with StateDB.open(path) as db:
        assert db.schema_version == SCHEMA_VERSION
        d1, d2 = db.destinations()
        assert (d1.api_url, d1.account, d2.api_url, d2.account) == (
            "http://127.0.0.1:9001", None, "http://127.0.0.1:9002", None,
        )  # fmt: skip
        v1, v2 = db.for_destination(d1), db.for_destination(d2)
        assert set(v1.ledger_lookup(["a", "b", "c", "d"])) == {"a"}
        assert set(v2.ledger_lookup(["a", "b", "c", "d"])) == {"b", "c", "d"}
        assert [c.source for c in v1.checkpoints()] == ["one.jsonl"]
        assert [c.source for c in v2.checkpoints()] == ["two.jsonl"]
        assert {r.id: r.destination for r in db.runs()} == {"r1": d1.id, "r2": d2.id, "r3": None}
        # The first real run to a URL claims it; another token there starts from zero.
        claimed = db.destination("http://127.0.0.1:9001", TOKEN)
        assert claimed.id == d1.id
        assert db.claimed == claimed
        assert claimed.account is not None
        fresh = db.destination("http://127.0.0.1:9001", OTHER_TOKEN)
        assert db.claimed is None
        assert fresh.id not in (d1.id, d2.id)
        assert db.for_destination(fresh).ledger_size() == 0


def test_v2_without_a_replay_run_goes_to_the_default_url(tmp_path: Path) -> None:
    path = _v2_file(tmp_path / "v2.db", runs=[], ledger=[("a", None)])
    with StateDB.open(path) as db:
        [dest] = db.destinations()
        assert (dest.api_url, dest.account) == (DEFAULT_API_URL, None)
    empty = _v2_file(tmp_path / "empty.db", runs=[("r1", "replay", "{}")], ledger=[])
    with StateDB.open(empty) as db:
        assert db.destinations() == []  # nothing to give a destination


def test_undeliverable_events_are_superseded_once_a_later_run_delivers_them(
    tmp_path: Path,
) -> None:
    with StateDB.open(tmp_path / "s.db") as db:
        view = db.for_destination(db.destination(DEFAULT_API_URL, TOKEN))
        earlier = LedgerEntry.from_payload(_payload("t-old"), run_id="r0")
        earlier.sent_at = "2020-01-01T00:00:00.000Z"
        view.flush(delivered=[earlier])
        view.flush(undeliverable=[("t1", "r1"), ("t2", "r1"), ("t-old", "r1"), ("t3", "r2")])
        view.flush(undeliverable=[("t1", "r1")])  # recorded once per run
        assert view.undeliverable() == [UndeliverableRun("r1", 3, 0), UndeliverableRun("r2", 1, 0)]
        view.flush(
            delivered=[LedgerEntry.from_payload(_payload(t), run_id="r3") for t in ["t1", "t3"]]
        )
        # t-old was in the ledger before it was undeliverable: it was not delivered *since*.
        assert view.undeliverable() == [UndeliverableRun("r1", 3, 1), UndeliverableRun("r2", 1, 1)]
        assert view.undeliverable()[0].still_open == 2
        other = db.for_destination(db.destination(DEFAULT_API_URL, OTHER_TOKEN))
        assert other.undeliverable() == []


# -- over HTTP, with the default state ----------------------------------------------------------


def test_rehearsal_then_another_url_and_another_account_each_get_every_event(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    """Issue 9: a rehearsal against a fake made the production run send nothing."""
    mapping = mapping_copy(tmp_path)
    state_dir = tmp_path / ".segmetro"
    rehearsal, production = fake_metronome(), fake_metronome()

    first = replay(runner, mapping, rehearsal.url, EVENTS)
    assert first.exit_code == 1, first.output  # the samples hold rejects
    assert rehearsal.snapshot(include_events=False).events_accepted == SAMPLE_SENT
    again = replay(runner, mapping, rehearsal.url, EVENTS)
    assert "3 of 3 inputs already done" in again.stderr  # the same destination resumes

    other_url = replay(runner, mapping, production.url, EVENTS, "--json")
    assert other_url.exit_code == 1, other_url.output
    summary = summary_json(other_url.stdout)
    assert (summary["sent"], summary["inputs_skipped"]) == (SAMPLE_SENT, 0)
    assert production.snapshot(include_events=False).events_accepted == SAMPLE_SENT

    # The same URL, another account: the fake now accepts only the other token.
    rehearsal.reset()
    rehearsal.configure(token=OTHER_TOKEN)
    other_account = replay(runner, mapping, rehearsal.url, EVENTS, "--json", token=OTHER_TOKEN)
    assert other_account.exit_code == 1, other_account.output
    assert summary_json(other_account.stdout)["sent"] == SAMPLE_SENT
    end = rehearsal.snapshot(include_events=False)
    assert (end.events_accepted, end.duplicates_ignored) == (SAMPLE_SENT, 0)

    state = state_dir / "state.db"
    shown = summary_json(status(runner, state, "--json").stdout)
    dests = shown["destinations"]
    assert [(d["api_url"], d["ledger"], len(d["checkpoints"])) for d in dests] == [
        (rehearsal.url, SAMPLE_SENT, 3),
        (production.url, SAMPLE_SENT, 3),
        (rehearsal.url, SAMPLE_SENT, 3),
    ]
    assert dests[0]["account"] == dests[1]["account"] != dests[2]["account"]
    assert all(len(d["account"]) == 8 for d in dests)
    assert shown["ledger"] == 3 * SAMPLE_SENT
    text = status(runner, state).stderr
    assert "destinations (3):" in text
    line = f"  #{dests[1]['id']} {production.url} account {dests[1]['account']}: "
    assert f"{line}ledger {SAMPLE_SENT}, 3 checkpoints" in text

    for result in (first, again, other_url, other_account):
        assert_no_token(result.output.encode(), TOKEN, OTHER_TOKEN)
    blob = state_bytes(state_dir)
    assert b'"reason":"invalid_json"' in blob  # the scan did read the rejects files
    assert_no_token(blob, TOKEN, OTHER_TOKEN)


def test_dry_run_plans_against_the_destination_a_run_would_use(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    mapping = mapping_copy(tmp_path)
    server = fake_metronome()
    assert replay(runner, mapping, server.url, EVENTS).exit_code == 1
    state = tmp_path / ".segmetro" / "state.db"
    rejects = sorted((tmp_path / ".segmetro" / "rejects").iterdir())
    db_bytes = state.read_bytes()

    only = summary_json(
        dry_run(runner, mapping, server.url, EVENTS).stdout
    )  # no token: the only one
    assert (only["inputs_skipped"], only["new"]) == (3, 0)
    assert "the only destination with this URL" in only["destination"]["note"]
    assert only["destination"]["destination"]["api_url"] == server.url
    mine = summary_json(dry_run(runner, mapping, server.url, EVENTS, token=TOKEN).stdout)
    assert mine["inputs_skipped"] == 3
    assert "the account of METRONOME_BEARER_TOKEN" in mine["destination"]["note"]
    theirs = summary_json(dry_run(runner, mapping, server.url, EVENTS, token=OTHER_TOKEN).stdout)
    assert (theirs["inputs_skipped"], theirs["new"]) == (0, SAMPLE_SENT)
    assert theirs["destination"]["destination"] is None
    elsewhere = dry_run(runner, mapping, "https://api.metronome.com", EVENTS)
    assert summary_json(elsewhere.stdout)["new"] == SAMPLE_SENT
    assert "nothing was sent to https://api.metronome.com yet" in elsewhere.stdout
    # Dry runs write nothing: no state, no rejects file.
    assert sorted((tmp_path / ".segmetro" / "rejects").iterdir()) == rejects
    assert state.read_bytes() == db_bytes

    server.configure(token=OTHER_TOKEN)
    assert replay(runner, mapping, server.url, EVENTS, token=OTHER_TOKEN).exit_code == 1
    # Two accounts behind one URL and no token: say so, and assume nothing was sent.
    ambiguous = dry_run(runner, mapping, server.url, EVENTS)
    plan = summary_json(ambiguous.stdout)
    assert (plan["inputs_skipped"], plan["new"]) == (0, SAMPLE_SENT)
    assert plan["warnings"][0].startswith(f"2 destinations in {state} use {server.url}")
    assert "plans as if nothing was sent" in plan["warnings"][0]
    assert plan["destination"]["destination"] is None
    as_text = runner.invoke(
        app,
        ["replay", "--dry-run", "-m", str(mapping), "--now", SAMPLES_NOW, "--api-url",
         server.url, EVENTS],
    )  # fmt: skip
    assert f"warning: 2 destinations in {state} use {server.url}" in as_text.stderr
    assert "plan against: every event planned as new: 2 destinations use" in as_text.stderr
    text = runner.invoke(
        app,
        ["replay", "--dry-run", "-m", str(mapping), "--now", SAMPLES_NOW, "--api-url",
         server.url, EVENTS],
        env={"METRONOME_BEARER_TOKEN": TOKEN},
    )  # fmt: skip
    assert "plan against: planned against destination #1 " in text.stderr
    with StateDB.open(state, readonly=True) as db:
        assert len(db.destinations()) == 2


def test_a_migrated_v2_state_is_claimed_by_the_first_run_to_its_url(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    """The v2 ledger stays true for its URL; another URL or account starts from zero."""
    mapping = mapping_copy(tmp_path)
    mapped = runner.invoke(app, ["map", "-m", str(mapping), "--now", SAMPLES_NOW, EVENTS])
    expected = [orjson.loads(line) for line in mapped.stdout.splitlines()]
    assert len(expected) == SAMPLE_SENT
    old, other = fake_metronome(), fake_metronome()
    state_dir = tmp_path / ".segmetro"
    state_dir.mkdir()
    state = _v2_file(
        state_dir / "state.db",
        runs=[("r-v2", "replay", orjson.dumps({"api_url": old.url}).decode())],
        ledger=[],
    )
    conn = sqlite3.connect(state)
    with conn:
        for payload in expected:
            e = LedgerEntry.from_payload(payload, run_id="r-v2", mapping="usage")
            conn.execute(
                "INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (e.transaction_id, e.digest, "2026-11-25T00:00:00.000Z", "r-v2", e.payload_json,
                 e.mapping, e.event_type, e.event_day, e.event_time),
            )  # fmt: skip
    conn.close()

    old.configure(fail_status=403)  # a refused token, with new events to send, claims nothing
    extra = write_jsonl(tmp_path / "extra.jsonl", [{"type": "track", "event": "API Call",
        "messageId": "extra-1", "timestamp": SAMPLES_NOW, "context": {"groupId": "acme"},
        "properties": {}}])  # fmt: skip
    refused = replay(runner, mapping, old.url, str(extra), "--json")
    assert refused.exit_code == 3, refused.output
    with StateDB.open(state, readonly=True) as db:
        assert [d.account for d in db.destinations()] == [None]
    old.configure(fail_status=None)
    old.reset()

    claim = replay(runner, mapping, old.url, EVENTS, "--json")
    assert claim.exit_code == 1, claim.output
    summary = summary_json(claim.stdout)
    assert (summary["sent"], summary["unchanged"]) == (0, SAMPLE_SENT)
    assert old.snapshot(include_events=False).requests == 0
    assert "this token now claims them" in claim.stderr
    again = replay(runner, mapping, old.url, EVENTS, "--json")
    assert "claims" not in again.stderr

    moved = replay(runner, mapping, other.url, EVENTS, "--json")
    assert summary_json(moved.stdout)["sent"] == SAMPLE_SENT
    old.configure(token=OTHER_TOKEN)
    account = replay(runner, mapping, old.url, EVENTS, "--json", token=OTHER_TOKEN)
    assert summary_json(account.stdout)["sent"] == SAMPLE_SENT
    assert_no_token(state_bytes(state_dir), TOKEN, OTHER_TOKEN)


def test_a_run_without_rejects_option_keeps_every_reject_in_a_file_of_its_own(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    mapping = mapping_copy(tmp_path)
    server = fake_metronome()
    rejects_dir = tmp_path / ".segmetro" / "rejects"

    planned = dry_run(runner, mapping, server.url, EVENTS)
    assert planned.exit_code == 1
    assert not (tmp_path / ".segmetro").exists()  # a dry run writes no state, no rejects

    run = replay(runner, mapping, server.url, EVENTS, "--json")
    assert run.exit_code == 1, run.output
    summary = summary_json(run.stdout)
    path = Path(summary["rejects"])
    assert path == rejects_dir / f"{summary['run_id']}.jsonl"
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert len(lines) == summary["rejected"] == SAMPLE_REJECTED
    assert {x["run_id"] for x in lines} == {summary["run_id"]}

    # Text: the summary names the file, and a second run gets its own.
    text = replay(runner, mapping, server.url, "--resend-changed", EVENTS)
    assert text.exit_code == 1
    files = sorted(rejects_dir.iterdir())
    assert len(files) == 2
    (second,) = set(files) - {path}
    assert f"all {SAMPLE_REJECTED} rejects written to {second}" in text.stderr
    assert "use --rejects FILE" not in text.stderr
    assert len(second.read_bytes().splitlines()) == SAMPLE_REJECTED

    # A run without rejects leaves no empty file behind.
    clean = write_jsonl(
        tmp_path / "clean.jsonl",
        list(messages(20, start=datetime(2026, 11, 24, tzinfo=UTC), prefix="clean")),
    )
    quiet = replay(runner, mapping, server.url, str(clean), "--json")
    assert quiet.exit_code == 0, quiet.output
    assert "rejects" not in summary_json(quiet.stdout)
    assert sorted(rejects_dir.iterdir()) == files


def test_undeliverable_events_show_as_superseded_once_delivered_and_replaying_rejects_skips_them(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    mapping = mapping_copy(tmp_path)
    items = list(messages(300, start=datetime(2026, 11, 23, tzinfo=UTC), seed=8))
    for m in items:
        m["event"] = "API Call"
    src = write_jsonl(tmp_path / "export.jsonl", items)
    server = fake_metronome(fail_status=500)
    state = tmp_path / ".segmetro" / "state.db"

    failed = replay(
        runner, mapping, server.url, "--max-retries", "0", "--batch-size", "50",
        "--concurrency", "1", "--json", str(src),
    )  # fmt: skip
    assert failed.exit_code == 3, failed.output
    summary = summary_json(failed.stdout)
    lost = summary["rejected_by_reason"]["undeliverable"]
    assert lost >= 50
    rejects = Path(summary["rejects"])
    assert len(rejects.read_bytes().splitlines()) == lost
    assert f"all {lost} rejects written to {rejects}" in failed.stderr  # where they went
    run_1 = summary["run_id"]
    open_text = status(runner, state).stderr
    assert (
        f"    {lost} undeliverable events from run {run_1} are still not delivered: re-run "
        "the same command to send them"
    ) in open_text

    server.configure(fail_status=None)
    fixed = replay(runner, mapping, server.url, "--json", str(src))
    assert fixed.exit_code == 0, fixed.output
    assert server.snapshot(include_events=False).events_accepted == 300
    done = status(runner, state).stderr
    assert f"    {lost} undeliverable events from run {run_1} were delivered since" in done
    assert "still not delivered" not in done
    shown = summary_json(status(runner, state, "--json").stdout)
    (dest,) = shown["destinations"]
    assert dest["undeliverable"] == [
        {"run_id": run_1, "events": lost, "delivered_since": lost, "open": 0}
    ]

    # The rejects file is a valid input: the ledger already holds every event of it.
    requests = server.snapshot(include_events=False).requests
    again = replay(runner, mapping, server.url, "--json", str(rejects))
    assert again.exit_code == 0, again.output
    resent = summary_json(again.stdout)
    assert (resent["read"], resent["unchanged"], resent["sent"]) == (lost, lost, 0)
    assert server.snapshot(include_events=False).requests == requests


def test_verify_samples_the_destination_of_its_url_and_token(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    mapping = mapping_copy(tmp_path)
    a, b = fake_metronome(), fake_metronome()
    small = write_jsonl(
        tmp_path / "small.jsonl",
        list(messages(12, start=datetime(2026, 11, 24, tzinfo=UTC), prefix="s")),
    )
    assert replay(runner, mapping, a.url, EVENTS).exit_code == 1
    assert replay(runner, mapping, b.url, str(small)).exit_code == 0
    sent_to_b = b.snapshot(include_events=False).events_accepted
    state = str(tmp_path / ".segmetro" / "state.db")

    def verify(url: str, token: str = TOKEN) -> Any:
        return runner.invoke(
            app,
            ["verify", "--state", state, "--api-url", url, "--now", SAMPLES_NOW, "--sample",
             "1000", "--json"],
            env={"METRONOME_BEARER_TOKEN": token},
        )  # fmt: skip

    report = verify(b.url)
    assert report.exit_code == 0, report.output
    assert summary_json(report.stdout)["sampled"] == sent_to_b
    assert summary_json(verify(a.url).stdout)["sampled"] == SAMPLE_SENT
    unknown = verify(a.url, token=OTHER_TOKEN)
    assert unknown.exit_code == 2
    assert f"records nothing sent to {a.url} with this token" in unknown.stderr
    assert_no_token(unknown.output.encode(), TOKEN, OTHER_TOKEN)

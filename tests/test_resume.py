"""Resume after `kill -9`, re-runs with nothing new, changed inputs, the lock, old state files.

The kill test runs a real `segmetro replay` process against a fake Metronome in this process,
behind a proxy that stops passing answers on at each kill point; it kills the process with
SIGKILL while the batches the fake accepted last are unacknowledged, and re-runs the same
command until one finishes.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from segmetro.cli import app
from segmetro.fake_metronome import FakeMetronome
from segmetro.state import DEFAULT_API_URL, SCHEMA_VERSION, StateDB
from tests.exports import messages, write_jsonl
from tests.support import (
    PATIENCE,
    ROOT,
    SAMPLES,
    SAMPLES_NOW,
    SAMPLES_NOW_DT,
    TOKEN,
    HoldingProxy,
    summary_json,
    wait_until,
)

MAPPING = str(SAMPLES / "mapping.yaml")
FILES = 3
PER_FILE = 2000
BATCH = 50
CONCURRENCY = 3
#: delivery.py's back-pressure: at most this many batches pulled and not yet resolved.
MAX_PENDING = max(4, 2 * CONCURRENCY)
#: What a kill can cost: every in-flight batch was accepted by the server, none recorded.
IN_FLIGHT_WINDOW = MAX_PENDING * BATCH


def mapped(runner: CliRunner, *inputs: str) -> list[dict[str, Any]]:
    """What `segmetro map` says would be sent: the reference for what the server must hold."""
    result = runner.invoke(app, ["map", "-m", MAPPING, "--now", SAMPLES_NOW, *inputs])
    assert result.exit_code == 0, result.output
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def by_id(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["transaction_id"]: e for e in events}


def make_export(directory: Path) -> list[Path]:
    directory.mkdir()
    return [
        write_jsonl(
            directory / f"part-{i}.jsonl",
            list(
                messages(
                    PER_FILE, start=SAMPLES_NOW_DT - timedelta(days=6), seed=40 + i, prefix=f"f{i}"
                )
            ),
        )
        for i in range(FILES)
    ]


def replay_argv(api_url: str, state: Path, *inputs: str, json: bool = True) -> list[str]:
    argv = [
        sys.executable, "-m", "segmetro", "replay", "-m", MAPPING, "--now", SAMPLES_NOW,
        "--api-url", api_url, "--state", str(state), "--batch-size", str(BATCH),
        "--concurrency", str(CONCURRENCY), "-q", *inputs,
    ]  # fmt: skip
    return [*argv, "--json"] if json else argv


def child_env() -> dict[str, str]:
    return dict(os.environ, METRONOME_BEARER_TOKEN=TOKEN)


@dataclass
class Kill:
    target: int  # kill once the server had accepted at least this many events
    accepted: int  # events the server had accepted when the process died
    resent_before: int  # duplicates the server had ignored before this run started
    checkpoints: dict[str, int]  # line per source, read from the state after the kill
    done: set[str]


def ledger_ids(state: Path) -> set[str]:
    conn = sqlite3.connect(state)
    try:
        return {r[0] for r in conn.execute("SELECT transaction_id FROM ledger")}
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_at_several_points_then_rerun_delivers_each_event_once(
    runner: CliRunner,
    fake_metronome: Callable[..., FakeMetronome],
    holding_proxy: Callable[[str], HoldingProxy],
    tmp_path: Path,
) -> None:
    files = make_export(tmp_path / "export")
    inputs = [str(f) for f in files]
    expected = mapped(runner, *inputs)
    assert len(expected) > 3000
    # Line numbers of each expected event: the checkpoint invariant is stated in lines.
    line_of: dict[str, tuple[str, int]] = {}
    for f in files:
        for lineno, raw in enumerate(f.read_bytes().splitlines(), start=1):
            line_of[orjson.loads(raw)["messageId"]] = (str(f), lineno)

    # The jitter makes batches resolve out of order, as they do against the real API.
    server = fake_metronome(latency_jitter_ms=20, seed=9)
    proxy = holding_proxy(server.url)  # every run goes through it: the state is per API URL
    state = tmp_path / "state.db"
    argv = replay_argv(proxy.url, state, *inputs)
    kills: list[Kill] = []
    for fraction in (0.15, 0.50, 0.85):
        target = int(len(expected) * fraction)
        before = server.snapshot(include_events=False)
        # From the first answer after `target` accepted events on, no answer reaches the run:
        # when it is killed, it cannot have finished and holds accepted, unacknowledged batches.
        proxy.hold_when(
            lambda target=target: server.snapshot(include_events=False).events_accepted >= target
        )
        err = (tmp_path / f"kill-{fraction}.err").open("wb")
        with err:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=err
            )
            try:
                wait_until(
                    lambda proc=proc: proxy.held.is_set() or proc.poll() is not None,
                    f"an answer held after {target} accepted events",
                )
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=PATIENCE)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proxy.release()
        assert proc.returncode == -signal.SIGKILL, (tmp_path / f"kill-{fraction}.err").read_text()
        after = server.snapshot(include_events=False)
        with StateDB.open(state) as db:
            cps = db.checkpoints()
        kills.append(
            Kill(
                target=target,
                accepted=after.events_accepted,
                resent_before=before.duplicates_ignored,
                checkpoints={c.source: c.line for c in cps},
                done={c.source for c in cps if c.done},
            )
        )
        # Crash consistency: the ledger never claims more than the server holds, and every
        # event at or before a checkpoint is in the ledger (so a resume loses nothing).
        ledger = ledger_ids(state)
        held = {e["transaction_id"] for e in server.snapshot().events}
        assert ledger <= held
        for tid in expected:
            source, lineno = line_of[tid["transaction_id"]]
            if lineno <= kills[-1].checkpoints.get(source, 0):
                assert tid["transaction_id"] in ledger
        assert after.events_accepted < len(expected)  # it really died before the end

    # Each kill landed where it was meant to, later than the one before.
    accepted_at_kill = [k.accepted for k in kills]
    assert accepted_at_kill == sorted(accepted_at_kill)
    for k in kills:
        assert k.accepted >= k.target
    # Resume inside files: by the last kill the first file is finished.
    assert str(files[0]) in kills[-1].done

    # Re-run the same command until it completes.
    final_resent_before = server.snapshot(include_events=False).duplicates_ignored
    final = subprocess.run(argv, cwd=ROOT, env=child_env(), capture_output=True, timeout=120)
    assert final.returncode == 0, final.stderr.decode()
    assert b"took over the lock" in final.stderr
    summary = summary_json(final.stdout)
    end = server.snapshot()

    # Exactly the expected events, each once in effect.
    assert by_id(end.events) == by_id(expected)
    assert end.events_accepted == len(expected) == len(end.events)
    # (batches_rejected_400 may be > 0: a body cut short by the kill is answered 400 by the
    # fake, after the client is gone; those events were never ingested nor counted received.)
    assert not end.faults
    # Re-sent events: the server saw them twice and ignored the second copy. Each re-run
    # re-sends at most the batches that were in flight when the run before it was killed.
    resent = end.events_received - end.events_accepted
    assert resent == end.duplicates_ignored
    starts = [k.resent_before for k in kills] + [final_resent_before, end.duplicates_ignored]
    per_run = [b - a for a, b in pairwise(starts)]
    assert per_run[0] == 0  # the first run had nothing to re-send
    resent_per_kill = per_run[1:]
    assert len(resent_per_kill) == len(kills)
    assert all(n <= IN_FLIGHT_WINDOW for n in resent_per_kill), resent_per_kill
    assert resent > 0  # the kills did land mid-flight (the held batches were accepted)
    # The final run skipped the finished file(s) and resumed inside the rest: it sent what
    # the server lacked plus at most the in-flight window, and the ledger skipped only events
    # re-read between the checkpoint and the kill (resolved out of order, so also bounded).
    assert summary["inputs_skipped"] >= 1
    remaining = len(expected) - kills[-1].accepted
    assert remaining <= summary["sent"] <= remaining + IN_FLIGHT_WINDOW
    assert summary["unchanged"] <= IN_FLIGHT_WINDOW
    last = kills[-1]
    assert summary["inputs_skipped"] == len(last.done)
    assert summary["read"] == sum(
        PER_FILE - last.checkpoints.get(f, 0) for f in inputs if f not in last.done
    )
    assert ledger_ids(state) == set(by_id(expected))
    print(  # shown with -s: the figures of this run
        f"kills at {accepted_at_kill} of {len(expected)}; re-sent {resent_per_kill} "
        f"(bound {IN_FLIGHT_WINDOW} each); final run sent {summary['sent']}, "
        f"unchanged {summary['unchanged']}, skipped {summary['inputs_skipped']} inputs"
    )

    # A re-run with nothing new reads nothing, sends nothing and exits 0.
    requests = end.requests
    again = subprocess.run(argv, cwd=ROOT, env=child_env(), capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    noop = summary_json(again.stdout)
    assert (noop["read"], noop["sent"], noop["inputs_skipped"]) == (0, 0, FILES)
    assert server.snapshot(include_events=False).requests == requests

    # status shows every run (killed ones never ended) and the finished checkpoints.
    status = runner.invoke(app, ["status", "--state", str(state), "--json"])
    assert status.exit_code == 0, status.output
    shown = summary_json(status.stdout)
    assert shown["ledger"] == len(expected)
    assert shown["lock"] is None
    exits = sorted((r["exit_code"] for r in shown["runs"]), key=lambda c: -1 if c is None else c)
    assert exits == [None, None, None, 0, 0]
    assert {c["source"]: c["done"] for c in shown["checkpoints"]} == dict.fromkeys(inputs, True)
    text = runner.invoke(app, ["status", "--state", str(state)])
    assert text.exit_code == 0
    assert f"ledger {len(expected)}" in text.stderr.splitlines()
    assert "lock: free" in text.stderr
    assert text.stderr.count(" replay unfinished: ") == 3
    assert text.stderr.count(" replay exit_code 0: ") == 2
    for name in inputs:
        assert f"  {name}: done" in text.stderr


# -- in-process re-runs ------------------------------------------------------------------------


def replay(runner: CliRunner, server: FakeMetronome, state: Path, *args: str) -> Any:
    return runner.invoke(
        app,
        [
            "replay", "-m", MAPPING, "--now", SAMPLES_NOW, "--api-url", server.url, "-q",
            "--state", str(state), "--json", *args,
        ],
        env={"METRONOME_BEARER_TOKEN": TOKEN},
    )  # fmt: skip


def test_second_run_while_the_lock_is_held_exits_3(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    """A live holder (this very process) keeps the lock: the second run sends nothing."""
    server = fake_metronome()
    state = tmp_path / "state.db"
    with StateDB.open(state) as holder:
        holder.acquire_lock("cron-run-1")
        result = replay(runner, server, state, str(SAMPLES / "events"))
        assert result.exit_code == 3, result.output
        assert f"state file {state} is locked by run cron-run-1 (pid {os.getpid()}" in (
            result.stderr
        )
        assert "another segmetro run is using it" in result.stderr
        locked = summary_json(result.stdout)  # --json: the error object, not nothing
        assert (locked["error"]["kind"], locked["exit_code"]) == ("locked", 3)
        assert server.snapshot(include_events=False).requests == 0
        # The refused run neither took nor released the holder's lock, and left no run row.
        lock = holder.lock_holder()
        assert lock is not None
        assert lock.run_id == "cron-run-1"
        assert holder.runs() == []
        holder.release_lock("cron-run-1")
    result = replay(runner, server, state, str(SAMPLES / "events"))
    assert result.exit_code == 1, result.output  # the samples hold rejects
    assert summary_json(result.stdout)["sent"] == 115  # every billable sample event
    assert server.snapshot(include_events=False).events_accepted == 115


def test_changed_input_file_is_read_again_and_only_new_events_are_sent(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    start = SAMPLES_NOW_DT - timedelta(days=3)
    first = write_jsonl(tmp_path / "a.jsonl", list(messages(300, start=start, prefix="a")))
    other = write_jsonl(tmp_path / "b.jsonl", list(messages(200, start=start, prefix="b")))
    server = fake_metronome()
    state = tmp_path / "state.db"
    done = replay(runner, server, state, str(first), str(other))
    assert done.exit_code == 0, done.output
    before = summary_json(done.stdout)
    in_first = len(mapped(runner, str(first)))

    extra = list(messages(40, start=start, prefix="a-more", seed=99))
    with first.open("ab") as fh:
        fh.write(b"".join(orjson.dumps(m) + b"\n" for m in extra))
    new_ids = {e["transaction_id"] for e in mapped(runner, str(first))} - {
        e["transaction_id"] for e in server.snapshot().events
    }
    assert 0 < len(new_ids) < 40
    received = server.snapshot(include_events=False).events_received

    again = replay(runner, server, state, str(first), str(other))
    assert again.exit_code == 0, again.output
    assert f"warning: {first} changed since its checkpoint" in again.stderr
    assert "reading it again from the start" in again.stderr
    summary = summary_json(again.stdout)
    assert summary["inputs_skipped"] == 1  # b.jsonl is unchanged and done
    assert summary["read"] == 340
    assert summary["unchanged"] == in_first
    assert summary["sent"] == len(new_ids)
    end = server.snapshot()
    assert end.events_received - received == len(new_ids)  # nothing old went out again
    assert end.duplicates_ignored == 0
    assert end.events_accepted == before["sent"] + len(new_ids)

    # And the checkpoint now describes the new file: a third run skips both.
    third = replay(runner, server, state, str(first), str(other))
    assert third.exit_code == 0, third.output
    assert "changed since its checkpoint" not in third.stderr
    assert (summary_json(third.stdout)["inputs_skipped"], summary_json(third.stdout)["read"]) == (
        2,
        0,
    )


# A state file as the first released schema wrote it: no payloads, options or done flags.
_V1 = """
CREATE TABLE runs (id TEXT PRIMARY KEY, command TEXT NOT NULL, started_at TEXT NOT NULL,
                   ended_at TEXT, exit_code INTEGER);
CREATE TABLE checkpoints (source TEXT PRIMARY KEY, identity TEXT NOT NULL,
                          line INTEGER NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE ledger (transaction_id TEXT PRIMARY KEY, digest BLOB NOT NULL,
                     sent_at TEXT NOT NULL, run_id TEXT);
CREATE TABLE lock (id INTEGER PRIMARY KEY CHECK (id = 1), run_id TEXT NOT NULL,
                   pid INTEGER NOT NULL, acquired_at TEXT NOT NULL);
INSERT INTO runs VALUES ('r1', 'replay', '2026-11-25T00:00:00.000Z',
                         '2026-11-25T00:01:00.000Z', 0);
INSERT INTO checkpoints VALUES ('/data/old.jsonl', '10:1700000000', 42,
                                '2026-11-25T00:01:00.000Z');
PRAGMA user_version = 1;
"""


def make_v1(path: Path, ledger: list[tuple[str, bytes]]) -> Path:
    conn = sqlite3.connect(path)
    try:
        conn.executescript(_V1)
        conn.executemany(
            "INSERT INTO ledger VALUES (?, ?, '2026-11-25T00:00:30.000Z', 'r1')", ledger
        )
        conn.commit()
    finally:
        conn.close()
    return path


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_state_file_from_schema_v1_works_with_status_dry_run_and_replay(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    """v1 kept digests but no payloads: they still mark events unchanged or changed."""
    from segmetro.dedup import payload_digest

    src = write_jsonl(
        tmp_path / "e.jsonl",
        list(messages(60, start=SAMPLES_NOW_DT - timedelta(days=2), seed=5)),
    )
    expected = mapped(runner, str(src))
    same, changed = expected[0], expected[1]
    state = make_v1(
        tmp_path / "state.db",
        [
            (same["transaction_id"], payload_digest(same)),
            (changed["transaction_id"], payload_digest({**changed, "properties": {}})),
        ],
    )

    status = runner.invoke(app, ["status", "--state", str(state), "--json"])
    assert status.exit_code == 0, status.output
    shown = summary_json(status.stdout)
    assert shown["ledger"] == 2
    assert [(r["id"], r["exit_code"]) for r in shown["runs"]] == [("r1", 0)]
    assert [(c["source"], c["line"], c["done"]) for c in shown["checkpoints"]] == [
        ("/data/old.jsonl", 42, False)
    ]

    plan = runner.invoke(
        app,
        ["replay", "-m", MAPPING, "--now", SAMPLES_NOW, "--dry-run", "--json", "--state",
         str(state), str(src)],
    )  # fmt: skip
    assert plan.exit_code == 1, plan.output  # one changed event
    shown = summary_json(plan.stdout)
    assert shown["new"] == len(expected) - 2
    assert shown["unchanged"] == 1
    assert shown["changed"] == 1
    (diff,) = shown["changed_sample"]
    assert diff["transaction_id"] == changed["transaction_id"]
    assert diff["changes"] == [
        "(the payload sent then was not recorded by this older state file; only its digest differs)"
    ]
    assert user_version(state) == 1  # the dry run did not migrate (or otherwise write) it

    server = fake_metronome()
    # v1 recorded no --api-url: the migration gives its rows to the default URL, account
    # unknown. Here they were sent to the fake, so point that destination at it.
    with StateDB.open(state) as db:
        (dest,) = db.destinations()
        assert (dest.api_url, dest.account) == (DEFAULT_API_URL, None)
    with sqlite3.connect(state) as conn:
        conn.execute("UPDATE destinations SET api_url = ?", (server.url,))
    conn.close()
    assert user_version(state) == SCHEMA_VERSION
    result = replay(runner, server, state, str(src), "--rejects", str(tmp_path / "rej.jsonl"))
    assert result.exit_code == 1, result.output  # the changed event is a reject
    assert "this token now claims them" in result.stderr
    summary = summary_json(result.stdout)
    assert (summary["sent"], summary["unchanged"], summary["rejected_by_reason"]) == (
        len(expected) - 2,
        1,
        {"changed": 1},
    )
    assert set(by_id(server.snapshot().events)) == set(by_id(expected)) - {
        same["transaction_id"],
        changed["transaction_id"],
    }
    (reject,) = [orjson.loads(x) for x in (tmp_path / "rej.jsonl").read_bytes().splitlines()]
    assert reject["reason"] == "changed"
    assert "was sent by run r1 with a different payload" in reject["detail"]
    assert "not recorded" in reject["detail"]
    with StateDB.open(state) as db:
        assert [r.id for r in db.runs()][-1] == "r1"
        assert db.ledger_size() == len(expected)

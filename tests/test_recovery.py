"""Runs that stop early and the runs after them: nothing undelivered is ever marked done."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from segmetro.cli import app
from segmetro.fake_metronome import FakeMetronome
from segmetro.models import Reason, Record, Reject
from segmetro.pipeline import resume as pipeline_resume
from segmetro.state import StateDB
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


def export(tmp_path: Path, n: int = 600, name: str = "export.jsonl") -> Path:
    items = list(messages(n, start=SAMPLES_NOW_DT - timedelta(days=3), seed=n))
    for m in items:
        m["event"] = "API Call"
    return write_jsonl(tmp_path / name, items)


def replay(runner: CliRunner, server_url: str, state: Path, *args: str) -> Any:
    return runner.invoke(
        app,
        [
            "replay", "-m", MAPPING, "--now", SAMPLES_NOW, "--api-url", server_url, "-q",
            "--state", str(state), "--json", *args,
        ],
        env={"METRONOME_BEARER_TOKEN": TOKEN},
    )  # fmt: skip


def test_undeliverable_events_are_sent_by_the_next_run(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    """Retries exhausted (exit 3): the checkpoint stays behind; the re-run delivers the rest."""
    src = export(tmp_path)
    state = tmp_path / "state.db"
    server = fake_metronome(fail_status=503, fail_count=3)
    rejects = tmp_path / "rejects.jsonl"
    first = replay(
        runner, server.url, state, "--max-retries", "0", "--batch-size", "50",
        "--concurrency", "1", "--rejects", str(rejects), str(src),
    )  # fmt: skip
    assert first.exit_code == 3, first.output
    summary = summary_json(first.stdout)
    assert summary["rejected_by_reason"]["undeliverable"] == 50
    assert summary["unsent"] > 0
    with StateDB.open(state, readonly=True) as db:
        (checkpoint,) = db.checkpoints()
    assert not checkpoint.done
    second = replay(runner, server.url, state, "--rejects", str(rejects), str(src))
    assert second.exit_code == 0, second.output
    accepted = {e["transaction_id"] for e in server.snapshot().events}
    assert accepted == {f"m-{i:07d}" for i in range(600)}
    # The rejects file keeps the first run's entries: re-running appends, it never truncates.
    reasons = [orjson.loads(line)["reason"] for line in rejects.read_bytes().splitlines()]
    assert reasons == ["undeliverable"] * 50


def test_unreachable_api_marks_nothing_done(runner: CliRunner, tmp_path: Path) -> None:
    """Nothing listening: no input is checkpointed as done, so a later run sends everything."""
    src = export(tmp_path, 120)
    state = tmp_path / "state.db"
    result = replay(runner, "http://127.0.0.1:9", state, "--max-retries", "0", str(src))
    assert result.exit_code == 3
    with StateDB.open(state, readonly=True) as db:
        assert all(not c.done for c in db.checkpoints())
        assert db.ledger_size() == 0


def test_an_input_that_breaks_off_is_resumed_not_finished(
    runner: CliRunner,
    fake_metronome: Callable[..., FakeMetronome],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read that fails part-way (unreadable) leaves the input unfinished for the next run."""
    src = export(tmp_path, 300)
    state = tmp_path / "state.db"
    real_read = pipeline_resume.read_object

    def breaks_off(obj: Any, **kw: Any) -> Iterator[Record | Reject]:
        for item in real_read(obj, **kw):
            if isinstance(item, Record) and item.line > 100:
                yield Reject(Reason.UNREADABLE, "connection reset", f"{obj.name}:{item.line}")
                return
            yield item

    monkeypatch.setattr(pipeline_resume, "read_object", breaks_off)
    server = fake_metronome()
    first = replay(runner, server.url, state, str(src))
    assert first.exit_code == 1
    assert server.snapshot().events_accepted == 100
    with StateDB.open(state, readonly=True) as db:
        (checkpoint,) = db.checkpoints()
    assert (checkpoint.line, checkpoint.done) == (100, False)
    monkeypatch.setattr(pipeline_resume, "read_object", real_read)
    second = replay(runner, server.url, state, str(src))
    assert second.exit_code == 0, second.output
    assert summary_json(second.stdout)["read"] == 200
    assert server.snapshot().events_accepted == 300


def test_daily_cron_with_a_relative_since_resumes(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    """`--since 7d` moves every day; a window inside the checkpoint's does not re-read inputs."""
    src = export(tmp_path, 200)
    state = tmp_path / "state.db"
    server = fake_metronome()
    first = replay(runner, server.url, state, "--since", "7d", str(src))
    assert first.exit_code == 0, first.output
    later = runner.invoke(
        app,
        [
            "replay", "-m", MAPPING, "--now", "2026-11-26T06:00:00Z", "--api-url", server.url,
            "-q", "--state", str(state), "--json", "--since", "7d", str(src),
        ],
        env={"METRONOME_BEARER_TOKEN": TOKEN},
    )  # fmt: skip
    assert later.exit_code == 0, later.output
    summary = summary_json(later.stdout)
    assert (summary["inputs_skipped"], summary["read"], summary["warnings"]) == (1, 0, [])
    wider = replay(runner, server.url, state, "--since", "30d", str(src))
    assert wider.exit_code == 0
    assert "reach beyond the window of its checkpoint" in summary_json(wider.stdout)["warnings"][0]
    assert server.snapshot(include_events=False).events_received == 200


def test_dry_run_writes_its_rejects_file(runner: CliRunner, tmp_path: Path) -> None:
    """`--dry-run --rejects F` writes what a run would reject."""
    rejects = tmp_path / "plan-rejects.jsonl"
    result = runner.invoke(
        app,
        [
            "replay", "--dry-run", "-m", MAPPING, "--now", SAMPLES_NOW, "--state",
            str(tmp_path / "s.db"), "--rejects", str(rejects), str(SAMPLES / "events"),
        ],
    )  # fmt: skip
    assert result.exit_code == 1
    reasons = sorted(orjson.loads(x)["reason"] for x in rejects.read_bytes().splitlines())
    assert reasons == ["invalid_json", "invalid_json", "missing_field", "not_object", "too_old"]
    assert not (tmp_path / "s.db").exists()


def test_unwritable_rejects_file_is_a_configuration_error(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    """A --rejects path that cannot be written: exit 2, one clear line, the run recorded as 2."""
    state = tmp_path / "state.db"
    server = fake_metronome()
    bad = tmp_path / "no-such-dir" / "rejects.jsonl"
    result = replay(runner, server.url, state, "--rejects", str(bad), str(SAMPLES / "events"))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot write rejects file {bad}: ")
    assert "Traceback" not in result.output
    with StateDB.open(state, readonly=True) as db:
        (run,) = db.runs()
        assert run.exit_code == 2
        assert db.lock_holder() is None
    mapped = runner.invoke(app, ["map", "-m", MAPPING, "-o", str(bad), str(SAMPLES / "events")])
    assert mapped.exit_code == 2
    assert f"cannot write {bad}" in mapped.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_saves_state_prints_the_summary_and_exits_130(
    fake_metronome: Callable[..., FakeMetronome],
    holding_proxy: Callable[[str], HoldingProxy],
    tmp_path: Path,
    signum: int,
) -> None:
    """SIGINT or SIGTERM mid-run: exit 130, a summary, the run recorded, the lock free.

    A proxy holds every answer from the one after the 200th accepted event on, so the signal
    always comes mid-run, with batches accepted by Metronome but never acknowledged.
    """
    src = export(tmp_path, 3000)
    state = tmp_path / "state.db"
    server = fake_metronome()
    proxy = holding_proxy(server.url)
    proxy.hold_when(lambda: server.snapshot(include_events=False).events_accepted >= 200)
    env = dict(os.environ, METRONOME_BEARER_TOKEN=TOKEN)
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "segmetro", "replay", "-m", MAPPING, "--now", SAMPLES_NOW,
            "--api-url", proxy.url, "--state", str(state), "--batch-size", "20",
            "--concurrency", "2", "--json", str(src),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        wait_until(lambda: proxy.held.is_set() or proc.poll() is not None, "a held answer")
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=PATIENCE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err.decode()
    summary = summary_json(out)
    assert summary["exit_code"] == 130
    accepted = server.snapshot(include_events=False).events_accepted
    assert 0 < summary["sent"] < accepted  # the held batches were accepted, never acknowledged
    assert b"interrupted" in err
    with StateDB.open(state, readonly=True) as db:
        (run,) = db.runs()
        assert run.exit_code == 130
        assert db.lock_holder() is None
        assert db.ledger_size() == summary["sent"]


def test_unlock_removes_a_lock_from_another_host_only(runner: CliRunner, tmp_path: Path) -> None:
    """A lock from a host we cannot check is removable by hand; a live local one is not."""
    state = tmp_path / "state.db"
    with StateDB.open(state) as db:
        db.acquire_lock("live-run")
    held = runner.invoke(app, ["unlock", "--state", str(state)])
    assert held.exit_code == 3
    assert "which is still running; stop it instead of unlocking" in held.stderr
    with StateDB.open(state) as db:
        db.release_lock("live-run")
        db.acquire_lock("pod-run")
    with sqlite3.connect(state) as conn:
        conn.execute("UPDATE lock SET host = 'cron-pod-7f9c'")
    conn.close()
    removed = runner.invoke(app, ["unlock", "--state", str(state)])
    assert removed.exit_code == 0, removed.output
    assert "removed the lock of run pod-run" in removed.stderr
    assert "on host cron-pod-7f9c" in removed.stderr
    with StateDB.open(state, readonly=True) as db:
        assert db.lock_holder() is None


def test_rejects_file_that_is_an_input_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    """Appending to a file being read would never end: exit 2 before anything is read."""
    rejects = tmp_path / "rejects.jsonl"
    runner.invoke(
        app,
        [
            "map",
            "-m",
            MAPPING,
            "--now",
            SAMPLES_NOW,
            "--rejects",
            str(rejects),
            str(SAMPLES / "events"),
        ],
    )
    assert rejects.stat().st_size > 0
    for argv in (
        ["map", "-m", MAPPING],
        ["replay", "--dry-run", "-m", MAPPING, "--state", str(tmp_path / "s.db")],
        ["replay", "-m", MAPPING, "--state", str(tmp_path / "s.db")],
    ):
        result = runner.invoke(
            app, [*argv, "--rejects", str(rejects), str(rejects)],
            env={"METRONOME_BEARER_TOKEN": TOKEN},
        )  # fmt: skip
        assert result.exit_code == 2, (argv, result.output)
        assert f"--rejects {rejects} is also an input" in result.stderr


def test_dry_run_never_overwrites_a_rejects_file(runner: CliRunner, tmp_path: Path) -> None:
    """The rejects file of a real run is the record of unbilled events; a plan must not wipe it."""
    rejects = tmp_path / "rejects.jsonl"
    rejects.write_bytes(b'{"segmetro_reject": 1, "reason": "bad_request"}\n')
    result = runner.invoke(
        app,
        [
            "replay", "--dry-run", "-m", MAPPING, "--now", SAMPLES_NOW, "--state",
            str(tmp_path / "s.db"), "--rejects", str(rejects), str(SAMPLES / "events"),
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "already holds rejects" in result.stderr
    assert rejects.read_bytes() == b'{"segmetro_reject": 1, "reason": "bad_request"}\n'


def test_a_full_disk_for_rejects_stops_the_run_and_keeps_the_ledger_true(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    """/dev/full: exit 2 with one line, at the first reject; every event Metronome
    acknowledged is in the ledger."""
    items = list(messages(2000, start=SAMPLES_NOW_DT - timedelta(days=3), seed=4))
    for m in items:
        m["event"] = "API Call"
    items[3]["timestamp"] = "not a time"
    src = write_jsonl(tmp_path / "e.jsonl", items)
    state = tmp_path / "state.db"
    server = fake_metronome()
    result = replay(runner, server.url, state, "--rejects", "/dev/full", str(src))
    assert result.exit_code == 2, result.output
    assert "error: cannot write rejects file /dev/full: No space left on device." in result.stderr
    assert "Traceback" not in result.output
    summary = summary_json(result.stdout)
    assert summary["emitted"] == summary["sent"] + summary["dead_lettered"] + summary["unsent"]
    # found at the first reject, not after the whole input was read
    assert summary["read"] < len(items)
    with StateDB.open(state, readonly=True) as db:
        ledger = db.ledger_size()
        (run,) = db.runs()
    assert run.exit_code == 2
    assert ledger == summary["sent"]
    assert summary["sent"] <= server.snapshot(include_events=False).events_accepted
    # Nothing was checkpointed past the lost reject: the next run (with a real file) finishes.
    rejects = tmp_path / "rejects.jsonl"
    again = replay(runner, server.url, state, "--rejects", str(rejects), str(src))
    assert again.exit_code == 1, again.output
    assert {e["transaction_id"] for e in server.snapshot().events} == {
        m["messageId"] for i, m in enumerate(items) if i != 3
    }
    assert [orjson.loads(x)["reason"] for x in rejects.read_bytes().splitlines()] == [
        "invalid_timestamp"
    ]


def test_ctrl_c_during_a_long_read_that_sends_nothing(
    fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    """Input the trigger filters out: SIGINT stops the read promptly, not at the end of input.

    The input comes through a pipe, so the signal comes at a point that is known, not guessed:
    the read is under way (the pipe has taken several MiB, more than it and a read chunk can
    hold) and has not ended (the input is written only as fast as it is read, so a read that
    did not stop would take all of it).
    """
    total = 1_000_000
    block = 10_000
    line = b'{"type":"page","name":"Home","messageId":"p-%d","timestamp":"2026-11-24T10:00:00Z"}\n'
    under_way = threading.Event()
    state = tmp_path / "state.db"
    server = fake_metronome()
    env = dict(os.environ, METRONOME_BEARER_TOKEN=TOKEN)
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "segmetro", "replay", "-m", MAPPING, "--now", SAMPLES_NOW,
            "--api-url", server.url, "--state", str(state), "--json", "-",
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip
    stdin = proc.stdin
    assert stdin is not None

    def feed() -> None:
        written = 0
        try:
            for start in range(0, total, block):
                chunk = b"".join(line % i for i in range(start, start + block))
                stdin.write(chunk)
                written += len(chunk)
                if written >= 4 << 20:
                    under_way.set()
            stdin.close()
        except BrokenPipeError:  # the child stopped reading and exited: what the test expects
            with contextlib.suppress(BrokenPipeError):
                stdin.close()
        finally:
            under_way.set()

    writer = threading.Thread(target=feed, name="feed-stdin", daemon=True)
    writer.start()
    try:
        wait_until(under_way.is_set, "4 MiB of input to be taken")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=PATIENCE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        writer.join(PATIENCE)
    assert proc.stdout is not None
    assert proc.stderr is not None
    with proc.stdout, proc.stderr:
        out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 130, err.decode()
    summary = summary_json(out)
    assert 0 < summary["read"] < total
    assert summary["read"] == summary["unparseable"] + summary["matched"] + summary["filtered"]
    assert summary["error"]["kind"] == "interrupted"
    assert summary["sent"] == 0
    with StateDB.open(state, readonly=True) as db:
        (run,) = db.runs()
        assert run.exit_code == 130
        assert run.counts is not None
        assert run.counts["read"] == summary["read"]


def test_dry_run_with_resend_changed_reads_everything(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    """--resend-changed makes a replay re-read finished inputs; its plan does too."""
    src = export(tmp_path, 50)
    state = tmp_path / "state.db"
    server = fake_metronome()
    assert replay(runner, server.url, state, str(src)).exit_code == 0
    plain = runner.invoke(
        app,
        [
            "replay",
            "--dry-run",
            "--json",
            "-m",
            MAPPING,
            "--now",
            SAMPLES_NOW,
            "--api-url",
            server.url,
            "--state",
            str(state),
            str(src),
        ],
    )
    assert summary_json(plain.stdout)["inputs_skipped"] == 1
    resend = runner.invoke(
        app,
        [
            "replay", "--dry-run", "--json", "--resend-changed", "-m", MAPPING, "--now",
            SAMPLES_NOW, "--api-url", server.url, "--state", str(state), str(src),
        ],
    )  # fmt: skip
    plan = summary_json(resend.stdout)
    assert (plan["inputs_skipped"], plan["unchanged"]) == (0, 50)


def test_an_input_without_any_event_is_checkpointed_once(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    """A file of bad lines is read once: the next run skips it instead of re-reporting it."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "bad.jsonl").write_bytes(b"not json\n[1]\n")
    export(inputs, 10, name="good.jsonl")
    state = tmp_path / "state.db"
    rejects = tmp_path / "rejects.jsonl"
    server = fake_metronome()
    first = replay(runner, server.url, state, "--rejects", str(rejects), str(inputs))
    assert first.exit_code == 1
    second = replay(runner, server.url, state, "--rejects", str(rejects), str(inputs))
    assert second.exit_code == 0, second.output
    assert summary_json(second.stdout)["inputs_skipped"] == 2
    assert len(rejects.read_bytes().splitlines()) == 2

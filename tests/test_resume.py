"""Resume after `kill -9`, re-runs with nothing new, changed inputs, the lock, old state files.

The kill test runs a real `segmetro replay` process against a fake Metronome with latency in
this process, kills it with SIGKILL while batches are in flight, and re-runs the same command
until one finishes.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
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
from segmetro.state import StateDB
from tests.conftest import ROOT, SAMPLES, SAMPLES_NOW, SAMPLES_NOW_DT, TOKEN
from tests.exports import messages, write_jsonl

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


def replay_argv(server: FakeMetronome, state: Path, *inputs: str, json: bool = True) -> list[str]:
    argv = [
        sys.executable, "-m", "segmetro", "replay", "-m", MAPPING, "--now", SAMPLES_NOW,
        "--api-url", server.url, "--state", str(state), "--batch-size", str(BATCH),
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
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
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

    server = fake_metronome(latency_ms=50, latency_jitter_ms=30, seed=9)
    state = tmp_path / "state.db"
    argv = replay_argv(server, state, *inputs)
    kills: list[Kill] = []
    for fraction in (0.15, 0.50, 0.85):
        target = int(len(expected) * fraction)
        before = server.snapshot(include_events=False)
        err = (tmp_path / f"kill-{fraction}.err").open("wb")
        with err:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=err
            )
            try:
                while proc.poll() is None:
                    if server.snapshot(include_events=False).events_accepted >= target:
                        proc.send_signal(signal.SIGKILL)
                        break
                    time.sleep(0.002)
                proc.wait(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
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
    summary = orjson.loads(final.stdout)
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
    assert resent > 0  # the kills did land mid-flight (latency ≥ 50 ms after acceptance)
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
    noop = orjson.loads(again.stdout)
    assert (noop["read"], noop["sent"], noop["inputs_skipped"]) == (0, 0, FILES)
    assert server.snapshot(include_events=False).requests == requests

    # status shows every run (killed ones never ended) and the finished checkpoints.
    status = runner.invoke(app, ["status", "--state", str(state), "--json"])
    assert status.exit_code == 0, status.output
    shown = orjson.loads(status.stdout)
    assert shown["ledger"] == len(expected)
    assert shown["lock"] is None
    exits = sorted((r["exit_code"] for r in shown["runs"]), key=lambda c: -1 if c is None else c)
    assert exits == [None, None, None, 0, 0]
    assert {c["source"]: c["done"] for c in shown["checkpoints"]} == dict.fromkeys(inputs, True)
    text = runner.invoke(app, ["status", "--state", str(state)])
    assert text.exit_code == 0
    assert f"{len(expected)} delivered events in the ledger" in text.stderr
    assert "lock: free" in text.stderr
    for f in inputs:
        assert f"  {f}: done" in text.stderr

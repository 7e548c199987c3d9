"""Shards at once against one PostgreSQL state and the fake Metronome, as processes.

Every shard is a ``segmetro replay`` process; the test kills one with ``kill -9`` while answers
it is owed are held by a proxy (so it dies with batches Metronome accepted but it never heard
of), cuts another's database connection, and lets two processes share one rate limit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pgserver
import pytest
from typer.testing import CliRunner

from segmetro.cli import app
from segmetro.fake_metronome import FakeMetronome
from segmetro.sources import Shard, open_inputs
from segmetro.state import open_state
from tests.exports import messages, write_jsonl
from tests.support import (
    PATIENCE,
    ROOT,
    SAMPLES,
    SAMPLES_NOW,
    SAMPLES_NOW_DT,
    TOKEN,
    HoldingProxy,
    wait_until,
)

pg_server = pgserver.pg_server
pg_url = pgserver.pg_url
PgServer = pgserver.PgServer
MAPPING = str(SAMPLES / "mapping.yaml")
BATCH, CONCURRENCY = 20, 2
#: Events a killed shard can have had accepted but not acknowledged.
IN_FLIGHT = BATCH * CONCURRENCY


def export(root: Path, objects: int = 8, per_object: int = 300, prefix: str = "o") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    start = SAMPLES_NOW_DT - timedelta(days=3)
    for i in range(objects):
        items = list(messages(per_object, start=start, seed=i, prefix=f"{prefix}{i}"))
        for m in items:
            m["event"] = "API Call"
        write_jsonl(root / f"part-{i:03d}.jsonl", items)
    return root


def replay_argv(api_url: str, state: str, root: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "segmetro", "replay", "-m", MAPPING, "--now", SAMPLES_NOW,
        "--api-url", api_url, "--state", state, "--batch-size", str(BATCH),
        "--concurrency", str(CONCURRENCY), "--json", "-q", *args, str(root),
    ]  # fmt: skip


def start(argv: list[str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ, METRONOME_BEARER_TOKEN=TOKEN)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, dict[str, Any], str]:
    try:
        out, err = proc.communicate(timeout=PATIENCE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    summary = orjson.loads(out) if out.strip() else {}
    return proc.returncode, summary, err.decode()


def events(server: FakeMetronome) -> list[bytes]:
    return sorted(orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in server.snapshot().events)


def tids_of(server: FakeMetronome) -> list[str]:
    return [str(e["transaction_id"]) for e in server.snapshot().events]


@pytest.mark.slow
def test_four_shards_at_once_one_killed_and_rerun_deliver_each_event_once(
    runner: CliRunner,
    pg_url: str,
    pg_server: PgServer,
    tmp_path: Path,
    fake_metronome: Callable[..., FakeMetronome],
    holding_proxy: Callable[[str], HoldingProxy],
) -> None:
    root = export(tmp_path / "export")
    # What one unsharded run delivers.
    reference = fake_metronome()
    whole = runner.invoke(
        app,
        ["replay", "-m", MAPPING, "--now", SAMPLES_NOW, "--api-url", reference.url, "-q",
         "--json", "--state", str(tmp_path / "one.db"), str(root)],
        env={"METRONOME_BEARER_TOKEN": TOKEN},
    )  # fmt: skip
    assert whole.exit_code == 0, whole.output
    expected = events(reference)
    assert len(expected) == 8 * 300

    server = fake_metronome()
    proxy = holding_proxy(server.url)
    parts = {k: open_inputs([str(root)], shard=Shard(k, 4)).objects for k in range(4)}
    # The shard killed is the one with the most objects (a hash can leave a shard with none).
    killed = max(parts, key=lambda k: len(parts[k]))
    prefixes = {f"o{int(Path(o.name).stem.split('-')[1])}-" for o in parts[killed]}

    def killed_accepted() -> int:
        return sum(1 for t in tids_of(server) if t[: t.index("-") + 1] in prefixes)

    def url_of(k: int) -> str:
        return proxy.url if k == killed else server.url

    proxy.hold_when(lambda: killed_accepted() >= 100)
    procs = [start(replay_argv(url_of(k), pg_url, root, "--shard", f"{k}/4")) for k in range(4)]
    victim = procs[killed]
    wait_until(lambda: proxy.held.is_set() or victim.poll() is not None, "a held answer")
    assert victim.poll() is None, "the shard finished before it could be killed mid-run"
    victim.send_signal(signal.SIGKILL)
    code, _, _ = finish(victim)
    assert code == -signal.SIGKILL
    proxy.release()
    for k, proc in enumerate(procs):
        if k != killed:
            code, summary, err = finish(proc)
            assert code == 0, err
            assert summary["shard"] == f"{k}/4"
    accepted_before = server.snapshot(include_events=False).events_accepted

    # The re-run of the killed shard takes its lock over and sends what is missing (through
    # the proxy again: what was sent is known per destination, and the URL is part of it).
    rerun = start(replay_argv(proxy.url, pg_url, root, "--shard", f"{killed}/4"))
    code, summary, err = finish(rerun)
    assert code == 0, err
    assert "took over the lock left by run" in err
    state = server.snapshot(include_events=False)
    resent = state.duplicates_ignored
    assert 0 < resent <= IN_FLIGHT
    assert summary["sent"] == len(expected) - accepted_before + resent
    assert events(server) == expected  # every event of the unsharded run, each once
    assert sorted(set(tids_of(server))) == sorted(tids_of(server))

    # An idle re-run of every shard sends nothing.
    requests = state.requests
    idle = [start(replay_argv(url_of(k), pg_url, root, "--shard", f"{k}/4")) for k in range(4)]
    for proc in idle:
        code, summary, err = finish(proc)
        assert code == 0, err
        assert summary["sent"] == 0
        assert summary["inputs_skipped"] == summary["inputs_total"]
    assert server.snapshot(include_events=False).requests == requests

    # A dry run of a shard plans against the shared ledger: everything is unchanged.
    planned_shard = next(k for k in parts if k != killed and parts[k])
    plan = runner.invoke(
        app,
        ["replay", "--dry-run", "-m", MAPPING, "--now", SAMPLES_NOW, "--api-url", server.url,
         "--state", pg_url, "--json", "--shard", f"{planned_shard}/4", "--resend-changed",
         str(root)],
        env={"METRONOME_BEARER_TOKEN": TOKEN},
    )  # fmt: skip
    assert plan.exit_code == 0, plan.output
    planned = orjson.loads(plan.stdout)
    assert planned["shard"] == f"{planned_shard}/4"
    assert planned.get("new", 0) == 0
    assert planned["unchanged"] == 300 * len(parts[planned_shard])

    status = runner.invoke(app, ["status", "--state", pg_url, "--json"])
    assert status.exit_code == 0, status.output
    shown = orjson.loads(status.stdout)
    assert [s["shard"] for s in shown["shards"]] == ["0/4", "1/4", "2/4", "3/4"]
    assert all(s["lock"] is None and s["last_run"]["exit_code"] == 0 for s in shown["shards"])
    assert shown["ledger"] == len(expected)
    assert pg_server.password not in status.output

    # A changed version of an event one shard sent turns up in an object of another shard.
    sender = next(k for k in parts if k != killed and parts[k])
    original = orjson.loads(Path(parts[sender][0].name).read_bytes().splitlines()[5])
    changed = {**original, "properties": {**original["properties"], "n": -1}}
    other, late = next(
        (k, root / f"late-{i}.jsonl")
        for i in range(100)
        for k in range(4)
        if k not in (killed, sender) and Shard(k, 4).owns(str(root / f"late-{i}.jsonl"))
    )
    write_jsonl(late, [changed])
    code, summary, err = finish(
        start(
            replay_argv(
                server.url, pg_url, root, "--shard", f"{other}/4",
                "--rejects", str(root.parent / "changed.jsonl"),
            )
        )
    )  # fmt: skip
    assert code == 1, err
    assert summary["sent"] == 0
    assert summary["rejected_by_reason"] == {"changed": 1}
    assert server.snapshot(include_events=False).requests == requests


def test_a_lost_database_connection_is_exit_3_and_the_rerun_resumes(
    pg_url: str,
    pg_server: PgServer,
    tmp_path: Path,
    fake_metronome: Callable[..., FakeMetronome],
    holding_proxy: Callable[[str], HoldingProxy],
) -> None:
    root = export(tmp_path / "export", objects=2, per_object=400)
    server = fake_metronome()
    proxy = holding_proxy(server.url)
    proxy.hold_when(lambda: server.snapshot(include_events=False).events_accepted >= 200)
    proc = start(replay_argv(proxy.url, pg_url, root))
    wait_until(lambda: proxy.held.is_set() or proc.poll() is not None, "a held answer")
    assert pg_server.terminate(pg_url.rsplit("/", 1)[1]) == 1
    proxy.release()
    code, summary, err = finish(proc)
    assert code == 3, err
    assert "lost the connection to the PostgreSQL state" in err
    assert "re-run the same command to resume" in err
    assert "Traceback" not in err
    assert pg_server.password not in err + orjson.dumps(summary).decode()
    with open_state(pg_url, readonly=True) as db:
        kept = db.ledger_size()
        (run,) = db.runs()
    assert 0 < kept <= summary["sent"]
    assert run.exit_code is None  # its end could not be recorded; the run says so
    accepted = server.snapshot(include_events=False).events_accepted

    code, again, err = finish(start(replay_argv(proxy.url, pg_url, root)))
    assert code == 0, err
    assert "took over the lock left by run" in err
    assert again["sent"] == 800 - kept
    state = server.snapshot(include_events=False)
    assert state.events_accepted == 800
    assert state.duplicates_ignored == accepted - kept
    assert state.duplicates_ignored <= IN_FLIGHT + (summary["sent"] - kept)


def test_each_shards_pacing_reacts_to_429s_the_other_causes(
    tmp_path: Path, fake_metronome: Callable[..., FakeMetronome]
) -> None:
    """Two shards share the account's limit. The one capped well below it (``--rate``) never
    gets a 429 alone, yet gets them while the other floods, and its own pace is cut; both
    deliver everything. The flood (8,000 events at the limit of 1,000/s) outlasts the capped
    shard's 3 s by far, so the two overlap even when a loaded machine starts the second late."""
    mine = export(tmp_path / "a", objects=3, per_object=400, prefix="a")
    theirs = export(tmp_path / "b", objects=8, per_object=1000, prefix="b")
    capped = ["--rate", "400", "--concurrency", "4"]
    limits = {"rate_limit": 1000.0, "rate_burst": 1000.0}
    alone = fake_metronome(**limits)
    code, solo, err = finish(
        start(replay_argv(alone.url, str(tmp_path / "solo.db"), mine, *capped))
    )
    assert code == 0, err
    assert (solo["sent"], solo["rate_limited"], solo["pace_cuts"]) == (1200, 0, 0)

    shared = fake_metronome(**limits)
    flood = start(
        replay_argv(shared.url, str(tmp_path / "b.db"), theirs, "--concurrency", "16",
                    "--batch-size", "100")
    )  # fmt: skip
    wait_until(lambda: shared.snapshot(include_events=False).rate_limited > 0, "the flood's 429")
    code_a, a, err_a = finish(start(replay_argv(shared.url, str(tmp_path / "a.db"), mine, *capped)))
    code_b, b, err_b = finish(flood)
    assert (code_a, code_b) == (0, 0), err_a + err_b
    assert a["rate_limited"] > 0
    assert a["pace_cuts"] > 0
    assert (a["sent"], b["sent"]) == (1200, 8000)
    assert shared.snapshot(include_events=False).events_accepted == 9200

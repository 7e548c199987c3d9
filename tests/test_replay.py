"""`segmetro replay` end to end, over real HTTP, against the fake Metronome."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from segmetro.cli import app
from segmetro.fake_metronome import FakeMetronome
from tests.exports import messages, write_jsonl
from tests.support import ROOT, SAMPLES, SAMPLES_NOW, SAMPLES_NOW_DT, TOKEN, summary_json

MAPPING = str(SAMPLES / "mapping.yaml")


def mapped(runner: CliRunner, *args: str) -> list[dict[str, Any]]:
    """What `segmetro map` says would be sent: the reference for what the server must hold."""
    result = runner.invoke(app, ["map", "-m", MAPPING, "--now", SAMPLES_NOW, *args])
    assert result.exit_code in (0, 1), result.output
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def replay(runner: CliRunner, server: FakeMetronome, *args: str, state: Path) -> Any:
    return runner.invoke(
        app,
        [
            "replay", "-m", MAPPING, "--now", SAMPLES_NOW, "--api-url", server.url, "-q",
            "--state", str(state), *args,
        ],
        env={"METRONOME_BEARER_TOKEN": TOKEN},
    )  # fmt: skip


def by_id(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["transaction_id"]: e for e in events}


def test_replay_with_faults_delivers_exactly_the_expected_events(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    """10% 500s, 5% 429s, 2% partial ingests, 2% dropped connections: no loss, no extras."""
    src = write_jsonl(
        tmp_path / "export.jsonl",
        list(messages(3000, start=SAMPLES_NOW_DT - timedelta(days=5), seed=11)),
    )
    expected = mapped(runner, str(src))
    server = fake_metronome(
        seed=3, p_500=0.10, p_429=0.05, retry_after_ms=20, p_partial=0.02, p_drop=0.02
    )
    rejects = tmp_path / "rejects.jsonl"
    result = replay(
        runner,
        server,
        str(src),
        "--batch-size",
        "20",
        "--rejects",
        str(rejects),
        "--json",
        state=tmp_path / "state.db",
    )
    assert result.exit_code == 0, result.output
    state = server.snapshot()
    assert by_id(state.events) == by_id(expected)
    assert state.events_accepted == len(expected)
    assert sum(state.faults.values()) >= 8
    summary = summary_json(result.stdout)
    assert summary["sent"] == len(expected)
    assert summary["emitted"] == len(expected)
    assert summary["emitted"] == summary["sent"] + summary["dead_lettered"] + summary["unsent"]
    assert summary["read"] == summary["matched"] + summary["filtered"]
    assert summary["retries"] + summary["rate_limited"] >= sum(state.faults.values())
    assert rejects.read_bytes() == b""


def test_replay_samples_sends_good_events_and_writes_rejects(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    """The samples: billable events reach Metronome once; bad lines land in the rejects file."""
    expected = mapped(runner, str(SAMPLES / "events"))
    server = fake_metronome(seed=5, p_500=0.2)
    rejects = tmp_path / "rejects.jsonl"
    result = replay(
        runner,
        server,
        str(SAMPLES / "events"),
        "--batch-size",
        "7",
        "--rejects",
        str(rejects),
        state=tmp_path / "state.db",
    )
    assert result.exit_code == 1, result.output
    assert by_id(server.snapshot().events) == by_id(expected)
    written = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    reasons = sorted(r["reason"] for r in written)
    assert reasons == sorted(
        ["invalid_json", "invalid_json", "not_object", "missing_field", "too_old"]
    )
    for entry in written:
        path, line = entry["source"].rsplit(":", 1)
        assert Path(path).parent == SAMPLES / "events"
        assert int(line) > 0


def test_rejects_file_is_a_valid_input(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    """Replaying a rejects file re-reads the original events (here, after a fixed mapping)."""
    rejects = tmp_path / "rejects.jsonl"
    runner.invoke(
        app,
        [
            "map",
            "-m",
            MAPPING,
            "--now",
            SAMPLES_NOW,
            str(SAMPLES / "events"),
            "--rejects",
            str(rejects),
        ],
    )
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(
        (SAMPLES / "mapping.yaml")
        .read_text()
        .replace(
            "customer_id: $.context.groupId",
            'customer_id:\n        "@coalesce": [$.context.groupId, {"@literal": "unassigned"}]',
        )
    )
    server = fake_metronome()
    result = runner.invoke(
        app,
        [
            "replay",
            "-m",
            str(fixed),
            "--now",
            SAMPLES_NOW,
            "--api-url",
            server.url,
            "-q",
            str(rejects),
        ],
        env={"METRONOME_BEARER_TOKEN": TOKEN},
    )
    assert result.exit_code == 1
    events = server.snapshot().events
    assert [e["transaction_id"] for e in events] == ["ajs-orphan-0001"]
    assert events[0]["customer_id"] == "unassigned"


def test_bad_event_hidden_in_a_batch_of_100_is_isolated(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    """Metronome refuses one event of 100: the other 99 are delivered, the one dead-lettered."""
    items = list(messages(100, start=SAMPLES_NOW_DT - timedelta(days=2), seed=2))
    for m in items:
        m["event"] = "API Call"
    # The server's clock runs 3 days ahead: this event is too old for it, not for us.
    items[57]["timestamp"] = (
        (SAMPLES_NOW_DT - timedelta(days=33)).isoformat().replace("+00:00", "Z")
    )
    src = write_jsonl(tmp_path / "export.jsonl", items)
    server = fake_metronome(now=SAMPLES_NOW_DT + timedelta(days=3))
    rejects = tmp_path / "rejects.jsonl"
    result = replay(
        runner, server, str(src), "--rejects", str(rejects), state=tmp_path / "state.db"
    )
    assert result.exit_code == 1, result.output
    accepted = {e["transaction_id"] for e in server.snapshot().events}
    assert accepted == {m["messageId"] for m in items} - {items[57]["messageId"]}
    (dead,) = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert dead["reason"] == "bad_request"
    assert dead["source"] == f"{src}:58"
    assert dead["payload"]["transaction_id"] == items[57]["messageId"]
    assert dead["event"] == items[57]
    assert "34 days" in dead["detail"] or "old" in dead["detail"]


@pytest.mark.parametrize(
    ("server_options", "status"),
    [({"token": "another-token"}, "403"), ({"fail_status": 401}, "401")],
)
def test_refused_token_stops_with_exit_3(
    runner: CliRunner,
    fake_metronome: Callable[..., FakeMetronome],
    tmp_path: Path,
    server_options: dict[str, Any],
    status: str,
) -> None:
    """A 401 or 403 ends the run at once with exit 3 and says which variable to check."""
    server = fake_metronome(**server_options)
    result = replay(runner, server, str(SAMPLES / "events"), state=tmp_path / "state.db")
    assert result.exit_code == 3
    assert f"Metronome refused the API token (HTTP {status})" in result.stderr
    assert "METRONOME_BEARER_TOKEN" in result.stderr
    assert TOKEN not in result.output
    assert server.snapshot().events_accepted == 0


def test_missing_token_is_a_configuration_error(runner: CliRunner) -> None:
    """No token, no run: exit 2 before anything is read."""
    result = runner.invoke(app, ["replay", "-m", MAPPING, str(SAMPLES / "events")])
    assert result.exit_code == 2
    assert "METRONOME_BEARER_TOKEN is not set" in result.stderr


def test_unreachable_api_exits_3(runner: CliRunner, tmp_path: Path) -> None:
    """Nothing listening: retries are exhausted and the run stops with exit 3."""
    src = write_jsonl(
        tmp_path / "e.jsonl", list(messages(5, start=SAMPLES_NOW_DT - timedelta(days=1)))
    )
    result = runner.invoke(
        app,
        [
            "replay",
            "-m",
            MAPPING,
            "--now",
            SAMPLES_NOW,
            "--api-url",
            "http://127.0.0.1:9",
            "-q",
            "--max-retries",
            "1",
            "--state",
            str(tmp_path / "state.db"),
            str(src),
        ],
        env={"METRONOME_BEARER_TOKEN": TOKEN},
    )
    assert result.exit_code == 3, result.output
    assert "error:" in result.stderr


@pytest.mark.parametrize("server_token", [TOKEN, "wrong-token"])
def test_token_never_appears_in_any_output(
    fake_metronome: Callable[..., FakeMetronome], tmp_path: Path, server_token: str
) -> None:
    """Verbose run in a real process, with faults and bad lines: the token is nowhere."""
    server = fake_metronome(token=server_token, seed=1, p_500=0.3, p_drop=0.1)
    rejects = tmp_path / "rejects.jsonl"
    env = dict(os.environ, METRONOME_BEARER_TOKEN=TOKEN, PYTHONFAULTHANDLER="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "segmetro",
            "replay",
            "-m",
            MAPPING,
            "--now",
            SAMPLES_NOW,
            "--api-url",
            server.url,
            "-v",
            "--rejects",
            str(rejects),
            "--batch-size",
            "5",
            "--state",
            str(tmp_path / "state.db"),
            str(SAMPLES / "events"),
        ],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert proc.returncode in (1, 3)
    assert proc.stderr
    for blob in (proc.stdout, proc.stderr, rejects.read_bytes()):
        assert TOKEN.encode() not in blob
        assert b"Traceback" not in blob

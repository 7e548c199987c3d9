"""Replaying Segment's S3 export layout end to end: moto on loopback, the fake Metronome, state."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import s3server
from typer.testing import CliRunner

from segmetro.cli import app
from segmetro.fake_metronome import FakeMetronome
from tests.support import SAMPLES, SAMPLES_NOW, SAMPLES_NOW_DT, TOKEN

S3Server = s3server.S3Server
s3 = s3server.s3
s3_server = s3server.s3_server

MAPPING = str(SAMPLES / "mapping.yaml")
BUCKET = "acme-segment"
DAYS = [SAMPLES_NOW_DT - timedelta(days=k) for k in range(6, 0, -1)]  # received days


def track(source: str, day: int, n: int, *, shift: timedelta = timedelta(0)) -> dict[str, Any]:
    when = DAYS[day] + timedelta(hours=2 + n) + shift
    return {
        "type": "track",
        "event": "API Call",
        "messageId": f"{source}-{day}-{n}",
        "timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "context": {"groupId": "acme"},
        "properties": {"n": n},
    }


def key(source: str, day: int, name: str = "f1") -> str:
    ms = int(DAYS[day].timestamp() * 1000)
    return f"exports/segment-logs/{source}/{ms}/{ms + 3600000}.{name}.gz"


def put_export(server: S3Server, events_per_file: int = 4) -> dict[str, list[dict[str, Any]]]:
    """Two sources, six received days, one file each; the first event of each file arrived late."""
    files = {}
    for source in ("srcA", "srcB"):
        for day in range(len(DAYS)):
            events = [track(source, day, n) for n in range(events_per_file)]
            events[0] = track(source, day, 0, shift=timedelta(days=-1))
            server.put(
                BUCKET, key(source, day), gzip.compress(b"\n".join(map(orjson.dumps, events)))
            )
            files[key(source, day)] = events
    return files


def run(runner: CliRunner, server: FakeMetronome, s3: S3Server, *args: str) -> Any:
    return runner.invoke(
        app,
        [
            "replay", "-m", MAPPING, "--now", SAMPLES_NOW, "--api-url", server.url,
            "--endpoint-url", s3.endpoint_url, *args,
        ],
        env={"METRONOME_BEARER_TOKEN": TOKEN},
    )  # fmt: skip


def test_s3_window_replay_resume_and_changed_object(
    s3: S3Server,
    runner: CliRunner,
    fake_metronome: Callable[..., FakeMetronome],
    tmp_path: Path,
) -> None:
    """Day folders outside the window (with a day of margin) are not read; re-runs resume."""
    files = put_export(s3)
    server = fake_metronome()
    since, until = DAYS[2], DAYS[4]
    state = str(tmp_path / "state.db")
    window = ["--since", since.isoformat(), "--until", until.isoformat(), "--state", state]
    first = run(runner, server, s3, f"s3://{BUCKET}/exports/", *window)
    assert first.exit_code == 0, first.output
    in_window = {
        e["messageId"]
        for events in files.values()
        for e in events
        if since.isoformat()[:19] <= e["timestamp"][:19] < until.isoformat()[:19]
    }
    sent = {e["transaction_id"] for e in server.snapshot().events}
    assert sent == in_window
    # Received days 2 and 3 hold the window; days 1 and 4 are the margin; days 0 and 5 are pruned.
    assert "skipped 4 objects" in first.stderr

    again = run(runner, server, s3, f"s3://{BUCKET}/exports/", *window)
    assert again.exit_code == 0, again.output
    assert server.snapshot().events_received == len(in_window)
    assert "8 of 8 inputs already done" in again.stderr

    changed_key = key("srcA", 3)
    extra = [*files[changed_key], track("srcA", 3, 9)]
    s3.put(BUCKET, changed_key, gzip.compress(b"\n".join(map(orjson.dumps, extra))))
    third = run(runner, server, s3, f"s3://{BUCKET}/exports/", *window)
    assert third.exit_code == 0, third.output
    assert f"s3://{BUCKET}/{changed_key} changed since its checkpoint" in third.stderr
    state_now = server.snapshot()
    assert state_now.events_received == len(in_window) + 1
    assert {e["transaction_id"] for e in state_now.events} == in_window | {"srcA-3-9"}


def test_s3_source_id_filter(s3: S3Server, runner: CliRunner, tmp_path: Path) -> None:
    """--source-id keeps one source of a prefix that holds several."""
    files = put_export(s3)
    result = runner.invoke(
        app,
        [
            "map", "-m", MAPPING, "--now", SAMPLES_NOW, "--endpoint-url", s3.endpoint_url,
            "--source-id", "srcB", f"s3://{BUCKET}/exports/",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    got = sorted(orjson.loads(line)["transaction_id"] for line in result.stdout.splitlines())
    expected = sorted(e["messageId"] for k, ev in files.items() if "/srcB/" in k for e in ev)
    assert got == expected
    assert "skipped 6 objects" in result.stderr

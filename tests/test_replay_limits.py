"""`segmetro replay` under the rate limits a real account has, over real HTTP (issue 9)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from segmetro.cli import app
from segmetro.fake_metronome import FakeMetronome
from tests.exports import write_jsonl
from tests.support import SAMPLES_NOW, SAMPLES_NOW_DT, TOKEN, summary_json

MAPPING = """\
version: 1
mappings:
  - name: usage
    trigger: type = "track"
    fields:
      transaction_id: $.messageId
      customer_id: $.context.groupId
      timestamp: $.timestamp
      event_type: $.event
      properties: $.properties
"""


def export(tmp_path: Path, n: int, customers: int) -> tuple[Path, Path]:
    stamp = (SAMPLES_NOW_DT - timedelta(hours=3)).isoformat(timespec="milliseconds")
    events = [
        {
            "type": "track",
            "event": "api_call",
            "messageId": f"lim-{i:06d}",
            "timestamp": stamp.replace("+00:00", "Z"),
            "context": {"groupId": f"cust-{i % customers}"},
            "properties": {"units": str(i % 13)},
        }
        for i in range(n)
    ]
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING)
    return mapping, write_jsonl(tmp_path / "export.jsonl", events)


def replay(runner: CliRunner, mapping: Path, src: Path, url: str, *args: str) -> Any:
    return runner.invoke(
        app,
        ["replay", "-m", str(mapping), str(src), "--now", SAMPLES_NOW, "--api-url", url,
         "--json", "-q", *args],
        env={"METRONOME_BEARER_TOKEN": TOKEN},
    )  # fmt: skip


def delivered_once(server: FakeMetronome, n: int) -> None:
    ids = [e["transaction_id"] for e in server.snapshot().events]
    assert len(ids) == len(set(ids)) == n


# Each export is twice the limit's burst (one second's worth): a second of refill at the limit
# is needed however fast the sender is, and larger exports only take longer.
@pytest.mark.parametrize(
    ("n", "customers", "limits"),
    [
        pytest.param(1000, 9, {"rate_limit": 500.0, "retry_after": 1.0}, id="500-retry-after-1"),
        pytest.param(2000, 9, {"rate_limit": 1000.0}, id="1000-no-hint"),
        pytest.param(600, 1, {"customer_rate_limit": 300.0}, id="customer-300-one-customer"),
    ],
)
def test_rate_limited_replay_delivers_everything_once_and_exits_0(
    runner: CliRunner,
    fake_metronome: Callable[..., FakeMetronome],
    tmp_path: Path,
    n: int,
    customers: int,
    limits: dict[str, float],
) -> None:
    mapping, src = export(tmp_path, n, customers)
    server = fake_metronome(latency_ms=5, **limits)
    result = replay(runner, mapping, src, server.url, "--max-retries", "0")
    assert result.exit_code == 0, result.output
    summary = summary_json(result.stdout)
    assert summary["sent"] == n
    assert summary["rate_limited"] > 0  # the limit was hit, and it was not a failure
    assert summary["dead_lettered"] == 0
    delivered_once(server, n)


def test_a_stall_ends_in_exit_3_with_state_saved_and_a_rerun_finishes(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    mapping, src = export(tmp_path, 400, 3)
    server = fake_metronome(fail_status=429)
    state = tmp_path / "state.db"
    first = replay(runner, mapping, src, server.url, "--max-stall", "1", "--state", str(state))
    assert first.exit_code == 3, first.output
    summary = summary_json(first.stdout)
    assert summary["error"]["kind"] == "delivery"
    assert "--max-stall" in summary["error"]["message"]
    assert "HTTP 429" in summary["error"]["message"]
    assert summary["sent"] == 0
    assert state.exists()
    server.configure(fail_status=None)
    second = replay(runner, mapping, src, server.url, "--state", str(state))
    assert second.exit_code == 0, second.output
    delivered_once(server, 400)


def test_unreachable_api_names_the_cause(runner: CliRunner, tmp_path: Path) -> None:
    mapping, src = export(tmp_path, 50, 3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = replay(runner, mapping, src, f"http://127.0.0.1:{port}", "--state",
                    str(tmp_path / "s.db"))  # fmt: skip
    assert result.exit_code == 3, result.output
    error = summary_json(result.stdout)["error"]["message"]
    assert "unreachable" in error
    assert "Connection refused" in error
    assert "--api-url" in error


def test_a_v1_base_url_is_refused_at_once(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    mapping, src = export(tmp_path, 50, 3)
    server = fake_metronome()
    result = replay(runner, mapping, src, server.url + "/v1", "--state", str(tmp_path / "s.db"))
    assert result.exit_code == 2
    assert "base URL without /v1" in result.output
    assert server.snapshot().requests == 0


def test_a_404_from_the_ingest_path_explains_the_base_url(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    mapping, src = export(tmp_path, 50, 3)
    server = fake_metronome()
    result = replay(
        runner, mapping, src, server.url + "/metronome", "--state", str(tmp_path / "s.db")
    )
    assert result.exit_code == 3, result.output
    error = summary_json(result.stdout)["error"]["message"]
    assert "HTTP 404" in error
    assert "base URL without /v1" in error

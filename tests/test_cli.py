"""The command line as a user meets it: exit codes, summaries and the exact main messages."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from segmetro.cli import app
from tests.support import SAMPLES, SAMPLES_NOW

BILLABLE = {"API Call", "Job Completed"}


def sample_lines() -> list[tuple[str, int, bytes]]:
    """Every physical line of the sample export, in the order segmetro reads it."""
    out = []
    for path in sorted((SAMPLES / "events").iterdir()):
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        for n, line in enumerate(data.splitlines(), 1):
            out.append((str(path), n, line))
    return out


def expected_sample_map() -> tuple[list[dict[str, Any]], dict[str, int]]:
    """What samples/mapping.yaml must produce, worked out by hand from the raw lines."""
    payloads: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    reasons: dict[str, int] = {}
    for _path, _n, line in sample_lines():
        try:
            msg = orjson.loads(line)
        except orjson.JSONDecodeError:
            reasons["invalid_json"] = reasons.get("invalid_json", 0) + 1
            continue
        if not isinstance(msg, dict):
            reasons["not_object"] = reasons.get("not_object", 0) + 1
            continue
        if msg.get("type") != "track" or msg.get("event") not in BILLABLE:
            continue
        group = msg["context"].get("groupId")
        if group is None:
            reasons["missing_field"] = reasons.get("missing_field", 0) + 1
            continue
        if msg["timestamp"] < "2026-10-23":
            reasons["too_old"] = reasons.get("too_old", 0) + 1
            continue
        payload = {
            "transaction_id": msg["messageId"],
            "customer_id": group,
            "event_type": msg["event"],
            "timestamp": msg["timestamp"],
            "properties": msg["properties"],
        }
        if msg["messageId"] in seen:
            assert seen[msg["messageId"]] == payload
            continue
        seen[msg["messageId"]] = payload
        payloads.append(payload)
    return payloads, reasons


def test_map_samples_writes_exactly_the_expected_events(runner: CliRunner, tmp_path: Path) -> None:
    """The quick start: every billable sample event, once, and every bad line counted."""
    out = tmp_path / "events.jsonl"
    rejects = tmp_path / "rejects.jsonl"
    result = runner.invoke(
        app,
        [
            "map",
            "-m",
            str(SAMPLES / "mapping.yaml"),
            str(SAMPLES / "events"),
            "--now",
            SAMPLES_NOW,
            "-o",
            str(out),
            "--rejects",
            str(rejects),
        ],
    )
    expected, reasons = expected_sample_map()
    assert result.exit_code == 1, result.output
    got = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert got == expected
    assert len(expected) > 50
    written = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert sorted(r["reason"] for r in written) == sorted(
        reason for reason, n in reasons.items() for _ in range(n)
    )
    by_reason = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
    assert f"rejected_by_reason: {by_reason}" in result.stderr
    assert f", emitted {len(expected)}\n" in result.stderr
    assert f"all {sum(reasons.values())} rejects written to {rejects}" in result.stderr


def test_map_reports_coordinates_of_bad_lines(runner: CliRunner) -> None:
    """Without --rejects, the first rejects are listed with file:line and reason."""
    result = runner.invoke(
        app,
        ["map", "-m", str(SAMPLES / "mapping.yaml"), str(SAMPLES / "events"), "--now", SAMPLES_NOW],
    )
    assert result.exit_code == 1
    bad = [(p, n) for p, n, line in sample_lines() if line == b"not json"]
    assert len(bad) == 1
    assert f"{bad[0][0]}:{bad[0][1]} invalid_json:" in result.stderr


def test_map_clean_input_exits_zero(runner: CliRunner, tmp_path: Path) -> None:
    """Exit 0 when nothing is rejected; the events go to stdout."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        orjson.dumps(
            {
                "type": "track",
                "event": "API Call",
                "messageId": "m1",
                "timestamp": "2026-11-20T10:00:00Z",
                "context": {"groupId": "acme"},
                "properties": {"n": 1},
            }
        )
        + b"\n"
    )
    result = runner.invoke(
        app, ["map", "-m", str(SAMPLES / "mapping.yaml"), str(src), "--now", SAMPLES_NOW]
    )
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout) == {
        "transaction_id": "m1",
        "customer_id": "acme",
        "event_type": "API Call",
        "timestamp": "2026-11-20T10:00:00.000Z",
        "properties": {"n": 1},
    }
    assert (
        "read 1, unparseable 0, filtered 0, matched 1, mapped 1, rejected 0, outside_window 0, "
        "duplicates 0, emitted 1" in result.stderr
    )


def test_map_bad_mapping_exits_two_with_file_and_line(runner: CliRunner, tmp_path: Path) -> None:
    """A configuration error names the file and line and exits 2."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nmappings:\n  - name: x\n    fields:\n      transaction_id: $.messageId\n"
        "      customer_id: $.context.groupId\n      timestamp: $.timestamp\n"
        "      event_type: {'@nope': 1}\n"
    )
    result = runner.invoke(app, ["map", "-m", str(bad), str(SAMPLES / "events")])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {bad}:8: ")
    assert "@nope" in result.stderr


def test_map_bad_trigger_exits_two_with_position(runner: CliRunner, tmp_path: Path) -> None:
    """A trigger Segment cannot parse is a configuration error, never a silent match-nothing."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nmappings:\n  - name: x\n    trigger: properties.price>=100\n    fields:\n"
        "      transaction_id: $.messageId\n      customer_id: $.context.groupId\n"
        "      timestamp: $.timestamp\n      event_type: $.event\n"
    )
    result = runner.invoke(app, ["map", "-m", str(bad), str(SAMPLES / "events")])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {bad}:4: ")
    assert "position" in result.stderr


def test_map_missing_input_exits_two(runner: CliRunner, tmp_path: Path) -> None:
    """An input that does not exist is a usage error."""
    result = runner.invoke(
        app, ["map", "-m", str(SAMPLES / "mapping.yaml"), str(tmp_path / "nope.jsonl")]
    )
    assert result.exit_code == 2
    assert "nope.jsonl" in result.stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--since", "yesterday-ish"),
        ("--now", "2026-13-01"),
        # given but empty (e.g. an unset shell variable): not the real clock, silently
        ("--now", ""),
        ("--since", ""),
        ("--until", ""),
    ],
)
def test_map_bad_time_option_exits_two(runner: CliRunner, option: str, value: str) -> None:
    """A time option that is not a time is rejected with the accepted forms."""
    result = runner.invoke(
        app, ["map", "-m", str(SAMPLES / "mapping.yaml"), str(SAMPLES / "events"), option, value]
    )
    assert result.exit_code == 2
    assert f"error: {option} {value!r} is not a time: use RFC 3339" in result.stderr


def test_map_since_until_window(runner: CliRunner) -> None:
    """--since/--until keep [since, until) and count the rest as outside the window."""
    result = runner.invoke(
        app,
        [
            "map",
            "-m",
            str(SAMPLES / "mapping.yaml"),
            str(SAMPLES / "events"),
            "--now",
            SAMPLES_NOW,
            "--since",
            "2026-11-24",
            "--until",
            "2026-11-25",
        ],
    )
    days = {orjson.loads(line)["timestamp"][:10] for line in result.stdout.splitlines()}
    assert days == {"2026-11-24"}
    assert "outside window 0," not in result.stderr


def test_init_writes_starter_and_refuses_to_overwrite(runner: CliRunner, tmp_path: Path) -> None:
    """init writes Segment's defaults once; a second time needs --force."""
    target = tmp_path / "mapping.yaml"
    first = runner.invoke(app, ["init", "-o", str(target)])
    assert first.exit_code == 0, first.output
    text = target.read_text()
    for expr in ("$.messageId", "$.context.groupId", "$.timestamp", "$.event", "$.properties"):
        assert expr in text
    assert 'type = "track"' in text
    again = runner.invoke(app, ["init", "-o", str(target)])
    assert again.exit_code == 2
    assert f"error: {target} already exists; use --force to overwrite it." in again.stderr
    forced = runner.invoke(app, ["init", "-o", str(target), "--force"])
    assert forced.exit_code == 0


def test_init_from_segment_action(runner: CliRunner, tmp_path: Path) -> None:
    """A Segment action's settings become a mapping that maps like the destination."""
    target = tmp_path / "mapping.yaml"
    result = runner.invoke(
        app, ["init", "-o", str(target), "--from-segment", str(SAMPLES / "segment-action.json")]
    )
    assert result.exit_code == 0, result.output
    mapped = runner.invoke(
        app, ["map", "-m", str(target), str(SAMPLES / "events"), "--now", SAMPLES_NOW]
    )
    events = [orjson.loads(line) for line in mapped.stdout.splitlines()]
    assert events
    assert {e["event_type"] for e in events} <= {"api_GET", "api_POST"}


def test_validate_ok_and_sample_field_report(runner: CliRunner) -> None:
    """validate checks the file and, with --sample, reports fields that matched nothing."""
    result = runner.invoke(
        app,
        [
            "validate",
            str(SAMPLES / "mapping.yaml"),
            "--sample",
            str(SAMPLES / "events"),
            "--now",
            SAMPLES_NOW,
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"{SAMPLES / 'mapping.yaml'}: ok (1 mapping(s): usage)" in result.stderr
    assert "fields usage.customer_id: empty 1, matched 119 (<1% empty)" in result.stderr


def test_validate_warns_and_strict_fails(runner: CliRunner, tmp_path: Path) -> None:
    """Surprising-but-valid triggers warn; --strict turns the warnings into exit 2."""
    path = tmp_path / "m.yaml"
    path.write_text(
        "version: 1\nmappings:\n  - name: x\n"
        '    trigger: event = "a" or event = "b" and type = "track"\n'
        "    fields:\n      transaction_id: $.messageId\n      customer_id: $.context.groupId\n"
        "      timestamp: $.timestamp\n      event_type: $.event\n"
    )
    loose = runner.invoke(app, ["validate", str(path)])
    assert loose.exit_code == 0
    assert "warning:" in loose.stderr
    assert "and" in loose.stderr
    strict = runner.invoke(app, ["validate", str(path), "--strict"])
    assert strict.exit_code == 2
    assert "--strict" in strict.stderr


def test_help_lists_every_command(runner: CliRunner) -> None:
    """The help text names every command of the contract."""
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("init", "validate", "map", "replay", "fake-metronome"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("target", "extra", "message"),
    [
        ("nodir/sub/m.yaml", [], "nodir/sub does not exist"),
        ("somedir", ["--force"], "somedir is a directory"),
        ("afile/m.yaml", [], "afile is not a directory"),
    ],
)
def test_init_reports_unwritable_paths_in_one_line(
    runner: CliRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    extra: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "somedir").mkdir()
    (tmp_path / "afile").write_text("x")
    result = runner.invoke(app, ["init", "-o", target, *extra])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert message in line


def test_map_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`segmetro map ... | head -1`: no error message, no traceback, exit 141 (SIGPIPE's)."""
    import subprocess
    import sys

    events = tmp_path / "events.jsonl"
    lines = (SAMPLES / "events" / "2026-11-23.jsonl").read_bytes().splitlines()
    line = next(x for x in lines if b'"event":"API Call"' in x)
    events.write_bytes(b"\n".join(line.replace(b'"ajs-', f'"n{i}-'.encode()) for i in
                                  range(20000)) + b"\n")  # fmt: skip
    script = (
        f"{sys.executable} -m segmetro map -m {SAMPLES / 'mapping.yaml'} {events} "
        f"--now {SAMPLES_NOW} | head -1 > /dev/null; echo $? ${{PIPESTATUS[0]}} >&2"
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
    *messages, codes = done.stderr.strip().splitlines()
    assert codes.split()[1] == "141"
    assert not [m for m in messages if "error" in m or "Traceback" in m], messages

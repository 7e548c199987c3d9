"""Warnings wherever a mapping is used (issue 10, point 2), through the real console script.

Every command that uses a mapping shows its trigger warnings at start and in ``--json``, and
``--strict`` turns them into exit 2 before anything is written or sent; every summary counts
what each mapping matched and warns about one that matched nothing; ``validate --sample`` flags
what will cost money: a mapping that rejects most of what it matches, fields empty in most
events, two mappings giving one message's events the same transaction_id.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from segmetro.fake_metronome import FakeMetronome
from tests.exports import messages, write_jsonl
from tests.support import SAMPLES, SAMPLES_NOW, SAMPLES_NOW_DT, TOKEN, run_cli, summary_json

FIELDS = """\
    fields:
      transaction_id: $.messageId
      customer_id: $.context.groupId
      timestamp: $.timestamp
      event_type: $.event
"""
#: A trigger Segment reads as `event = "="`: it matches nothing, and validate says why.
QUIRKY = 'version: 1\nmappings:\n  - name: quirky\n    trigger: event == "x"\n' + FIELDS
#: The warning validate prints for it (its first).
QUIRK = "'==' is read as '=' followed by the value \"=\""
UNMATCHED = "mapping 'quirky' matched none of the 30 messages read: check its trigger"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def export(tmp_path: Path, n: int = 30) -> Path:
    return write_jsonl(tmp_path / "events.jsonl", list(messages(n, start=SAMPLES_NOW_DT)))


def test_every_command_shows_the_trigger_warnings_validate_shows(
    tmp_path: Path, fake_metronome: Callable[..., FakeMetronome]
) -> None:
    """map, replay, replay --dry-run and diff print validate's warnings at start, keep them in
    --json, count 0 matched for the mapping and warn that it matched none of N messages."""
    mapping = write(tmp_path, "m.yaml", QUIRKY)
    src = str(export(tmp_path))
    validate = run_cli("validate", str(mapping))
    assert validate.returncode == 0
    expected = [line for line in validate.stderr.splitlines() if line.startswith("warning:")]
    assert len(expected) == 2
    assert QUIRK in expected[0]

    server = fake_metronome()
    now = ("--now", SAMPLES_NOW)
    state = ("--state", str(tmp_path / "state.db"))
    runs = {
        "map": ("map", "-m", str(mapping), src, "-o", str(tmp_path / "out.jsonl"), *now),
        "replay": ("replay", "-m", str(mapping), src, "--api-url", server.url, *now, *state),
        "replay-dry-run": ("replay", "--dry-run", "-m", str(mapping), src, *now, *state),
        "diff": ("diff", "-m", str(SAMPLES / "mapping.yaml"), "-m", str(mapping), src, *now),
    }
    env = {"METRONOME_BEARER_TOKEN": TOKEN}
    for command, args in runs.items():
        text = run_cli(*args, env=env)
        shown = [line for line in text.stderr.splitlines() if line.startswith("warning:")]
        assert shown[:2] == expected, command  # first, before any count
        assert any(UNMATCHED in line for line in shown[2:]), command  # after the run
        # (a fresh state: the first replay finished the input, which a re-run would skip)
        again = [str(tmp_path / "again.db") if a == state[1] else a for a in args]
        summary = summary_json(run_cli(*again, "--json", env=env).stdout)
        assert summary["command"] == command
        assert [f"warning: {w}" for w in summary["warnings"][:2]] == expected, command
        assert any(UNMATCHED in w for w in summary["warnings"]), command
        by_mapping = summary["by_mapping"] if command != "diff" else summary["new"]["by_mapping"]
        assert by_mapping["quirky"] == {"matched": 0, "rejected": 0, "emitted": 0} | (
            {"new": 0, "unchanged": 0, "changed": 0} if command == "replay-dry-run" else {}
        )
    assert server.snapshot(include_events=False).events_accepted == 0


def test_strict_stops_every_command_before_it_writes_or_sends(
    tmp_path: Path, fake_metronome: Callable[..., FakeMetronome]
) -> None:
    """--strict: exit 2 with the warnings shown, the output not written, nothing sent, no
    state made; under --json the one object says why."""
    mapping = write(tmp_path, "m.yaml", QUIRKY)
    src = str(export(tmp_path))
    server = fake_metronome()
    out = tmp_path / "out.jsonl"
    state = tmp_path / "state.db"
    now = ("--now", SAMPLES_NOW)
    runs = [
        ("validate", str(mapping)),
        ("map", "-m", str(mapping), src, "-o", str(out), *now),
        ("replay", "-m", str(mapping), src, "--api-url", server.url, "--state", str(state), *now),
        ("replay", "--dry-run", "-m", str(mapping), src, "--state", str(state), *now),
        ("diff", "-m", str(mapping), "-m", str(mapping), src, *now),
    ]
    for args in runs:
        strict = run_cli(*args, "--strict", env={"METRONOME_BEARER_TOKEN": TOKEN})
        assert strict.returncode == 2, (args, strict.stderr)
        assert QUIRK in strict.stderr
        assert "warning(s) and --strict is set" in strict.stderr
        summary = summary_json(
            run_cli(*args, "--strict", "--json", env={"METRONOME_BEARER_TOKEN": TOKEN}).stdout
        )
        assert summary["exit_code"] == 2
        assert summary["error"]["kind"] == "config"
        assert "--strict" in summary["error"]["message"]
        assert any(QUIRK in w for w in summary["warnings"])
    assert not out.exists()
    assert not state.exists()
    assert server.snapshot(include_events=False).requests == 0


def test_no_warning_for_a_mapping_that_matched_when_nothing_was_read(tmp_path: Path) -> None:
    """No "matched nothing" warning without messages: an empty input says nothing of a trigger."""
    mapping = write(tmp_path, "m.yaml", QUIRKY)
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    args = ("map", "-m", str(mapping), str(empty), "-o", str(tmp_path / "o.jsonl"), "--json")
    summary = summary_json(run_cli(*args).stdout)
    assert summary["read"] == 0
    assert not any("matched none" in w for w in summary["warnings"])


SAMPLE_FLAGS = """\
version: 1
mappings:
  - name: usage
    trigger: event = "API Call"
    fields:
      transaction_id: $.messageId
      customer_id: $.context.groupId
      timestamp: $.timestamp
      event_type: $.event
      properties: { region: $.properties.region, plan: $.properties.plan }
  - name: usage_copy
    trigger: event = "API Call"
    fields:
      transaction_id: $.messageId
      customer_id: $.context.groupId
      timestamp: $.timestamp
      event_type: copy
  - name: broken
    trigger: event = "Job Completed"
    fields:
      transaction_id: $.messageId
      customer_id: $.context.accountId
      timestamp: $.timestamp
      event_type: $.event
  - name: never
    trigger: event = "Seat Added"
    fields:
      transaction_id: $.messageId
      customer_id: $.context.groupId
      timestamp: $.timestamp
      event_type: $.event
"""


def test_validate_sample_flags_what_would_cost_money(tmp_path: Path) -> None:
    """A mapping rejecting 100% of what it matched, a field empty in every event, two mappings
    giving one message's events the same transaction_id (map then rejects them as conflicts),
    a mapping that matched nothing: each a warning, --strict makes them exit 2, and validate
    (which has no --rejects) does not advise --rejects."""
    mapping = write(tmp_path, "m.yaml", SAMPLE_FLAGS)
    src = str(export(tmp_path, 300))
    sample = ("validate", str(mapping), "--sample", src, "--now", SAMPLES_NOW)
    loose = run_cli(*sample)
    assert loose.returncode == 0, loose.stderr
    warnings = [line for line in loose.stderr.splitlines() if line.startswith("warning:")]
    text = "\n".join(warnings)
    assert "mapping 'broken' rejects 100% of the events it matched" in text
    assert "mapping 'usage': properties.plan is empty in 100% of its events" in text
    assert "properties.region" not in text  # present in every event
    assert "mappings 'usage' and 'usage_copy' both fire on" in text
    assert "give their events the same transaction_id" in text
    assert "mapping 'never' matched none of the 300 messages read" in text
    assert "mapping 'usage' rejects" not in text
    assert "--rejects" not in loose.stderr
    assert "more, then the last:" in loose.stderr  # more rejects than are listed

    summary = summary_json(run_cli(*sample, "--json").stdout)
    assert (
        summary["by_mapping"]["broken"]["rejected"]
        == summary["by_mapping"]["broken"]["matched"]
        > 0
    )
    assert summary["by_mapping"]["never"]["matched"] == 0
    assert [w for w in summary["warnings"] if w.startswith("mapping")] == [
        w.removeprefix("warning: ") for w in warnings if w.startswith("warning: mapping")
    ]
    plan = next(f for f in summary["fields"] if f["field"] == "properties.plan")
    assert plan == {"mapping": "usage", "field": "properties.plan", "empty": plan["matched"],
                    "matched": summary["by_mapping"]["usage"]["matched"]}  # fmt: skip

    # The conflict validate warned about is what map then rejects.
    mapped = run_cli("map", "-m", str(mapping), src, "--now", SAMPLES_NOW, "-o",
                     str(tmp_path / "o.jsonl"), "--json")  # fmt: skip
    assert summary_json(mapped.stdout)["rejected_by_reason"]["conflict"] > 0

    strict = run_cli(*sample, "--strict", "--json")
    assert strict.returncode == 2
    assert summary_json(strict.stdout)["error"]["message"] == (
        f"{len(summary['warnings'])} warning(s) and --strict is set."
    )


def test_strict_fails_a_run_whose_mapping_matched_nothing(tmp_path: Path) -> None:
    """A warning found by the run (a mapping that matched none of the messages) is an error
    under --strict for the commands that send nothing."""
    mapping = write(tmp_path, "m.yaml", SAMPLE_FLAGS)
    src = str(export(tmp_path))
    out = ("-o", str(tmp_path / "o.jsonl"))
    for args in (
        ("map", "-m", str(mapping), src, *out),
        ("replay", "--dry-run", "-m", str(mapping), src, "--state", str(tmp_path / "s.db")),
        ("diff", "-m", str(mapping), "-m", str(mapping), src),
    ):
        loose = summary_json(run_cli(*args, "--now", SAMPLES_NOW, "--json").stdout)
        assert any("'never' matched none" in w for w in loose["warnings"]), args
        assert loose["exit_code"] in (0, 1), args
        strict = run_cli(*args, "--now", SAMPLES_NOW, "--json", "--strict")
        assert strict.returncode == 2, args
        assert summary_json(strict.stdout)["error"]["kind"] == "config"


def test_a_clean_sample_has_no_flags(tmp_path: Path) -> None:
    """The control: the samples' own mapping over its own events flags nothing."""
    result = run_cli(
        "validate", str(SAMPLES / "mapping.yaml"), "--sample", str(SAMPLES / "events"),
        "--now", SAMPLES_NOW, "--strict", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert summary_json(result.stdout)["warnings"] == []

"""`replay --dry-run` (the plan), `replay` after a mapping change, and `segmetro diff`."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from typer.testing import CliRunner

from segmetro.cli import app
from segmetro.fake_metronome import FakeMetronome
from segmetro.state import StateDB
from tests.exports import messages, write_jsonl
from tests.support import SAMPLES, SAMPLES_NOW, SAMPLES_NOW_DT, TOKEN, summary_json

EVENTS = str(SAMPLES / "events")
#: What the sample export holds, as `segmetro map` counts it.
SAMPLE_NEW = 115
SAMPLE_FILTERED = 86
SAMPLE_REJECTED = {"invalid_json": 2, "missing_field": 1, "not_object": 1, "too_old": 1}
#: Job Completed events of the samples whose plan is "enterprise".
ENTERPRISE_JOBS = 19

# The samples' mapping with the job plan renamed: a property change on some events.
RENAMED_PLAN = """\
      properties:
        "@merge":
          direction: right
          objects:
            - $.properties
            - plan:
                "@if":
                  exists: $.properties.plan
                  then:
                    "@replace": { value: $.properties.plan, pattern: enterprise, replacement: ent }
"""


def write_mapping(directory: Path, name: str = "mapping.yaml", *, renamed: bool = False) -> Path:
    text = (SAMPLES / "mapping.yaml").read_text()
    if renamed:
        text = text.replace("      properties: $.properties\n", RENAMED_PLAN)
    path = directory / name
    path.write_text(text)
    return path


def dry_run(runner: CliRunner, mapping: Path, *args: str, state: Path | None = None) -> Any:
    state_args = [] if state is None else ["--state", str(state)]
    return runner.invoke(
        app,
        ["replay", "-m", str(mapping), "--now", SAMPLES_NOW, "--dry-run", *state_args, *args],
    )


def real_run(
    runner: CliRunner, server: FakeMetronome, mapping: Path, state: Path, *args: str
) -> Any:
    return runner.invoke(
        app,
        [
            "replay", "-m", str(mapping), "--now", SAMPLES_NOW, "--api-url", server.url, "-q",
            "--state", str(state), "--json", *args,
        ],
        env={"METRONOME_BEARER_TOKEN": TOKEN},
    )  # fmt: skip


def files_under(path: Path) -> set[Path]:
    return set(path.rglob("*"))


def test_dry_run_on_an_empty_state_plans_everything_new_and_writes_nothing(
    runner: CliRunner, tmp_path: Path
) -> None:
    mapping = write_mapping(tmp_path)
    before = files_under(tmp_path)
    # No token, no --state: the default state beside the mapping is neither needed nor made.
    result = dry_run(runner, mapping, EVENTS)
    assert result.exit_code == 1, result.output  # the samples hold rejects
    assert files_under(tmp_path) == before
    lines = result.stderr.splitlines()
    assert (
        f"new {SAMPLE_NEW}, unchanged 0, changed 0, resent_changed 0, inputs_total 3, "
        "inputs_skipped 0"
    ) in lines
    assert f"filtered {SAMPLE_FILTERED}," in result.stderr
    assert "plan against: no state file yet: every event is new" in lines
    assert "rejected_by_reason: invalid_json 2, missing_field 1, not_object 1, too_old 1" in lines
    assert "outside_window 0, duplicates 2, emitted 115" in result.stderr
    assert (
        "by_mapping usage: matched 119, rejected 2, emitted 115, new 115, unchanged 0, changed 0"
        in lines
    )
    assert "by_event_type API Call: new 50" in lines
    assert "by_event_type Job Completed: new 65" in lines
    assert [line for line in lines if line.startswith("by_day ")] == [
        "by_day 2026-11-23: new 31",
        "by_day 2026-11-24: new 44",
        "by_day 2026-11-25: new 40",
    ]

    as_json = dry_run(runner, mapping, EVENTS, "--json", state=tmp_path / "s" / "state.db")
    assert as_json.exit_code == 1
    assert not (tmp_path / "s").exists()
    plan = summary_json(as_json.stdout)
    assert (plan["new"], plan["unchanged"], plan["changed"]) == (SAMPLE_NEW, 0, 0)
    assert plan["filtered"] == SAMPLE_FILTERED
    assert plan["rejected_by_reason"] == SAMPLE_REJECTED
    assert plan["by_mapping"] == {
        "usage": {
            "matched": 119, "rejected": 2, "emitted": SAMPLE_NEW, "new": SAMPLE_NEW,
            "unchanged": 0, "changed": 0,
        }
    }  # fmt: skip
    assert plan["by_event_type"] == {"API Call": {"new": 50}, "Job Completed": {"new": 65}}
    assert plan["by_day"] == {
        "2026-11-23": {"new": 31},
        "2026-11-24": {"new": 44},
        "2026-11-25": {"new": 40},
    }
    assert plan["changed_sample"] == []
    assert len(plan["rejects_sample"]) == 5
    assert plan["exit_code"] == 1


def test_dry_run_of_a_clean_input_exits_0(runner: CliRunner, tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "e.jsonl", list(messages(30, start=SAMPLES_NOW_DT - timedelta(days=1)))
    )
    result = dry_run(runner, write_mapping(tmp_path), str(src), "--json")
    assert result.exit_code == 0, result.output
    plan = summary_json(result.stdout)
    assert plan["new"] + plan["filtered"] == 30
    assert plan["new"] > 0


def test_plan_after_a_replay_then_after_a_mapping_change(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    mapping = write_mapping(tmp_path)
    state = tmp_path / "state.db"
    server = fake_metronome()
    sent = real_run(runner, server, mapping, state, EVENTS)
    assert sent.exit_code == 1, sent.output
    assert summary_json(sent.stdout)["sent"] == SAMPLE_NEW
    db_bytes = state.read_bytes()

    # The plan is what a replay (to the same URL) would do: every input is finished.
    url = ("--api-url", server.url)
    again = dry_run(runner, mapping, EVENTS, "--json", *url, state=state)
    assert again.exit_code == 0, again.output
    plan = summary_json(again.stdout)
    assert (plan["inputs_total"], plan["inputs_skipped"]) == (3, 3)
    assert (plan["new"], plan["unchanged"], plan["changed"]) == (0, 0, 0)
    assert state.read_bytes() == db_bytes  # a dry run never writes the state

    # Read again from the start (a new state copy without checkpoints), all are unchanged.
    fresh = tmp_path / "ledger-only.db"
    with StateDB.open(state) as source, StateDB.open(fresh) as target:
        sent = source.find_destination(server.url, TOKEN)
        assert sent is not None
        target.for_destination(target.destination(server.url, TOKEN)).flush(
            delivered=source.for_destination(sent).ledger_sample(
                10_000, since=SAMPLES_NOW_DT - timedelta(days=60)
            )
        )
    plan = summary_json(dry_run(runner, mapping, EVENTS, "--json", *url, state=fresh).stdout)
    assert plan["new"] == 0
    assert plan["unchanged"] == SAMPLE_NEW
    assert plan["changed"] == 0
    assert plan["by_mapping"]["usage"]["unchanged"] == SAMPLE_NEW

    # A new version of the mapping renames one property value on some events.
    renamed = write_mapping(tmp_path, "mapping-v2.yaml", renamed=True)
    changed = dry_run(runner, renamed, EVENTS, *url, state=state)
    assert changed.exit_code == 1
    lines = changed.stderr.splitlines()
    assert (
        f"new 0, unchanged {SAMPLE_NEW - ENTERPRISE_JOBS}, changed {ENTERPRISE_JOBS}, "
        "resent_changed 0, inputs_total 3, inputs_skipped 0"
    ) in lines
    assert f"rejected {5 + ENTERPRISE_JOBS}," in changed.stderr
    assert (
        f"by_event_type Job Completed: changed {ENTERPRISE_JOBS}, "
        f"unchanged {65 - ENTERPRISE_JOBS}" in lines
    )
    assert "by_event_type API Call: unchanged 50" in lines
    diffs = [line.strip() for line in lines if line.startswith("      ")]
    assert diffs == ['~ properties.plan: "enterprise" -> "ent"'] * 10  # a sample of 10
    assert sum(1 for line in lines if line.startswith("  ~ ajs-")) == 10
    as_json = summary_json(dry_run(runner, renamed, EVENTS, "--json", *url, state=state).stdout)
    assert as_json["changed"] == ENTERPRISE_JOBS
    assert as_json["rejected_by_reason"]["changed"] == ENTERPRISE_JOBS
    assert as_json["by_event_type"]["Job Completed"] == {
        "changed": ENTERPRISE_JOBS,
        "unchanged": 65 - ENTERPRISE_JOBS,
    }
    assert sum(as_json["by_day"][d].get("changed", 0) for d in as_json["by_day"]) == (
        ENTERPRISE_JOBS
    )
    sample = as_json["changed_sample"][0]
    assert sample["changes"] == ['~ properties.plan: "enterprise" -> "ent"']
    assert sample["mapping"] == "usage"
    assert state.read_bytes() == db_bytes

    # The real run does not send changed events: it writes them to the rejects file.
    requests = server.snapshot(include_events=False).requests
    rejects = tmp_path / "rejects.jsonl"
    run = real_run(runner, server, renamed, state, EVENTS, "--rejects", str(rejects))
    assert run.exit_code == 1
    summary = summary_json(run.stdout)
    assert summary["sent"] == 0
    assert summary["unchanged"] == SAMPLE_NEW - ENTERPRISE_JOBS
    assert summary["rejected_by_reason"]["changed"] == summary["changed"] == ENTERPRISE_JOBS
    assert server.snapshot(include_events=False).requests == requests
    written = [orjson.loads(x) for x in rejects.read_bytes().splitlines()]
    changed_rejects = [r for r in written if r["reason"] == "changed"]
    assert len(changed_rejects) == ENTERPRISE_JOBS
    detail = changed_rejects[0]["detail"]
    assert 'properties.plan: "enterprise" -> "ent"' in detail
    assert "give it a new transaction_id (e.g. a suffix in the mapping)" in detail
    assert changed_rejects[0]["payload"]["properties"]["plan"] == "ent"

    # Opting in sends them, although that run finished every input: it reads them again.
    # Metronome ignores them (it keeps the first payload).
    forced = real_run(runner, server, renamed, state, EVENTS, "--resend-changed")
    assert forced.exit_code == 1  # the sample rejects remain
    assert "--resend-changed: reading every input from the start" in forced.stderr
    assert summary_json(forced.stdout)["sent"] == ENTERPRISE_JOBS
    end = server.snapshot()
    assert end.duplicates_ignored == ENTERPRISE_JOBS
    assert "ent" not in {e["properties"].get("plan") for e in end.events}


def test_resume_is_not_fooled_by_a_mapping_change(
    runner: CliRunner, fake_metronome: Callable[..., FakeMetronome], tmp_path: Path
) -> None:
    """A finished input is read again when the mapping changed, with a warning."""
    mapping = write_mapping(tmp_path)
    state = tmp_path / "state.db"
    server = fake_metronome()
    assert real_run(runner, server, mapping, state, EVENTS).exit_code == 1
    shutil.copy(write_mapping(tmp_path, "v2.yaml", renamed=True), mapping)
    run = real_run(runner, server, mapping, state, EVENTS)
    assert "the mapping changed since its checkpoint" in run.stderr
    summary = summary_json(run.stdout)
    assert summary["inputs_skipped"] == 0
    assert summary["rejected_by_reason"]["changed"] == ENTERPRISE_JOBS


# -- segmetro diff ------------------------------------------------------------------------------

OLD = """\
version: 1
mappings:
  - name: usage
    trigger: type = "track" and (event = "API Call" or event = "Job Completed")
    fields:
      transaction_id: $.messageId
      customer_id: $.context.groupId
      timestamp: $.timestamp
      event_type: $.event
      properties: $.properties
  - name: pages
    trigger: type = "page"
    fields:
      transaction_id: $.messageId
      customer_id: { "@coalesce": [$.context.groupId, { "@literal": "none" }] }
      timestamp: $.timestamp
      event_type: page
"""

NEW = (
    OLD.replace("      properties: $.properties\n", RENAMED_PLAN).split("  - name: pages")[0]
    + """\
  - name: seats
    trigger: event = "Seat Added"
    fields:
      transaction_id: { "@template": "{{messageId}}-seats" }
      customer_id: $.context.groupId
      timestamp: $.timestamp
      event_type: seats
      properties: { seats: $.properties.seats }
"""
)


def test_diff_reports_added_removed_and_changed_events(runner: CliRunner, tmp_path: Path) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(OLD)
    new.write_text(NEW)
    common = ["--now", SAMPLES_NOW, EVENTS]
    result = runner.invoke(app, ["diff", "-m", str(old), "-m", str(new), "--json", *common])
    assert result.exit_code == 1, result.output
    d = summary_json(result.stdout)
    # 60 Seat Added events (61 messages, one duplicated) appear, 17 page views disappear,
    # the enterprise jobs change.
    assert (d["added"], d["removed"], d["changed"], d["unchanged"]) == (
        60,
        17,
        ENTERPRISE_JOBS,
        SAMPLE_NEW - ENTERPRISE_JOBS,
    )
    # A sample of each kind, however many of the first events were additions.
    assert Counter(s["kind"] for s in d["sample"]) == {"added": 10, "removed": 10, "changed": 10}

    text = runner.invoke(app, ["diff", "-m", str(old), "-m", str(new), *common])
    assert text.exit_code == 1
    lines = text.stderr.splitlines()
    assert lines[-1] == (
        f"added 60, removed 17, changed {ENTERPRISE_JOBS}, unchanged {SAMPLE_NEW - ENTERPRISE_JOBS}"
    )
    old_line = next(line for line in lines if line.startswith(f"old {old}: read "))
    assert all(f"{name} {d['old'][name]}" in old_line for name in ("read", "emitted", "mapped"))
    body = "\n".join(lines)
    assert '      + properties: {"seats":' in body
    assert '      + event_type: "seats"' in body
    assert '      - event_type: "page"' in body
    assert '      ~ properties.plan: "enterprise" -> "ent"' in body
    for kind, symbol in (("added", "+"), ("removed", "-"), ("changed", "~")):
        assert any(line.startswith(f"  {symbol} ") for line in lines), kind

    same = runner.invoke(app, ["diff", "-m", str(old), "-m", str(old), *common])
    assert same.exit_code == 0, same.output
    assert same.stderr.splitlines()[-1] == (
        f"added 0, removed 0, changed 0, unchanged {SAMPLE_NEW + 17}"
    )


def test_diff_needs_two_mappings(runner: CliRunner) -> None:
    one = runner.invoke(app, ["diff", "-m", str(SAMPLES / "mapping.yaml"), EVENTS])
    assert one.exit_code == 2
    assert "diff needs exactly two mappings" in one.stderr

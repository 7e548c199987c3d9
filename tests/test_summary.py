"""One summary, one vocabulary (issue 10, point 3), through the real console script.

The human lines and the ``--json`` object show the same counts under the same names; the
object fits ``docs/summary.schema.json`` and its counts add up (``tests.support.summary_json``
checks both on every ``--json`` output of the test suite); ``--json`` prints one object on every
exit, failures included.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from segmetro.fake_metronome import FakeMetronome
from tests.exports import messages, write_jsonl
from tests.support import (
    PATIENCE,
    SAMPLES,
    SAMPLES_NOW,
    SAMPLES_NOW_DT,
    SUMMARY_SCHEMA,
    TOKEN,
    WITH_SIGINT,
    _console_script,
    check_invariants,
    run_cli,
    summary_json,
    wait_until,
)

MAPPING = str(SAMPLES / "mapping.yaml")
EVENTS = str(SAMPLES / "events")
NOW = ("--now", SAMPLES_NOW)
ENV = {"METRONOME_BEARER_TOKEN": TOKEN}
#: counts that measure time, not events: the one thing two runs of a command do not share
TIMING = {"elapsed_s", "events_per_s"}


def test_the_schema_is_a_valid_2020_12_schema() -> None:
    schema = json.loads(SUMMARY_SCHEMA.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_checks_can_fail() -> None:
    """The schema and the sums reject a summary whose counts do not add up or whose names
    drifted, so passing them means something."""
    good = summary_json(
        run_cli("map", "-m", MAPPING, EVENTS, *NOW, "-o", "/dev/null", "--json").stdout
    )
    for broken in (
        dict(good, read=good["read"] + 1),
        dict(good, emitted=good["emitted"] - 1),
        dict(good, rejected_by_reason={**good["rejected_by_reason"], "too_old": 5}),
    ):
        with pytest.raises(AssertionError):
            check_invariants(broken)
    renamed = {("rejected_total" if k == "rejected" else k): v for k, v in good.items()}
    with pytest.raises(AssertionError):
        summary_json(json.dumps(renamed))
    with pytest.raises(json.JSONDecodeError):  # one object, nothing else on stdout
        summary_json(json.dumps(good) + "\nread 1\n")


def _counts(obj: dict[str, Any]) -> dict[str, int]:
    return {
        k: v
        for k, v in obj.items()
        if isinstance(v, int) and not isinstance(v, bool) and k not in TIMING | {"exit_code"}
    }


def _assert_same_vocabulary(text: subprocess.CompletedProcess[str], obj: dict[str, Any]) -> None:
    """Every count of the JSON object is in the human lines as ``name value``."""
    assert text.returncode == obj["exit_code"], text.stderr
    assert text.stdout == ""
    lines = text.stderr.splitlines()
    for name, value in _counts(obj).items():
        assert any(f"{name} {value}" in line for line in lines), (obj["command"], name, value)
    for reason, n in (obj.get("rejected_by_reason") or {}).items():
        assert any(line.startswith("rejected_by_reason:") and f"{reason} {n}" in line
                   for line in lines), reason  # fmt: skip
    for name, row in (obj.get("by_mapping") or {}).items():
        shown = ", ".join(f"{k} {v}" for k, v in row.items())
        assert f"by_mapping {name}: {shown}" in lines, name


def test_text_and_json_show_the_same_counts_under_the_same_names(
    tmp_path: Path, fake_metronome: Callable[..., FakeMetronome]
) -> None:
    """map, validate, replay --dry-run, replay, diff, verify and status: each run once with
    --json and once without; the text shows each JSON count under its JSON name."""
    known = frozenset(f"cust_{i}" for i in range(1, 10))
    servers = [fake_metronome(known_customers=known) for _ in range(2)]
    states = [tmp_path / "a.db", tmp_path / "b.db"]

    def both(*args: str, server: int = 0, state: int = 0) -> dict[str, Any]:
        extra: tuple[str, ...] = ()
        if "replay" in args or "verify" in args:
            extra = ("--api-url", servers[server].url)
        obj = summary_json(run_cli(*args, *extra, "--json", env=ENV).stdout)
        other = tuple(str(states[1]) if a == str(states[0]) else a for a in args)
        text_extra = ("--api-url", servers[1].url) if extra else ()
        _assert_same_vocabulary(run_cli(*other, *text_extra, env=ENV), obj)
        return obj

    state = ("--state", str(states[0]))
    out = ("-o", str(tmp_path / "out.jsonl"))
    assert both("map", "-m", MAPPING, EVENTS, *NOW, *out)["command"] == "map"
    assert both("validate", MAPPING, "--sample", EVENTS, *NOW)["emitted"] == 115
    assert both("replay", "--dry-run", "-m", MAPPING, EVENTS, *NOW, *state)["new"] == 115
    sent = both("replay", "-m", MAPPING, EVENTS, *NOW, *state)
    assert (sent["sent"], sent["unsent"], sent["run_id"]) == (115, 0, sent["run_id"])
    assert sent["state"] == str(states[0])
    assert sent["api_url"] == servers[0].url
    assert TOKEN not in json.dumps(sent)
    assert both("diff", "-m", MAPPING, "-m", str(SAMPLES / "mapping-advanced.yaml"), EVENTS,
                *NOW)["removed"] > 0  # fmt: skip
    assert both("verify", *state, *NOW, "--sample", "20")["found"] == 20
    status = both("status", *state)
    assert status["ledger"] == 115
    assert status["runs"][0]["counts"]["sent"] == 115


@pytest.mark.parametrize(
    ("args", "kind", "code", "says"),
    [
        (("map", "-m", MAPPING, EVENTS, "--since", "yesterday-ish", "-o", "/dev/null"),
         "config", 2, "--since"),
        (("map", "-m", "nope.yaml", EVENTS, "-o", "/dev/null"), "config", 2, "nope.yaml"),
        (("map", "-m", MAPPING, "no-such-file.jsonl", "-o", "/dev/null"), "input", 2,
         "no-such-file.jsonl"),
        (("map", "-m", MAPPING, EVENTS), "config", 2, "-o FILE"),
        (("replay", "-m", MAPPING, EVENTS, "--batch-size", "0"), "config", 2, "--batch-size"),
        (("replay", "-m", MAPPING, EVENTS, "--bogus"), "config", 2, "--bogus"),
        (("replay", "-m", MAPPING, EVENTS, "--state", "/nonexistent/dir/s.db"), "config", 2,
         "METRONOME_BEARER_TOKEN"),
        (("status", "--state", "/nonexistent/s.db"), "state", 2, "does not exist"),
        (("validate", "nope.yaml"), "config", 2, "nope.yaml"),
        (("diff", "-m", MAPPING, EVENTS), "config", 2, "two mappings"),
    ],
)  # fmt: skip
def test_json_prints_one_object_on_a_failure_too(
    args: tuple[str, ...], kind: str, code: int, says: str
) -> None:
    """A bad option, mapping, input or state: the one-line error on stderr, and under --json
    the one object on stdout with error.kind, error.message and the exit code."""
    result = run_cli(*args, "--json")
    assert result.returncode == code, result.stderr
    obj = summary_json(result.stdout)
    assert obj["error"]["kind"] == kind
    assert obj["error"]["exit_code"] == obj["exit_code"] == code
    assert says in obj["error"]["message"]
    assert obj["command"] == args[0]
    assert "Traceback" not in result.stderr


def test_an_interrupted_command_prints_its_json_object(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) under --json: exit 130 and the object says interrupted."""
    rejects = tmp_path / "rejects.jsonl"
    first = write_jsonl(tmp_path / "head.jsonl", list(messages(5, start=SAMPLES_NOW_DT)))
    proc = subprocess.Popen(
        [sys.executable, "-c", WITH_SIGINT, _console_script(), "map", "-m", MAPPING, "-",
         "-o", str(tmp_path / "o.jsonl"), "--rejects", str(rejects), *NOW, "--json"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(first.read_bytes())
    proc.stdin.flush()  # stdin stays open: map waits for more input
    wait_until(rejects.exists, "map to open its rejects file")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 130, stderr
    obj = summary_json(stdout)
    assert obj["error"] == {"kind": "interrupted", "message": "interrupted", "exit_code": 130}
    assert b"Traceback" not in stderr


def test_unsent_is_one_number_in_text_and_json() -> None:
    """The issue's interrupted run: 21,400 emitted, 18,300 sent, some never handed to the
    sender. unsent is what the run did not settle, one number under one name in both."""
    from segmetro import output
    from segmetro.delivery import DeliveryStats
    from segmetro.models import Counts
    from segmetro.pipeline import ReplayReport
    from segmetro.summary import Summary

    counts = Counts(read=21_400, matched=21_400, emitted=21_400, unchanged=100)
    counts.mapping_matched["usage"] = counts.mapping_emitted["usage"] = 21_400
    report = ReplayReport(counts=counts, delivery=DeliveryStats(sent=18_300, failed=4))
    counts.rejected["bad_request"] = 4
    summary = Summary(command="replay", run_id="r-1")
    report.fill(summary, ["usage"])
    obj = summary.to_json()
    assert obj["unsent"] == 21_400 - 100 - 18_300 - 4 == report.unsent
    assert report.exit_code == 1
    assert any(f"unsent {obj['unsent']}," in line for line in output.summary_lines(summary))
    check_invariants(obj)

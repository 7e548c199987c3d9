"""Help a person can read: -h, --version, plain metavars, whole descriptions, default --state."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from segmetro import __version__
from tests.support import SAMPLES, SAMPLES_NOW, run_cli

COMMANDS = [
    "init", "validate", "map", "replay", "diff", "verify", "status", "unlock", "fake-metronome",
]  # fmt: skip
#: Python's or typer's spelling of a type, which a user should never have to read.
TYPE_NAMES = re.compile(
    r"<(?:str|int|float|path|bool|file|text)>|\{[a-z_]+\}|list\[|\b(?:int|float) range\b"
)


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"segmetro {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_short_and_long_help_without_type_names(command: str) -> None:
    short, long = run_cli(command, "-h"), run_cli(command, "--help")
    assert short.returncode == long.returncode == 0, short.stderr
    assert short.stdout == long.stdout
    assert short.stdout.startswith(f"Usage: segmetro {command} [OPTIONS]")
    found = [line for line in short.stdout.splitlines() if TYPE_NAMES.search(line)]
    assert not found, found


@pytest.mark.parametrize(
    ("command", "option", "metavar"),
    [
        ("replay", "--batch-size", "N"),
        ("replay", "--timeout", "NUMBER"),
        ("replay", "--rejects", "PATH"),
        ("replay", "--since", "TEXT"),
        ("map", "--workers", "N"),
        ("fake-metronome", "--port", "N"),
        ("fake-metronome", "--rate-limit", "NUMBER"),
    ],
)
def test_an_option_shows_what_kind_of_value_it_takes(
    command: str, option: str, metavar: str
) -> None:
    """A number is N or NUMBER, a file PATH, anything else TEXT."""
    lines = run_cli(command, "-h").stdout.splitlines()
    (words,) = [line.split() for line in lines if line.lstrip().startswith(option + " ")]
    assert words[1] == metavar, words


def test_the_command_list_shows_whole_first_paragraphs() -> None:
    listing = run_cli("-h").stdout
    assert "..." not in listing.split("Commands:")[1]
    words = " ".join(listing.split())
    assert (
        "unlock Remove a lock left by a run on another host (e.g. a container that was killed)."
        in words
    )
    for command in COMMANDS:
        assert re.search(rf"^  {re.escape(command)} +\S", listing, re.M), command


def test_usage_names_the_arguments() -> None:
    assert run_cli("map", "-h").stdout.startswith("Usage: segmetro map [OPTIONS] INPUT...\n")
    assert run_cli("validate", "-h").stdout.startswith(
        "Usage: segmetro validate [OPTIONS] MAPPING [INPUT...]\n"
    )


def test_validate_samples_several_inputs() -> None:
    events = SAMPLES / "events"
    one = run_cli(
        "validate", str(SAMPLES / "mapping.yaml"), "--sample", str(events / "2026-11-23.jsonl"),
        "--now", SAMPLES_NOW,
    )  # fmt: skip
    both = run_cli(
        "validate", str(SAMPLES / "mapping.yaml"), "--sample", str(events / "2026-11-23.jsonl"),
        str(events / "2026-11-24.jsonl.gz"), "--now", SAMPLES_NOW,
    )  # fmt: skip
    assert one.returncode == both.returncode == 0, both.stderr
    read = [int(re.search(r"^read (\d+)", r.stderr, re.M).group(1)) for r in (one, both)]  # type: ignore[union-attr]
    assert read[0] < read[1]
    alone = run_cli("validate", str(SAMPLES / "mapping.yaml"), str(events))
    assert alone.returncode == 2
    assert "add --sample" in alone.stderr


def test_status_verify_unlock_default_to_replays_state(tmp_path: Path) -> None:
    """Without --state they use replay's default: .segmetro/state.db beside -m, or here."""
    mapping = tmp_path / "job" / "mapping.yaml"
    mapping.parent.mkdir()
    shutil.copy(SAMPLES / "mapping.yaml", mapping)
    expected = mapping.parent / ".segmetro" / "state.db"
    for args in (["status"], ["unlock"], ["verify"]):
        missing = run_cli(*args, "-m", str(mapping))
        assert missing.returncode == 2
        assert f"state file {expected} does not exist" in missing.stderr
        here = run_cli(*args, cwd=mapping.parent)
        assert f"state file {expected} does not exist" in here.stderr
    replay = run_cli(
        "replay", "-m", str(mapping), str(SAMPLES / "events" / "2026-11-23.jsonl"), "--now",
        SAMPLES_NOW, "--api-url", "http://127.0.0.1:9", "-q",
        env={"METRONOME_BEARER_TOKEN": "tok"},
    )  # fmt: skip
    assert replay.returncode == 3, replay.stderr  # nothing listens there; the state is made
    status = run_cli("status", "-m", str(mapping), "--json")
    assert status.returncode == 0, status.stderr
    assert str(expected) in status.stdout
    assert run_cli("unlock", cwd=mapping.parent).stderr.strip() == "not locked"

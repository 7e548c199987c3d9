"""Cron-friendly empties: a glob, directory or S3 prefix holding nothing is exit 0, `no inputs`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support import SAMPLES, SAMPLES_NOW, TOKEN, run_cli

sys.path.insert(0, str(Path(__file__).parent))
import s3server

S3Server = s3server.S3Server
s3 = s3server.s3
s3_server = s3server.s3_server

MAPPING = str(SAMPLES / "mapping.yaml")


def commands(spec: str, tmp_path: Path, *extra: str) -> list[list[str]]:
    state = str(tmp_path / "state.db")
    return [
        ["map", "-m", MAPPING, spec, *extra],
        ["replay", "-m", MAPPING, spec, "--state", state, "--api-url", "http://127.0.0.1:9",
         *extra],
        ["replay", "--dry-run", "-m", MAPPING, spec, "--state", state, *extra],
        ["validate", MAPPING, "--sample", spec, *extra],
        ["diff", "-m", MAPPING, "-m", MAPPING, spec, *extra],
    ]  # fmt: skip


def assert_no_inputs(args: list[str], spec: str, why: str) -> None:
    result = run_cli(*args, "--now", SAMPLES_NOW, env={"METRONOME_BEARER_TOKEN": TOKEN})
    assert result.returncode == 0, (args, result.stderr)
    assert f"no inputs: {spec!r} {why}" in result.stderr, (args, result.stderr)
    assert "Traceback" not in result.stderr
    assert "error" not in result.stderr


@pytest.mark.parametrize("which", ["glob", "directory"])
def test_a_local_glob_or_directory_that_matches_nothing(tmp_path: Path, which: str) -> None:
    (tmp_path / "today").mkdir()
    spec, why = (
        (str(tmp_path / "today" / "*.jsonl.gz"), "matches no file")
        if which == "glob"
        else (str(tmp_path / "today"), "is a directory without files")
    )
    for args in commands(spec, tmp_path):
        assert_no_inputs(args, spec, why)
    assert not (tmp_path / "state.db").exists()  # nothing to do: no run is recorded


def test_an_s3_prefix_without_objects(s3: S3Server, tmp_path: Path) -> None:
    s3.put("logs", "segment-logs/src/other.gz", b"")
    spec = "s3://logs/segment-logs/src/1764460800000/"
    for args in commands(spec, tmp_path, "--endpoint-url", s3.endpoint_url):
        assert_no_inputs(args, spec, "holds no objects")


def test_a_named_file_that_does_not_exist_stays_an_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "2026-11-26.jsonl")
    result = run_cli("map", "-m", MAPPING, missing)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: input {missing!r}: no such file or directory"


def test_an_empty_spec_beside_a_real_input_is_noted(tmp_path: Path) -> None:
    spec = str(tmp_path / "*.gz")
    result = run_cli(
        "map", "-m", MAPPING, spec, str(SAMPLES / "events" / "2026-11-24.jsonl.gz"), "-q",
        "--now", SAMPLES_NOW,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    assert f"input {spec!r} matches no file" in result.stderr
    assert result.stdout

"""Outputs never harm inputs: refused collisions, -o replaced only at the end, private files."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support import PATIENCE, SAMPLES, SAMPLES_NOW, SEGMETRO, TOKEN, run_cli, wait_until

MAPPING = str(SAMPLES / "mapping.yaml")


@pytest.fixture
def export(tmp_path: Path) -> Path:
    src = tmp_path / "in" / "llm.jsonl"
    src.parent.mkdir()
    shutil.copy(SAMPLES / "events" / "2026-11-23.jsonl", src)
    return src


def assert_refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


def test_map_output_that_is_an_input_is_refused_and_the_input_kept(
    export: Path, tmp_path: Path
) -> None:
    before = export.read_bytes()
    relative = os.path.relpath(export, tmp_path)
    result = run_cli("map", "-m", MAPPING, str(export), "-o", relative, cwd=tmp_path)
    assert_refused(result, "-o", "is also an input")
    assert export.read_bytes() == before


def test_map_output_through_a_symlink_to_an_input_is_refused(export: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.jsonl"
    link.symlink_to(export)
    before = export.read_bytes()
    result = run_cli("map", "-m", MAPPING, str(export.parent), "-o", str(link))
    assert_refused(result, "is also an input")
    assert export.read_bytes() == before


def test_map_output_equal_to_the_rejects_file_is_refused(export: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    result = run_cli("map", "-m", MAPPING, str(export), "-o", str(out), "--rejects", str(out))
    assert_refused(result, "-o and --rejects are the same file")
    assert not out.exists()


def test_map_output_that_is_a_state_file_or_the_mapping_is_refused(
    export: Path, tmp_path: Path
) -> None:
    mapping = tmp_path / "m.yaml"
    shutil.copy(MAPPING, mapping)
    state = tmp_path / "state.db"
    sqlite3.connect(state).execute("create table t (x)").connection.commit()
    state_bytes = state.read_bytes()
    assert_refused(
        run_cli("map", "-m", str(mapping), str(export), "-o", str(state)), "SQLite database"
    )
    assert state.read_bytes() == state_bytes
    mapping_text = mapping.read_text()
    assert_refused(
        run_cli("map", "-m", str(mapping), str(export), "-o", str(mapping)), "is the mapping"
    )
    assert mapping.read_text() == mapping_text
    default_state = tmp_path / ".segmetro" / "state.db"
    assert_refused(
        run_cli("map", "-m", str(mapping), str(export), "-o", str(default_state)),
        "is the state file",
    )


def test_rejects_equal_to_an_input_or_the_state_file_is_refused(
    export: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state.db"
    env = {"METRONOME_BEARER_TOKEN": TOKEN}
    base = ("replay", "-m", MAPPING, str(export), "--now", SAMPLES_NOW, "--state", str(state))
    assert_refused(run_cli(*base, "--rejects", str(export), env=env), "is also an input")
    assert_refused(
        run_cli(*base, "--rejects", str(state), "--api-url", "http://127.0.0.1:9", env=env),
        "is the state file",
    )
    assert_refused(
        run_cli("map", "-m", MAPPING, str(export), "--rejects", str(export)), "is also an input"
    )


def test_map_output_is_renamed_into_place_only_at_the_end(export: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    out.write_bytes(b"the previous output\n")
    result = run_cli("map", "-m", MAPPING, str(export), "--now", SAMPLES_NOW, "-o", str(out))
    assert result.returncode in (0, 1), result.stderr
    assert out.read_bytes().startswith(b"{")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "o.jsonl"]  # no temp file left


def test_an_interrupted_map_leaves_the_old_output_and_no_temp_file(tmp_path: Path) -> None:
    """A map reading a pipe that never ends is stopped: -o keeps what it held, no .part stays."""
    out = tmp_path / "o.jsonl"
    out.write_bytes(b"the previous output\n")
    line = (SAMPLES / "events" / "2026-11-23.jsonl").read_bytes().splitlines()[0] + b"\n"
    proc = subprocess.Popen(
        [SEGMETRO, "map", "-m", MAPPING, "--now", SAMPLES_NOW, "-o", str(out), "-", "-q"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    try:
        proc.stdin.write(line * 5000)
        proc.stdin.flush()
        wait_until(lambda: any(p.suffix == ".part" for p in tmp_path.iterdir()), "the temp file")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=PATIENCE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err.decode()
    assert out.read_bytes() == b"the previous output\n"
    assert [p.name for p in tmp_path.iterdir()] == ["o.jsonl"]


def test_state_and_rejects_files_are_private(export: Path, tmp_path: Path) -> None:
    """The state and the rejects hold customer data: mode 0600 whatever the umask."""
    from segmetro.fake_metronome import FakeConfig, FakeMetronome
    from tests.support import SAMPLES_NOW_DT

    server = FakeMetronome(FakeConfig(token=TOKEN, now=SAMPLES_NOW_DT))
    server.start()
    try:
        state = tmp_path / "s" / "state.db"
        rejects = tmp_path / "rejects.jsonl"
        mapped_rejects = tmp_path / "map-rejects.jsonl"
        bad = tmp_path / "in" / "bad.jsonl"
        bad.write_bytes(b"not json\n")
        bad2 = tmp_path / "in" / "bad2.jsonl"
        bad2.write_bytes(b"not json either\n")
        env = {"METRONOME_BEARER_TOKEN": TOKEN}
        os.umask(0o022)
        result = run_cli(
            "replay", "-m", MAPPING, str(export), str(bad), "--now", SAMPLES_NOW,
            "--api-url", server.url, "--state", str(state), "--rejects", str(rejects), "-q",
            env=env,
        )  # fmt: skip
        assert result.returncode == 1, result.stderr
        default_run = run_cli(
            "replay", "-m", MAPPING, str(bad2), "--now", SAMPLES_NOW, "--api-url", server.url,
            "--state", str(state), "-q", env=env,
        )  # fmt: skip
        assert default_run.returncode == 1, default_run.stderr
        mapped = run_cli("map", "-m", MAPPING, str(bad), "--rejects", str(mapped_rejects), "-q")
        assert mapped.returncode == 1, mapped.stderr
    finally:
        server.stop()
    own_rejects = list((state.parent / "rejects").iterdir())
    assert own_rejects
    for path in [state, rejects, mapped_rejects, *own_rejects]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

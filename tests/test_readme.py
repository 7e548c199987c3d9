"""The README's quick start, run as written, with the wall clock 60 days after the samples.

``SEGMETRO_NOW`` stands in for today's date for every command that does not pass ``--now``: a
command of the quick start that forgot it would judge the samples too old and fail. Two things
are changed from the text, so that parallel runs on one machine cannot collide: the port 8080
becomes a free one, and files under /tmp/ go to the test's own directory.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import orjson

from tests.support import PATIENCE, ROOT, wait_until

#: 60 days after the samples were made (2026-11-26).
LATER = "2027-01-25T00:00:00Z"
#: What each quick-start command must exit with, by how it starts; the README says why.
EXPECTED = {
    "segmetro map": 1,  # "It exits 1 because the sample holds five bad events on purpose"
    "segmetro validate": 0,
    "segmetro replay --dry-run": 1,  # the plan holds rejects
    "METRONOME_BEARER_TOKEN=demo segmetro replay": 1,  # the same five rejects
    "curl": 0,
}


def quick_start_commands() -> list[str]:
    """The shell commands of the README's quick start section, continuation lines joined."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    commands = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                commands.append(line)
    return commands


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_quick_start_works_two_months_later(tmp_path: Path) -> None:
    commands = quick_start_commands()
    assert any(c.endswith("&") for c in commands), commands  # the fake Metronome
    port = str(free_port())
    env = dict(os.environ, SEGMETRO_NOW=LATER)
    background: list[subprocess.Popen[str]] = []
    outputs: dict[str, str] = {}
    try:
        for command in commands:
            command = command.replace("8080", port).replace("/tmp/", f"{tmp_path}/")
            if command.endswith("&"):
                background.append(
                    subprocess.Popen(
                        ["bash", "-c", f"exec {command[:-1]}"],
                        cwd=ROOT,
                        env=env,
                        text=True,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                    )
                )
                continue
            result = subprocess.run(
                ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True,
                timeout=PATIENCE, check=False,
            )  # fmt: skip
            prefix = max((p for p in EXPECTED if command.startswith(p)), key=len, default=None)
            assert prefix is not None, f"no expected exit code for: {command}"
            assert result.returncode == EXPECTED[prefix], (command, result.stderr)
            assert "Traceback" not in result.stderr
            outputs[prefix] = result.stdout
    finally:
        for proc in background:
            proc.terminate()
            proc.communicate(timeout=PATIENCE)
    mapped = (tmp_path / "events.jsonl").read_bytes().splitlines()
    assert len(mapped) == 115
    state = orjson.loads(outputs["curl"])
    assert state["events_accepted"] == len(mapped)  # nothing dead-lettered as too old
    wait_until(lambda: all(p.poll() is not None for p in background), "the fake to stop")

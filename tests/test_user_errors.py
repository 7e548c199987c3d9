"""No traceback, ever: every error a user can cause is one line naming the thing and the fix.

A table of such errors, each run through the installed ``segmetro`` in a process of its own:
the documented exit code, exactly one line on stderr (``error: …``) holding the words that
name what is wrong, and never a ``Traceback``.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import SAMPLES, SAMPLES_NOW, TOKEN, run_cli

MAPPING = str(SAMPLES / "mapping.yaml")
EVENTS = str(SAMPLES / "events" / "2026-11-23.jsonl")  # holds five bad lines: rejects


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


#: (what, arguments with {tmp} and {port} to fill in, exit code, words of the one line)
CASES = [
    ("init into a missing directory", ["init", "-o", "{tmp}/nodir/sub/m.yaml"], 2,
     ["nodir/sub", "does not exist"]),
    ("init over a directory", ["init", "-o", "{tmp}/adir", "--force"], 2, ["is a directory"]),
    ("init from a missing action", ["init", "--from-segment", "{tmp}/none.json", "-o",
     "{tmp}/m.yaml"], 2, ["none.json"]),
    ("a port in use", ["fake-metronome", "--port", "{port}"], 2, ["in use", "another port"]),
    ("a missing mapping", ["map", "-m", "{tmp}/none.yaml", EVENTS], 2, ["none.yaml"]),
    ("a mapping that is a directory", ["map", "-m", "{tmp}/adir", EVENTS], 2, ["adir"]),
    ("a missing input file", ["map", "-m", MAPPING, "{tmp}/none.jsonl"], 2,
     ["none.jsonl", "no such file"]),
    ("-o on a full disk", ["map", "-m", MAPPING, EVENTS, "--now", SAMPLES_NOW, "-o",
     "/dev/full"], 2, ["/dev/full", "No space left"]),
    ("--rejects on a full disk", ["map", "-m", MAPPING, EVENTS, "--now", SAMPLES_NOW, "-o",
     "{tmp}/o.jsonl", "--rejects", "/dev/full"], 2, ["/dev/full", "No space left"]),
    ("-o in a missing directory", ["map", "-m", MAPPING, EVENTS, "-o", "{tmp}/nodir/o.jsonl"],
     2, ["cannot create a file in", "nodir: No such file or directory"]),
    ("-o where no file can be made", ["map", "-m", MAPPING, EVENTS, "-o", "/proc/x"], 2,
     ["cannot write /proc/x: cannot create a file in /proc:"]),
    ("--now given empty", ["map", "-m", MAPPING, EVENTS, "--now", ""], 2,
     ["--now '' is not a time"]),
    ("a negative fake rate limit", ["fake-metronome", "--port", "0", "--rate-limit", "-1"], 2,
     ["--rate-limit must not be negative"]),
    ("-o that is a directory", ["map", "-m", MAPPING, EVENTS, "-o", "{tmp}/adir"], 2,
     ["is a directory"]),
    ("-o that is the input", ["map", "-m", MAPPING, "{tmp}/in.jsonl", "-o", "{tmp}/in.jsonl"],
     2, ["is also an input"]),
    ("a bad option value", ["map", "-m", MAPPING, EVENTS, "--workers", "0"], 2,
     ["--workers", "segmetro map -h"]),
    ("a bad time", ["map", "-m", MAPPING, EVENTS, "--since", "yesterdayish"], 2, ["--since"]),
    ("an unknown option", ["map", "-m", MAPPING, EVENTS, "--bogus"], 2, ["--bogus"]),
    ("an unknown command", ["bogus"], 2, ["bogus", "segmetro -h"]),
    ("no token", ["replay", "-m", MAPPING, EVENTS, "--state", "{tmp}/s.db"], 2,
     ["METRONOME_BEARER_TOKEN"]),
    ("a state file that is a directory", ["replay", "--dry-run", "-m", MAPPING, EVENTS,
     "--state", "{tmp}/adir"], 2, ["is a directory"]),
    ("a batch too large", ["replay", "-m", MAPPING, EVENTS, "--batch-size", "500"], 2,
     ["--batch-size"]),
    ("status of a missing state", ["status", "--state", "{tmp}/none.db"], 2,
     ["none.db", "does not exist", "--state"]),
    ("unlock of a directory", ["unlock", "--state", "{tmp}/adir"], 2, ["is a directory"]),
    ("verify of a missing state", ["verify", "--state", "{tmp}/none.db"], 2, ["none.db"]),
    ("validate a missing mapping", ["validate", "{tmp}/none.yaml"], 2, ["none.yaml"]),
    ("diff with one mapping", ["diff", "-m", MAPPING, EVENTS], 2, ["two mappings"]),
    ("--sample without inputs", ["validate", MAPPING, "--sample"], 2, ["--sample", "INPUT"]),
]  # fmt: skip


@pytest.mark.parametrize(("what", "args", "code", "words"), CASES, ids=[c[0] for c in CASES])
def test_a_user_error_is_one_line(
    tmp_path: Path, taken_port: int, what: str, args: list[str], code: int, words: list[str]
) -> None:
    (tmp_path / "adir").mkdir()
    shutil.copy(EVENTS, tmp_path / "in.jsonl")
    filled = [a.format(tmp=tmp_path, port=taken_port) for a in args]
    token = {} if "no token" in what else {"METRONOME_BEARER_TOKEN": TOKEN}
    result = run_cli(*filled, env=token)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert TOKEN not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/ingest", b"[]"),
        ("FOO", "/v1/ingest", b""),
        ("DELETE", "/anything/at/all", b""),
        ("POST", "/v1/ingest", b"\xff\xfe not json"),
        ("POST", "/v1/ingest", b"[" * 100_000 + b"]" * 100_000),
        ("POST", "/v1/ingest", b'[{"properties": ' + b'{"a": ' * 300 + b"1" + b"}" * 301 + b"]"),
        ("POST", "/v1/events/search", b"{" + b'"a": ' * 5000),
    ],
)
def test_the_fake_answers_everything_with_json_and_keeps_serving(
    method: str, path: str, body: bytes
) -> None:
    import httpx

    from segmetro.fake_metronome import FakeConfig, FakeMetronome

    with FakeMetronome(FakeConfig(token=TOKEN)) as fake:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        answer = httpx.request(method, fake.url + path, content=body, headers=auth, timeout=30)
        assert answer.headers["content-type"] == "application/json"
        assert isinstance(answer.json(), dict)
        after = httpx.get(fake.url + "/_fake/state", headers=auth, timeout=30)
        assert after.status_code == 200

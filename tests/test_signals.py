"""SIGINT and SIGTERM end every command with 130, its partial summary, and nothing leaked.

Each command is stopped where it cannot have finished: reading a named pipe the test keeps
open, writing to a stdout the test stops reading, or waiting for an answer a proxy holds.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import termios
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from segmetro.fake_metronome import FakeMetronome
from tests.exports import messages, write_jsonl
from tests.support import (
    PATIENCE,
    SAMPLES,
    SAMPLES_NOW,
    SAMPLES_NOW_DT,
    SEGMETRO,
    TOKEN,
    WITH_SIGINT,
    HoldingProxy,
    run_cli,
    wait_until,
)

MAPPING = str(SAMPLES / "mapping.yaml")
SIGNALS = [signal.SIGINT, signal.SIGTERM]
LINE = (SAMPLES / "events" / "2026-11-23.jsonl").read_bytes().splitlines()[0] + b"\n"


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", WITH_SIGINT, SEGMETRO, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ) | (env or {}),
    )


def stop(proc: subprocess.Popen[bytes], signum: int) -> tuple[str, str]:
    """Send ``signum``, wait for the end, and check what every stopped command must show."""
    try:
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=PATIENCE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = err.decode()
    assert proc.returncode == 130, text
    assert "Traceback" not in text
    assert "leaked" not in text
    assert text.rstrip().splitlines()[-1] == "error: interrupted", text
    return out.decode(), text


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Callable[..., int]]:
    """A named pipe for input; ``feed()`` waits until the command opened it and writes a few
    lines, keeping it open, so the command waits for more; ``feed(pid)`` returns once it does
    (a signal sent as soon as the pipe is drained could come before the lines are counted)."""
    path = tmp_path / "pipe.jsonl"
    os.mkfifo(path)
    fds: list[int] = []

    def opened() -> bool:
        try:
            fds.append(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            return False
        return True

    def unread() -> int:
        buf = bytearray(4)
        fcntl.ioctl(fds[0], termios.FIONREAD, buf)
        return int.from_bytes(buf, sys.byteorder)

    def waiting_for_more(pid: int) -> bool:
        """The command's main thread is blocked in a call on its end of the pipe (a read): what
        the pipe held is taken and counted, not only taken into a buffer."""
        call = Path(f"/proc/{pid}/syscall").read_text().split()
        if len(call) < 2 or call[0] == "running":
            return False
        try:
            return os.path.samefile(f"/proc/{pid}/fd/{int(call[1], 16)}", path)
        except (OSError, OverflowError):  # its first argument is no open file
            return False

    def feed(pid: int | None = None) -> int:
        wait_until(opened, "the command to open the pipe")
        os.set_blocking(fds[0], True)
        os.write(fds[0], LINE * 20)
        wait_until(lambda: unread() == 0, "the command to read what the pipe holds")
        if pid is not None:
            wait_until(lambda: waiting_for_more(pid), "the command to wait for more input")
        return fds[0]

    feed.path = str(path)  # type: ignore[attr-defined]
    yield feed
    for fd in fds:
        os.close(fd)


@pytest.mark.parametrize("signum", SIGNALS)
def test_map_prints_its_partial_summary(fifo: Callable[..., int], signum: int) -> None:
    proc = start("map", "-m", MAPPING, "--now", SAMPLES_NOW, "-q", fifo.path)  # type: ignore[attr-defined]
    fifo()
    _, err = stop(proc, signum)
    assert "read " in err  # the summary printer's first line


#: lines of the samples the sample mapping makes an event of, each a different one
MAPPED = [
    line + b"\n"
    for line in (SAMPLES / "events" / "2026-11-23.jsonl").read_bytes().splitlines()
    if b'"event":"API Call"' in line
][:10]


def _count(name: str, summary: str) -> int:
    found = re.search(rf"\b{name} (\d+)", summary)
    assert found is not None, summary
    return int(found.group(1))


def _unwritten(summary: str) -> int:
    found = re.search(r"up to (\d+) of the \d+ events counted as emitted were not written", summary)
    return 0 if found is None else int(found.group(1))


@pytest.mark.parametrize("signum", SIGNALS)
def test_map_to_stdout_says_which_events_it_counted_but_did_not_write(
    fifo: Callable[..., int], signum: int
) -> None:
    """Stopped while waiting for more input, ``map`` says how many of the events it counted
    as emitted are not in its output (the batch it had not written yet)."""
    proc = start("map", "-m", MAPPING, "--now", SAMPLES_NOW, "-q", fifo.path)  # type: ignore[attr-defined]
    fd = fifo(proc.pid)
    os.write(fd, b"".join(MAPPED))
    wait_until(lambda: _waiting_on(proc.pid, fd), "the command to read the mapped lines")
    out, err = stop(proc, signum)
    assert _count("emitted", err) == len(MAPPED)
    assert len(out.splitlines()) + _unwritten(err) == len(MAPPED)
    assert _unwritten(err) == len(MAPPED)


@pytest.mark.parametrize("signum", SIGNALS)
def test_map_stopped_while_its_reader_stalls_sends_no_event_twice(
    tmp_path: Path, signum: int
) -> None:
    """Stopped while a write waits for a reader that stopped reading: ``map`` ends (it does
    not wait to write more) and no event is in its output twice."""
    items = list(messages(20_000, start=SAMPLES_NOW_DT - timedelta(days=3), seed=9))
    for m in items:
        m["event"] = "API Call"
    src = write_jsonl(tmp_path / "e.jsonl", items)
    proc = start("map", "-m", MAPPING, "--now", SAMPLES_NOW, "-q", str(src))
    assert proc.stdout is not None

    def blocked_writing() -> bool:
        call = Path(f"/proc/{proc.pid}/syscall").read_text().split()
        return len(call) > 1 and call[0] != "running" and int(call[1], 16) == 1

    wait_until(blocked_writing, "map to wait for its reader")
    out, err = stop(proc, signum)
    whole = out.split("\n")[:-1]  # every line ended by its newline; a cut last one is not
    ids = [orjson.loads(line)["transaction_id"] for line in whole]
    assert len(ids) == len(set(ids))
    assert len(whole) <= _count("emitted", err) <= len(whole) + 1 + _unwritten(err)
    assert _unwritten(err) > 0


@pytest.mark.parametrize("signum", SIGNALS)
def test_stdin_lines_are_read_as_they_arrive(signum: int) -> None:
    """A slow writer's lines on stdin are read and counted as they come, not held back until a
    whole read buffer has filled."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WITH_SIGINT, SEGMETRO, "map", "-m", MAPPING, "--now",
         SAMPLES_NOW, "-q", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    fd = proc.stdin.fileno()
    os.write(fd, b"".join(MAPPED))
    wait_until(lambda: _waiting_on(proc.pid, fd), "the command to wait for more on stdin")
    _, err = stop(proc, signum)
    assert _count("read", err) == len(MAPPED)
    assert _count("emitted", err) == len(MAPPED)


def _waiting_on(pid: int, fd: int) -> bool:
    """Our end `fd` of the command's input pipe is drained and the command's main thread is
    blocked in a call on its end of it, a read (so what it took is counted, not only
    buffered)."""
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    if int.from_bytes(buf, sys.byteorder):
        return False
    call = Path(f"/proc/{pid}/syscall").read_text().split()
    if len(call) < 2 or call[0] == "running":
        return False
    try:  # the call's first argument is the command's end of this pipe
        return os.path.samefile(f"/proc/{pid}/fd/{int(call[1], 16)}", f"/proc/self/fd/{fd}")
    except (OSError, OverflowError):
        return False


@pytest.mark.parametrize("signum", SIGNALS)
def test_map_with_workers_stops_them_and_leaks_nothing(tmp_path: Path, signum: int) -> None:
    """The parent is held writing to a stdout nobody reads while the workers run."""
    for n in range(3):
        write_jsonl(
            tmp_path / f"part-{n}.jsonl",
            list(messages(4000, start=SAMPLES_NOW_DT - timedelta(days=3), seed=n)),
        )
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = start(
        "map", "-m", MAPPING, "--now", SAMPLES_NOW, "--workers", "2", str(tmp_path / "part-*"),
        env={"TMPDIR": str(temp)},
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.read(1) == b"{"  # mapping has begun; 12,000 events overfill the pipe
    _, err = stop(proc, signum)
    assert "read " in err
    assert list(temp.iterdir()) == []  # the workers' spill files are gone


@pytest.mark.parametrize("signum", SIGNALS)
def test_dry_run_prints_its_partial_plan(
    fifo: Callable[..., int], tmp_path: Path, signum: int
) -> None:
    proc = start(
        "replay", "--dry-run", "-m", MAPPING, "--now", SAMPLES_NOW, "-q",
        "--state", str(tmp_path / "state.db"), fifo.path,  # type: ignore[attr-defined]
    )  # fmt: skip
    fifo(proc.pid)
    _, err = stop(proc, signum)
    assert "plan against" in err
    assert "read 20" in err  # the partial counts


@pytest.mark.parametrize("signum", SIGNALS)
def test_replay_reading_a_pipe(
    fifo: Callable[..., int],
    fake_metronome: Callable[..., FakeMetronome],
    tmp_path: Path,
    signum: int,
) -> None:
    server = fake_metronome()
    proc = start(
        "replay", "-m", MAPPING, "--now", SAMPLES_NOW, "-q", "--api-url", server.url,
        "--state", str(tmp_path / "state.db"), fifo.path,  # type: ignore[attr-defined]
        env={"METRONOME_BEARER_TOKEN": TOKEN},
    )  # fmt: skip
    fifo()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=PATIENCE)
    text = err.decode()
    assert proc.returncode == 130, text
    assert "Traceback" not in text
    assert "interrupted" in text
    assert "read " in text


@pytest.mark.parametrize("signum", SIGNALS)
def test_validate_sample_and_diff(fifo: Callable[..., int], tmp_path: Path, signum: int) -> None:
    proc = start("validate", MAPPING, "--sample", "--now", SAMPLES_NOW, fifo.path)  # type: ignore[attr-defined]
    fifo()
    _, err = stop(proc, signum)
    assert "read " in err


@pytest.mark.parametrize("signum", SIGNALS)
def test_diff(fifo: Callable[..., int], signum: int) -> None:
    proc = start("diff", "-m", MAPPING, "-m", MAPPING, "--now", SAMPLES_NOW, fifo.path)  # type: ignore[attr-defined]
    fifo()
    stop(proc, signum)


@pytest.mark.parametrize("signum", SIGNALS)
def test_verify_waiting_for_search(
    fake_metronome: Callable[..., FakeMetronome],
    holding_proxy: Callable[[str], HoldingProxy],
    tmp_path: Path,
    signum: int,
) -> None:
    server = fake_metronome()
    state = tmp_path / "state.db"
    src = write_jsonl(
        tmp_path / "e.jsonl", list(messages(20, start=SAMPLES_NOW_DT - timedelta(days=2), seed=4))
    )
    env = {"METRONOME_BEARER_TOKEN": TOKEN}
    proxy = holding_proxy(server.url)
    sent = run_cli(
        "replay", "-m", MAPPING, "--now", SAMPLES_NOW, "-q", "--api-url", proxy.url,
        "--state", str(state), str(src), env=env,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    proxy.hold_when(lambda: True)
    proc = start(
        "verify", "--state", str(state), "--api-url", proxy.url, "--now", SAMPLES_NOW, env=env
    )
    wait_until(lambda: proxy.held.is_set() or proc.poll() is not None, "a held search answer")
    stop(proc, signum)


@pytest.mark.parametrize("signum", SIGNALS)
def test_fake_metronome(signum: int) -> None:
    proc = start("fake-metronome", "--port", "0")
    assert proc.stderr is not None
    first = proc.stderr.readline().decode()
    assert "listening on" in first
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 130, err.decode()
    assert "accepted 0 events" in err.decode()
    assert "Traceback" not in err.decode()


def test_a_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    """`segmetro map … | head -1`: the reader has what it wanted; no error, no traceback."""
    shutil.copy(SAMPLES / "events" / "2026-11-23.jsonl", tmp_path / "a.jsonl")
    src = tmp_path / "a.jsonl"
    src.write_bytes(src.read_bytes() * 200)
    for args in (
        ["map", "-m", MAPPING, "--now", SAMPLES_NOW, "-q", str(src)],
        ["replay", "--dry-run", "-m", MAPPING, "--now", SAMPLES_NOW, "-q", "--json",
         "--state", str(tmp_path / "s.db"), str(src)],
        ["--help"],
    ):  # fmt: skip
        result = subprocess.run(
            ["bash", "-c", '"$@" | head -c 1 >/dev/null; echo "${PIPESTATUS[0]}" >&2', "-",
             SEGMETRO, *args],
            capture_output=True, text=True, timeout=PATIENCE, check=False,
        )  # fmt: skip
        *noise, status = result.stderr.strip().splitlines()
        assert "Traceback" not in result.stderr, args
        assert not [line for line in noise if "error" in line.lower()], (args, result.stderr)
        assert status in ("0", "1", "141"), (args, result.stderr)

"""`segmetro map` keeps flat memory: 10^6 events through stdin stay under a bounded peak RSS.

The input is generated while it is read (a thread writes lines into the child's stdin), so it
never exists whole anywhere. The peak is the child's own ``VmHWM`` from ``/proc``, polled until
it exits (``ru_maxrss`` would inherit this test process's larger RSS through fork).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import orjson
import pytest

from tests.conftest import SAMPLES, SAMPLES_NOW

EVENTS = 1_000_000
LIMIT_MB = 150


def vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def feed(stdin: IO[bytes], n: int) -> None:
    """Write `n` billable Segment messages, with unique messageIds, in 1000-line blocks."""
    template = {
        "type": "track",
        "event": "API Call",
        "messageId": "",
        "userId": "user_1",
        "timestamp": "2026-11-25T10:00:00.000Z",
        "context": {"groupId": "acme", "library": {"name": "analytics-node"}},
        "properties": {"endpoint": "/v1/jobs", "latency_ms": 12},
    }
    try:
        for start in range(0, n, 1000):
            block = []
            for i in range(start, min(start + 1000, n)):
                template["messageId"] = f"ajs-{i:012d}"
                block.append(orjson.dumps(template))
            stdin.write(b"\n".join(block) + b"\n")
    finally:
        stdin.close()


@pytest.mark.slow
def test_map_memory_is_flat_over_a_million_events() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segmetro",
            "map",
            "-m",
            str(SAMPLES / "mapping.yaml"),
            "-",
            "--now",
            SAMPLES_NOW,
            "-q",
            "-o",
            "/dev/null",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    writer = threading.Thread(target=feed, args=(proc.stdin, EVENTS), daemon=True)
    writer.start()
    peak = 0
    while proc.poll() is None:
        peak = max(peak, vm_hwm_kib(proc.pid))
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.05)
    writer.join()
    assert proc.stderr is not None
    with proc.stderr:
        summary = proc.stderr.read().decode()
    assert proc.returncode == 0, summary
    assert f"read {EVENTS}," in summary
    assert f"emitted {EVENTS}," in summary  # every id is new: the duplicate check holds 10^6
    assert 0 < peak < LIMIT_MB * 1024, f"peak RSS {peak / 1024:.1f} MB"
    print(f"map over {EVENTS} events: peak RSS {peak / 1024:.1f} MB")

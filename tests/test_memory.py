"""`segmetro map` keeps flat memory: 10^6 events through stdin stay under a bounded peak RSS.

The input is generated while it is read (a thread writes lines into the child's stdin), so it
never exists whole anywhere. The peak is the child's own ``VmHWM`` from ``/proc``, read by the
child itself as it exits, after all its work (polling it from here could miss the end;
``ru_maxrss`` would inherit this test process's larger RSS through fork).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from typing import IO

import orjson
import pytest

from tests.support import SAMPLES, SAMPLES_NOW

EVENTS = 1_000_000
LIMIT_MB = 150


#: `python -m segmetro ARGS...` that writes its own peak RSS to stderr as the interpreter exits.
PEAK_AT_EXIT = """
import atexit, runpy, sys

def peak():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                sys.stderr.write(f"test peak VmHWM {line.split()[1]} kB\\n")

atexit.register(peak)
sys.argv[0] = "segmetro"
runpy.run_module("segmetro", run_name="__main__", alter_sys=True)
"""


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
            "-c",
            PEAK_AT_EXIT,
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
    assert proc.stderr is not None
    with proc.stderr:
        summary = proc.stderr.read().decode()
    proc.wait()
    writer.join()
    assert proc.returncode == 0, summary
    reported = re.search(r"^test peak VmHWM (\d+) kB$", summary, re.MULTILINE)
    assert reported is not None, summary
    peak = int(reported[1])
    assert f"read {EVENTS}," in summary
    assert f", emitted {EVENTS}\n" in summary  # every id is new: the duplicate check holds 10^6
    assert peak < LIMIT_MB * 1024, f"peak RSS {peak / 1024:.1f} MB"
    print(f"map over {EVENTS} events: peak RSS {peak / 1024:.1f} MB")

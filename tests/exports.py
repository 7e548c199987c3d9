"""Generate Segment messages for tests: realistic shape, deterministic content."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson


def messages(
    n: int, *, start: datetime, seed: int = 7, prefix: str = "m", spread: timedelta | None = None
) -> Iterator[dict[str, Any]]:
    """`n` track messages with unique messageIds, timestamps spread after `start`."""
    rng = random.Random(seed)
    span = (spread or timedelta(days=2)).total_seconds()
    for i in range(n):
        when = start + timedelta(seconds=rng.uniform(0, span))
        yield {
            "type": "track",
            "event": rng.choice(["API Call", "Job Completed", "Page Viewed"]),
            "messageId": f"{prefix}-{i:07d}",
            "userId": f"user_{rng.randint(1, 50)}",
            "timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "context": {"groupId": f"cust_{rng.randint(1, 9)}", "library": {"name": "t"}},
            "properties": {"n": rng.randint(1, 1000), "region": rng.choice(["eu", "us"])},
        }


def write_jsonl(path: Path, items: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in items))
    return path

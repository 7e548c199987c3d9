"""Shards and the PostgreSQL state (issue 14): what splitting costs and buys on one machine.

1. ``segmetro replay --dry-run`` of a multi-object export as 1, 2 and 4 shards, every shard a
   process started at once (wall time until the last one ends, start-up included). On a
   2-core machine 4 shards cannot beat 2: the figure shows what the split costs, not what
   4 machines would gain.
2. ``segmetro replay`` of 10^5 events to a local fake Metronome (no rate limit) with an SQLite
   state and with a PostgreSQL state (a server started in a temporary directory, like the
   tests'), interleaved, median of ``--repeat``: one state transaction per acknowledged batch.

    python benchmarks/shard_bench.py --json /tmp/shard.json
    python benchmarks/shard_bench.py --events 200000 --files 16 --replay-messages 139000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.gen_export import DEFAULT_NOW, generate  # noqa: E402
from segmetro.fake_metronome import FakeConfig, FakeMetronome  # noqa: E402
from tests.pgserver import running_server  # noqa: E402

TOKEN = "bench-token"


def segmetro(*args: str) -> list[str]:
    return [sys.executable, "-m", "segmetro", *args]


def dry_run_shards(export: Path, shards: int, state: Path) -> float:
    """Wall seconds for ``shards`` dry-run processes started together."""
    mapping = export / "mapping.yaml"
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            segmetro(
                "replay",
                "--dry-run",
                "-m",
                str(mapping),
                "--now",
                DEFAULT_NOW,
                "-q",
                "--json",
                "--state",
                str(state),
                "--shard",
                f"{k}/{shards}",
                str(export / "events"),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for k in range(shards)
    ]
    new = 0
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode not in (0, 1):
            raise SystemExit(f"dry run failed: {err.decode()}")
        new += json.loads(out)["plan"].get("new", 0)
    elapsed = time.perf_counter() - started
    dry_run_shards.new = new  # type: ignore[attr-defined]
    return elapsed


def replay_once(export: Path, state: str) -> float:
    """Wall seconds of one replay of the export to a fresh fake, from a fresh state."""
    now = datetime.fromisoformat(DEFAULT_NOW.replace("Z", "+00:00")).astimezone(UTC)
    with FakeMetronome(FakeConfig(token=TOKEN, now=now, rate_limit=0)) as server:
        started = time.perf_counter()
        done = subprocess.run(
            segmetro("replay", "-m", str(export / "mapping.yaml"), "--now", DEFAULT_NOW, "-q",
                     "--json", "--api-url", server.url, "--state", state,
                     str(export / "events")),
            capture_output=True, env=dict(os.environ, METRONOME_BEARER_TOKEN=TOKEN), check=False,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        accepted = server.snapshot(include_events=False).events_accepted
    sent = json.loads(done.stdout)["sent"] if done.stdout.strip() else -1
    if done.returncode != 0 or accepted != sent:
        raise SystemExit(f"replay failed ({accepted} accepted, {sent} sent): {done.stderr!r}")
    replay_once.sent = sent  # type: ignore[attr-defined]
    return elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="dry-run export size")
    parser.add_argument("--files", type=int, default=16, help="objects of the dry-run export")
    parser.add_argument(
        "--replay-messages", type=int, default=139_000, help="messages replayed (72%% billable)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["dry-run", "state"], help="run one of the two parts")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"nproc": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="segmetro-shard-bench-") as tmp:
        work = Path(tmp)
        if args.only != "state":
            dry_part(work, args, results)
        if args.only != "dry-run":
            state_part(work, args, results)
    print(json.dumps(results, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def dry_part(work: Path, args: argparse.Namespace, results: dict[str, Any]) -> None:
    export = work / "dry"
    generate(export, events=args.events, files=args.files, gzip_files=True, seed=6,
             now=DEFAULT_NOW, days=20.0, dup_rate=0.0, varied=False)  # fmt: skip
    rounds: dict[int, list[float]] = {1: [], 2: [], 4: []}
    for _ in range(args.repeat):
        for shards in rounds:
            rounds[shards].append(dry_run_shards(export, shards, work / "none.db"))
            print(f"dry run, {shards} shard(s): {rounds[shards][-1]:.2f} s", file=sys.stderr)
    results["dry_run"] = {
        str(n): {
            "seconds": round(statistics.median(t), 3),
            "rounds": [round(x, 3) for x in t],
            "messages_per_s": round(args.events / statistics.median(t)),
        }
        for n, t in rounds.items()
    }
    results["dry_run_new_events"] = dry_run_shards.new  # type: ignore[attr-defined]


def state_part(work: Path, args: argparse.Namespace, results: dict[str, Any]) -> None:
    replay_export = work / "replay"
    generate(replay_export, events=args.replay_messages, files=4, gzip_files=True, seed=7,
             now=DEFAULT_NOW, days=20.0, dup_rate=0.0, varied=False)  # fmt: skip
    times: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    with running_server() as pg:
        for n in range(args.repeat):
            times["sqlite"].append(replay_once(replay_export, str(work / f"s{n}.db")))
            url = pg.url(pg.create_database())
            times["postgresql"].append(replay_once(replay_export, url))
            print(f"replay: sqlite {times['sqlite'][-1]:.2f} s, postgresql "
                  f"{times['postgresql'][-1]:.2f} s", file=sys.stderr)  # fmt: skip
    sent = replay_once.sent  # type: ignore[attr-defined]
    results["replay_events"] = sent
    results["replay"] = {
        kind: {
            "seconds": round(statistics.median(t), 3),
            "rounds": [round(x, 3) for x in t],
            "events_per_s": round(sent / statistics.median(t)),
        }
        for kind, t in times.items()
    }


if __name__ == "__main__":
    sys.exit(main())

"""Where ``segmetro map --workers 2`` starts to beat ``--workers 1``: the data behind
``segmetro.workers.choose_workers``.

For each easy export (``gen_export.py``, gzip) of ``--events`` events split over ``--files``
files, runs ``segmetro map --workers 1`` and ``--workers K`` (K = the CPUs this process may use)
interleaved, ``--repeat`` rounds, and reports the median wall time of each, their ratio, the
child's CPU time (user+sys, the workers included) and the 1-minute load average seen at the
start of each run (other processes share the cores: a parallel run only wins when a second core
is free).

    python benchmarks/workers_crossover.py --events 50000,250000,1000000 --files 1,2,4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import map_bench


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", default="50000,250000,1000000", help="comma-separated")
    parser.add_argument("--files", default="1,2,4", help="comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "segmetro-bench")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    many = map_bench.workers_module().default_workers()
    sizes = [int(x) for x in args.events.split(",")]
    file_counts = [int(x) for x in args.files.split(",")]
    rows: list[dict[str, Any]] = []
    print(f"--workers 1 vs --workers {many}; wall s (median of {args.repeat}), CPU s, load")
    print(
        f"{'events':>9}{'files':>6}{'MB':>7}{'w1 wall':>9}{f'w{many} wall':>9}"
        f"{f'w{many}/w1':>8}{'w1 cpu':>8}{f'w{many} cpu':>8}{'load':>6}"
    )
    for events in sizes:
        for files in file_counts:
            mapping, paths = map_bench.export(args.data, events, files)
            mb = sum(p.stat().st_size for p in paths) / 1e6
            wall: dict[int, list[float]] = {1: [], many: []}
            cpu: dict[int, list[float]] = {1: [], many: []}
            loads: list[float] = []
            for _ in range(args.repeat):
                for workers in (1, many):
                    loads.append(os.getloadavg()[0])
                    run = map_bench.run_child(map_bench.map_command(mapping, paths, workers))
                    if run.code != 0:  # the export has no rejects: 1 is a crash too
                        print(f"segmetro map failed with exit code {run.code}")
                        return 2
                    wall[workers].append(run.wall)
                    cpu[workers].append(run.cpu)
            w1, wn = statistics.median(wall[1]), statistics.median(wall[many])
            row = {
                "events": events,
                "files": files,
                "gzip_mb": round(mb, 1),
                "w1_wall_s": round(w1, 3),
                f"w{many}_wall_s": round(wn, 3),
                f"w{many}_over_w1_wall": round(wn / w1, 3),
                "w1_cpu_s": round(statistics.median(cpu[1]), 3),
                f"w{many}_cpu_s": round(statistics.median(cpu[many]), 3),
                "w1_wall_all": [round(x, 3) for x in wall[1]],
                f"w{many}_wall_all": [round(x, 3) for x in wall[many]],
                "load_median": round(statistics.median(loads), 2),
            }
            rows.append(row)
            print(
                f"{events:9d}{files:6d}{mb:7.1f}{w1:9.2f}{wn:9.2f}{wn / w1:8.2f}"
                f"{row['w1_cpu_s']:8.2f}{row[f'w{many}_cpu_s']:8.2f}{row['load_median']:6.1f}",
                flush=True,
            )
    if args.json is not None:
        args.json.write_text(json.dumps({"workers": many, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

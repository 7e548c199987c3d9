"""map's cost per event in CPU instructions (valgrind's callgrind), against the floor.

Instruction counts do not move with the machine's load, so two revisions (or two exports) can
be compared to a fraction of a percent where seconds on a shared 2-core machine vary by 10-20 %.
They do not see cache misses or system calls, so they complement ``map_bench.py`` (seconds of
CPU time, start-up included), never replace it.

Each figure is a child process that runs the work once, and another that runs it three times:
the difference, divided by twice the events, is the cost per event without start-up, imports
and the first run's one-time work. Measured on the easy and the varied export
(``gen_export.py``, one gzip file each): the floor (stdlib zlib + ``orjson.loads``, and with
zlib-ng, segmetro's inflate), the reader alone (``iter_records``) and ``run_map`` in-process.

    python benchmarks/instructions_bench.py                 # 20,000 events (~5 min)
    python benchmarks/instructions_bench.py --events 5000   # quicker
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import map_bench

HERE = Path(__file__).resolve().parent

#: the child: ``python -c CHILD WORK DIR RUNS``
CHILD = """
import sys
sys.path.insert(0, {here!r})
from pathlib import Path
import map_bench
from zlib_ng import zlib_ng
from segmetro.sources import iter_records, open_inputs
work, data, runs = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
paths = sorted((data / "events").glob("*"))
for _ in range(runs):
    if work == "floor":
        map_bench.floor(paths)
    elif work == "floor_zlibng":
        map_bench.floor(paths, zlib_ng)
    elif work == "reader":
        for _record in iter_records(open_inputs([str(p) for p in paths])):
            pass
    else:
        map_bench.in_process_map(data / "mapping.yaml", paths)
"""


def instructions(work: str, data: Path, runs: int) -> int:
    """Instructions callgrind counted for a child doing `work` `runs` times."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/out",
                sys.executable,
                "-c",
                CHILD.format(here=str(HERE)),
                work,
                str(data),
                str(runs),
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp,  # not a checkout: `-c` puts the working directory first on sys.path
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"valgrind {work} failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_event(work: str, data: Path, events: int) -> float:
    return (instructions(work, data, 3) - instructions(work, data, 1)) / (2 * events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "segmetro-instructions"
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    # the tree the children import (PYTHONPATH may point at another revision's): compiled once
    package = map_bench.imported_package()
    map_bench.byte_compile(package)
    print(f"segmetro from {package}")
    exports = {}
    for kind in ("easy", "varied"):
        out = args.data / f"{kind}-{args.events}"
        if not (out / "mapping.yaml").exists():
            extra = ["--varied"] if kind == "varied" else []
            command = [sys.executable, str(HERE / "gen_export.py"), "--events", str(args.events)]
            subprocess.run(
                [*command, "--files", "1", "--gzip", "--out", str(out), *extra],
                check=True,
                capture_output=True,
            )
        exports[kind] = out
    figures = {
        "floor": per_event("floor", exports["easy"], args.events),
        "floor_zlibng": per_event("floor_zlibng", exports["easy"], args.events),
        "reader": per_event("reader", exports["easy"], args.events),
        "map_easy": per_event("map", exports["easy"], args.events),
        "floor_varied": per_event("floor", exports["varied"], args.events),
        "map_varied": per_event("map", exports["varied"], args.events),
    }
    print(f"instructions per event ({args.events} events, one gzip file per export)")
    for name, value in figures.items():
        print(f"  {name:14} {value:10,.0f}")
    print("ratios (speed ÷ speed = instructions ÷ instructions)")
    print(f"  map ÷ floor, easy      {figures['floor'] / figures['map_easy']:.3f}")
    print(f"  map ÷ floor, varied    {figures['floor_varied'] / figures['map_varied']:.3f}")
    print(f"  varied ÷ easy          {figures['map_easy'] / figures['map_varied']:.3f}")
    print(f"  reader ÷ zlib-ng floor {figures['floor_zlibng'] / figures['reader']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

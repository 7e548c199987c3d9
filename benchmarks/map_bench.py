"""map throughput as a ratio to the floor, peak RSS of map and replay, and --help start-up time.

Everything is measured in ONE run, so the ratios hold on a noisy machine:

* the floor: a loop that only gunzips each file (stdlib ``zlib``, 1 MiB reads) and
  ``orjson.loads`` each line, over the same files;
* ``segmetro map`` in-process (``run_map``, one worker) and as a subprocess with ``--workers 1``
  and ``--workers 2`` on the multi-file export, in events/s and MB/s (compressed input), each
  as a ratio to the floor; floor and map runs are interleaved and the median of ``--repeat`` is
  reported;
* peak RSS (the subprocess's own ``VmHWM``, polled) of ``segmetro map`` and of
  ``segmetro replay`` against a local fake Metronome without a rate limit;
* ``segmetro --help`` start-up time, median of several subprocess runs.

    python benchmarks/map_bench.py                      # 10^6 events, 4 gzip files
    python benchmarks/map_bench.py --events 100000 --repeat 5 --no-replay

The export is generated once into ``--data`` (default: a cache directory under the system temp
directory) by ``gen_export.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen_export

NOW = gen_export.DEFAULT_NOW
#: per run_child call: the largest VmHWM (KiB) among the child's own children
CHILD_PEAKS: list[int] = []
TOKEN = "bench-token"


def export(data: Path, events: int, files: int) -> tuple[Path, list[Path]]:
    """The export for these parameters, generated on first use."""
    folder = data / f"export-{events}-{files}-gz"
    marker = folder / "DONE"
    if not marker.exists():
        print(f"generating {events} events in {files} gzip files under {folder} ...", flush=True)
        gen_export.generate(folder, events=events, files=files, gzip_files=True)
        marker.write_text("ok\n")
    paths = sorted((folder / "events").glob("*.jsonl.gz"))
    return folder / "mapping.yaml", paths


def floor(paths: Sequence[Path]) -> int:
    """Gunzip and ``orjson.loads`` every line; nothing else. Returns the number of lines."""
    loads = orjson.loads
    n = 0
    for path in paths:
        d = zlib.decompressobj(31)
        tail = b""
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                lines = (tail + d.decompress(chunk)).split(b"\n")
                tail = lines.pop()
                for line in lines:
                    loads(line)
                n += len(lines)
        rest = tail + d.flush()
        for line in rest.split(b"\n"):
            if line:
                loads(line)
                n += 1
    return n


def in_process_map(mapping: Path, paths: Sequence[Path]) -> int:
    from segmetro.mapping import load_mapping
    from segmetro.pipeline import run_map
    from segmetro.sources import open_inputs
    from segmetro.window import Window

    with open(os.devnull, "wb") as out:
        report = run_map(
            load_mapping(mapping),
            open_inputs([str(p) for p in paths]),
            window=Window.from_options(since=None, until=None, now=NOW),
            out=out,
            workers=1,
        )
    return report.counts.read


def run_child(args: list[str], env: dict[str, str] | None = None) -> tuple[float, int, int]:
    """Run a command; (wall seconds, exit code, peak RSS in KiB).

    The peak is the child's own ``VmHWM`` from ``/proc/<pid>/status``, polled until it exits:
    ``wait4``'s ``ru_maxrss`` would report at least this (large) process's RSS, which a child
    inherits through fork. The largest peak of its own children (``--workers``) goes to
    ``CHILD_PEAKS``.
    """
    CHILD_PEAKS.append(0)
    started = time.perf_counter()
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env or os.environ.copy()
    )
    peak = [0]
    done = threading.Event()

    def poll() -> None:
        status = Path(f"/proc/{proc.pid}/status")
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        while not done.is_set():
            peak[0] = max(peak[0], vm_hwm(status))
            try:
                pids = children.read_text().split()
            except OSError:
                pids = []
            for pid in pids:
                CHILD_PEAKS[-1] = max(CHILD_PEAKS[-1], vm_hwm(Path(f"/proc/{pid}/status")))
            done.wait(0.02)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    elapsed = time.perf_counter() - started
    done.set()
    watcher.join()
    if proc.returncode not in (0, 1):
        sys.stderr.write(err.decode(errors="replace"))
    return elapsed, proc.returncode, peak[0]


def vm_hwm(status: Path) -> int:
    """A process's peak resident set in KiB (0 once it has exited)."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def map_command(mapping: Path, paths: Sequence[Path], workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "segmetro",
        "map",
        "-m",
        str(mapping),
        *map(str, paths),
        "--now",
        NOW,
        "-q",
        "-o",
        os.devnull,
        "--workers",
        str(workers),
    ]


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def replay_rss(mapping: Path, paths: Sequence[Path], workdir: Path) -> dict[str, Any]:
    """Replay the whole export to a local fake Metronome without a rate limit."""
    from segmetro.fake_metronome import FakeConfig, FakeMetronome

    now = datetime.fromisoformat(NOW.replace("Z", "+00:00")).astimezone(UTC)
    with FakeMetronome(FakeConfig(token=TOKEN, now=now, rate_limit=0)) as fake:
        env = os.environ.copy()
        env["METRONOME_BEARER_TOKEN"] = TOKEN
        args = [
            sys.executable,
            "-m",
            "segmetro",
            "replay",
            "-m",
            str(mapping),
            *map(str, paths),
            "--now",
            NOW,
            "-q",
            "--json",
            "--api-url",
            fake.url,
            "--state",
            str(workdir / "state.db"),
        ]
        elapsed, code, rss = run_child(args, env)
        state = fake.snapshot(include_events=False)
    return {
        "elapsed_s": round(elapsed, 2),
        "exit_code": code,
        "accepted": state.events_accepted,
        "events_per_s": round(state.events_accepted / elapsed, 1),
        "peak_rss_mb": round(rss / 1024, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "segmetro-bench")
    parser.add_argument("--no-replay", action="store_true", help="skip the replay RSS run")
    parser.add_argument("--help-runs", type=int, default=7, help="runs of segmetro --help")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    mapping, paths = export(args.data, args.events, args.files)
    mb = sum(p.stat().st_size for p in paths) / 1e6
    print(f"export: {args.events} events, {len(paths)} files, {mb:.1f} MB gzip", flush=True)

    times: dict[str, list[float]] = {"floor": [], "map_inproc": [], "map_w1": [], "map_w2": []}
    rss: dict[str, int] = {}
    lines = 0
    for round_ in range(args.repeat):
        t = time.perf_counter()
        lines = floor(paths)
        times["floor"].append(time.perf_counter() - t)
        times["map_inproc"].append(timed(lambda: in_process_map(mapping, paths)))
        for workers in (1, 2):
            elapsed, code, peak = run_child(map_command(mapping, paths, workers))
            if code not in (0, 1):
                print(f"segmetro map --workers {workers} failed with exit code {code}")
                return 2
            times[f"map_w{workers}"].append(elapsed)
            rss[f"map_w{workers}"] = max(rss.get(f"map_w{workers}", 0), peak)
            rss[f"map_w{workers}_worker"] = max(
                rss.get(f"map_w{workers}_worker", 0), CHILD_PEAKS[-1]
            )
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))

    median = {k: statistics.median(v) for k, v in times.items()}
    results: dict[str, Any] = {"machine": machine(), "events": lines, "gzip_mb": round(mb, 1)}
    print()
    print(f"{'':24}{'events/s':>12}{'MB/s':>9}{'x floor':>9}")
    for key, label in (
        ("floor", "floor (gunzip+loads)"),
        ("map_inproc", "map in-process, 1 wkr"),
        ("map_w1", "map --workers 1"),
        ("map_w2", "map --workers 2"),
    ):
        eps = lines / median[key]
        ratio = median["floor"] / median[key]
        results[key] = {
            "seconds": round(median[key], 3),
            "events_per_s": round(eps),
            "mb_per_s": round(mb / median[key], 2),
            "ratio_to_floor": round(ratio, 3),
        }
        print(f"{label:24}{eps:12,.0f}{mb / median[key]:9.2f}{ratio:9.2f}")
    speedup = median["map_w1"] / median["map_w2"]
    results["workers_2_over_1"] = round(speedup, 3)
    print(f"--workers 2 / --workers 1: {speedup:.2f}x")
    for key in ("map_w1", "map_w2"):
        results[f"{key}_peak_rss_mb"] = round(rss[key] / 1024, 1)
        results[f"{key}_worker_peak_rss_mb"] = round(rss[f"{key}_worker"] / 1024, 1)
        print(
            f"peak RSS {key}: map process {rss[key] / 1024:.1f} MB, "
            f"largest worker process {rss[f'{key}_worker'] / 1024:.1f} MB"
        )

    if not args.no_replay:
        with tempfile.TemporaryDirectory(prefix="segmetro-bench-") as tmp:
            replay = replay_rss(mapping, paths, Path(tmp))
        results["replay"] = replay
        print(
            f"replay (fake Metronome, no rate limit): {replay['accepted']} events in "
            f"{replay['elapsed_s']} s ({replay['events_per_s']:,.0f} ev/s), "
            f"peak RSS {replay['peak_rss_mb']} MB, exit {replay['exit_code']}"
        )

    startup = []
    for _ in range(args.help_runs):
        elapsed, _, _ = run_child([sys.executable, "-m", "segmetro", "--help"])
        startup.append(elapsed)
    results["help_seconds_median"] = round(statistics.median(startup), 3)
    print(f"segmetro --help: median {statistics.median(startup):.3f} s of {args.help_runs} runs")

    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""map throughput as same-run ratios (to the floor, varied ÷ easy, to jq and a plain script),
the default --workers against one worker, zlib-ng (segmetro's inflate) and isal against the
stdlib's zlib, peak RSS, --help start-up time.

Everything is measured in ONE run, interleaved round by round, so the ratios hold on a noisy
machine:

* two exports with the same number of events and files (``gen_export.py``, gzip): the *easy*
  one (one mapping = Segment's destination defaults, ``…mmmZ`` timestamps, 0.2 % re-deliveries)
  and the *varied* one (``--varied``: ``…mmmZ``, ``+02:00`` offsets and whole seconds, three
  mappings with triggers using ``@template``, ``@coalesce``, ``@if`` and ``string_properties``,
  1 % duplicates);
* the floor over each: a loop that only gunzips each file (stdlib ``zlib``, 1 MiB reads) and
  ``orjson.loads`` each line; the same floor with ``zlib_ng`` (what segmetro's reader inflates
  with) and, when installed, ``isal`` (``isal.isal_zlib``) instead of zlib,
  and the decompression alone with each, both as the floor does it (``wbits=31``) and as
  segmetro's reader does it (raw deflate, 1 MiB output steps, a separate CRC32);
* ``segmetro map`` in-process (``run_map``, one worker) on both exports, and as a subprocess:
  ``--workers 1`` on both, ``--workers 2`` and the default ``--workers`` on the easy one, and the
  default against ``--workers 1`` on the easy export split over other file counts
  (``--also-files``);
* peers on the easy export, doing its mapping: ``gzip -dc … | jq -c`` (the same filter and
  fields, but no timestamp normalisation, no duplicate check, no window) and
  ``benchmarks/peer_plain.py`` (``json.loads`` + jsonpath-ng + ``datetime.fromisoformat`` + a
  set of seen ``transaction_id``\\ s: what a user would write);
* peak RSS (the subprocess's own ``VmHWM``, polled) of ``segmetro map`` and of
  ``segmetro replay`` against a local fake Metronome without a rate limit;
* ``segmetro --help`` start-up time, median of several subprocess runs.

Every run is timed twice: wall clock, and CPU time (user+sys: ``time.process_time()`` for what
runs in this process; the ``getrusage(RUSAGE_CHILDREN)`` delta for a subprocess, which includes
its worker processes and both ends of the jq pipe). Other processes share the cores: they
stretch wall time, hardly CPU time, so the throughput ratios are computed on **CPU time**. The
default ``--workers`` against one worker is compared on **wall time** (what extra processes buy;
their CPU time only adds up). Each ratio is the median over the rounds of the ratio within one
round.

    python benchmarks/map_bench.py                      # 10^6 events, 4 gzip files
    python benchmarks/map_bench.py --events 300000 --files 2 --repeat 3 --json /tmp/map_bench.json
    python benchmarks/map_bench.py --events 100000 --repeat 5 --no-replay --no-peers

The exports are generated once into ``--data`` (default: a cache directory under the system temp
directory) by ``gen_export.py``.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
from zlib_ng import zlib_ng

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen_export

NOW = gen_export.DEFAULT_NOW
TOKEN = "bench-token"
HERE = Path(__file__).resolve().parent
#: the easy export's mapping (gen_export.MAPPING_YAML) as a jq program
JQ_PROGRAM = (
    'select(.type == "track" and (.event == "API Call" or .event == "Job Completed"))'
    " | {transaction_id: .messageId, customer_id: .context.groupId, event_type: .event,"
    " timestamp: .timestamp, properties: .properties}"
)


@dataclass
class Sample:
    """One timed run."""

    wall: float
    cpu: float
    code: int = 0
    #: peak RSS (KiB) of the process itself, and the largest among its own children
    peak_kib: int = 0
    child_peak_kib: int = 0


def export(data: Path, events: int, files: int, *, varied: bool = False) -> tuple[Path, list[Path]]:
    """The export for these parameters, generated on first use."""
    folder = data / f"export-{events}-{files}-gz{'-varied' if varied else ''}"
    marker = folder / "DONE"
    if not marker.exists():
        kind = "varied" if varied else "easy"
        print(f"generating {events} {kind} events in {files} gzip files under {folder} ...")
        gen_export.generate(
            folder,
            events=events,
            files=files,
            gzip_files=True,
            varied=varied,
            dup_rate=0.01 if varied else 0.002,
        )
        marker.write_text("ok\n")
    paths = sorted((folder / "events").glob("*.jsonl.gz"))
    return folder / "mapping.yaml", paths


def floor(paths: Sequence[Path], zlib_module: ModuleType = zlib) -> int:
    """Gunzip and ``orjson.loads`` every line; nothing else. Returns the number of lines."""
    loads = orjson.loads
    n = 0
    for path in paths:
        d = zlib_module.decompressobj(31)
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


def gunzip(paths: Sequence[Path], zlib_module: ModuleType = zlib) -> int:
    """Decompress only, as the floor does (``wbits=31``: the module checks CRC32 and ISIZE)."""
    n = 0
    for path in paths:
        d = zlib_module.decompressobj(31)
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                n += len(d.decompress(chunk))
        n += len(d.flush())
        if not d.eof:
            raise ValueError(f"{path}: gzip stream ends early")
    return n


def _deflate_start(head: bytes) -> int:
    """Offset of the deflate data after a gzip member header (RFC 1952)."""
    flags = head[3]
    pos = 10
    if flags & 4:  # FEXTRA
        pos += 2 + int.from_bytes(head[pos : pos + 2], "little")
    for bit in (8, 16):  # FNAME, FCOMMENT: NUL-terminated
        if flags & bit:
            pos = head.index(b"\0", pos) + 1
    if flags & 2:  # FHCRC
        pos += 2
    return pos


def inflate_like_reader(paths: Sequence[Path], zlib_module: ModuleType = zlib) -> int:
    """Decompress only, as ``segmetro.sources`` does: raw deflate in outputs of at most 1 MiB,
    CRC32 and length computed separately and compared with the trailer."""
    limit = 1 << 20
    crc32 = zlib_module.crc32
    total = 0
    for path in paths:
        d = zlib_module.decompressobj(-15)
        crc = size = 0
        with path.open("rb") as fh:
            head = fh.read(1 << 20)
            pending = head[_deflate_start(head) :]
            while pending and not d.eof:
                out = d.decompress(pending, limit)
                while True:
                    crc = crc32(out, crc)
                    size += len(out)
                    if len(out) < limit or d.eof:
                        break
                    out = d.decompress(d.unconsumed_tail, limit)
                pending = d.unused_data if d.eof else fh.read(1 << 20)
            trailer = pending[:8] if len(pending) >= 8 else pending + fh.read(8)
        if trailer[:8] != crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little"):
            raise ValueError(f"{path}: CRC32/ISIZE mismatch")
        total += size
    return total


def trailer_checked(zlib_module: ModuleType) -> bool:
    """Whether ``decompressobj(31)`` of the module rejects a wrong CRC32 and a wrong ISIZE."""
    data = zlib.compress(b"x" * 5000, wbits=31)
    for at in (-8, -4):  # CRC32, ISIZE
        bad = bytearray(data)
        bad[at] ^= 1
        d = zlib_module.decompressobj(31)
        try:
            d.decompress(bytes(bad))
            d.flush()
        except Exception:  # noqa: BLE001 - zlib.error / isal_zlib.error
            continue
        return False
    return True


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


def in_process(fn: Callable[[], Any]) -> Sample:
    """Wall and CPU time (this process) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return Sample(time.perf_counter() - wall, time.process_time() - cpu)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(args: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> Sample:
    """Run a command; its wall time, CPU time, exit code and peak RSS.

    CPU time is user+sys of the child and of every descendant it waited for (the
    ``RUSAGE_CHILDREN`` delta around the run; nothing else of ours runs meanwhile). The peak is
    the child's own ``VmHWM`` from ``/proc/<pid>/status``, polled until it exits: ``wait4``'s
    ``ru_maxrss`` would report at least this (large) process's RSS, which a child inherits
    through fork; the largest peak among its own children (``--workers``) is polled likewise.
    """
    cpu = _children_cpu()
    started = time.perf_counter()
    proc = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env or os.environ.copy(),
        cwd=cwd,
    )
    peak = [0, 0]
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
                peak[1] = max(peak[1], vm_hwm(Path(f"/proc/{pid}/status")))
            done.wait(0.02)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    elapsed = time.perf_counter() - started
    done.set()
    watcher.join()
    if proc.returncode != 0:
        sys.stderr.write(err.decode(errors="replace")[-4000:])
    return Sample(elapsed, _children_cpu() - cpu, proc.returncode, peak[0], peak[1])


def vm_hwm(status: Path) -> int:
    """A process's peak resident set in KiB (0 once it has exited)."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def map_command(mapping: Path, paths: Sequence[Path], workers: int | None) -> list[str]:
    """``segmetro map`` of `paths` to /dev/null; ``workers=None``: the default ``--workers``."""
    args = [
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
    ]
    return args if workers is None else [*args, "--workers", str(workers)]


def jq_command(paths: Sequence[Path]) -> list[str]:
    files = " ".join(f"'{p}'" for p in paths)
    return ["sh", "-c", f"gzip -dc {files} | jq -c '{JQ_PROGRAM}'"]


def plain_command(paths: Sequence[Path]) -> list[str]:
    return [sys.executable, str(HERE / "peer_plain.py"), *map(str, paths)]


def workers_module() -> ModuleType:
    """``segmetro.pipeline.workers`` (``segmetro.workers`` before the pipeline package)."""
    import importlib

    try:
        return importlib.import_module("segmetro.pipeline.workers")
    except ImportError:
        return importlib.import_module("segmetro.workers")


def default_choice(paths: Sequence[Path]) -> int:
    """The number of workers ``segmetro map`` chooses for `paths` when ``--workers`` is not set."""
    from segmetro.sources import open_inputs

    objects = open_inputs([str(p) for p in paths]).objects
    choose = getattr(workers_module(), "choose_workers", None)
    return int(choose(objects)) if choose is not None else workers_module().default_workers()


def imported_package(env: dict[str, str] | None = None) -> Path:
    """The segmetro package a child started with `env` imports, asked of one started outside
    any checkout (``python -m`` and ``-c`` put the working directory first on ``sys.path``)."""
    found = subprocess.run(
        [sys.executable, "-c", "import segmetro; print(segmetro.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tempfile.gettempdir(),
    ).stdout.strip()
    return Path(found).resolve().parent


def byte_compile(package: Path) -> None:
    """Write the package's ``.pyc`` files, which an installed package has and an editable
    install under ``PYTHONDONTWRITEBYTECODE`` lacks (~70 ms of compiling on every subprocess
    start)."""
    compileall.compile_dir(str(package), quiet=1)


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
        "jq": _version(["jq", "--version"]),
    }


def _version(args: list[str]) -> str | None:
    try:
        return subprocess.run(args, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return None


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
        run = run_child(args, env)
        state = fake.snapshot(include_events=False)
    return {
        "elapsed_s": round(run.wall, 2),
        "exit_code": run.code,
        "accepted": state.events_accepted,
        "events_per_s": round(state.events_accepted / run.wall, 1),
        "peak_rss_mb": round(run.peak_kib / 1024, 1),
    }


def _isal() -> ModuleType | None:
    try:
        from isal import isal_zlib
    except ImportError:
        return None
    return isal_zlib


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "segmetro-bench")
    parser.add_argument(
        "--also-files",
        default="2,4",
        help="also compare the default --workers with --workers 1 on the easy export split over "
        "these file counts (comma-separated; --files itself is always compared)",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip jq and peer_plain.py")
    parser.add_argument("--no-replay", action="store_true", help="skip the replay RSS run")
    parser.add_argument("--help-runs", type=int, default=7, help="runs of segmetro --help")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    notes: list[str] = []
    byte_compile(imported_package())
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        notes.append(
            "segmetro byte-compiled first (as pip does on install): this environment sets "
            "PYTHONDONTWRITEBYTECODE, which would make every subprocess compile it from source"
        )
    mapping, paths = export(args.data, args.events, args.files)
    v_mapping, v_paths = export(args.data, args.events, args.files, varied=True)
    also = sorted({int(x) for x in args.also_files.split(",") if x} - {args.files})
    others = {files: export(args.data, args.events, files)[1] for files in also}
    mb = sum(p.stat().st_size for p in paths) / 1e6
    v_mb = sum(p.stat().st_size for p in v_paths) / 1e6
    print(f"easy export: {args.events} events, {len(paths)} files, {mb:.1f} MB gzip")
    print(f"varied export: {args.events} events, {len(v_paths)} files, {v_mb:.1f} MB gzip")
    isal_zlib = _isal()
    if isal_zlib is None:
        notes.append("isal is not installed (pip install isal): no isal figures")
    jq_ok = not args.no_peers and bool(shutil.which("jq") and shutil.which("gzip"))
    if not args.no_peers and not jq_ok:
        notes.append("jq (or gzip) not found on PATH: jq peer skipped")
    choices = {files: default_choice(p) for files, p in [(args.files, paths), *others.items()]}
    print(
        "default --workers chooses: " + ", ".join(f"{n} for {f} files" for f, n in choices.items())
    )

    def child(command: list[str]) -> Callable[[], Sample]:
        def run() -> Sample:
            sample = run_child(command)
            if sample.code != 0:  # the exports have no rejects: exit 1 is a crash too
                raise SystemExit(f"{command[:6]} ... failed with exit code {sample.code}")
            return sample

        return run

    plan: dict[str, Callable[[], Sample]] = {
        "floor": lambda: in_process(lambda: floor(paths)),
        "map_inproc": lambda: in_process(lambda: in_process_map(mapping, paths)),
        "map_w1": child(map_command(mapping, paths, 1)),
        "map_w2": child(map_command(mapping, paths, 2)),
        "map_default": child(map_command(mapping, paths, None)),
        "floor_varied": lambda: in_process(lambda: floor(v_paths)),
        "map_inproc_varied": lambda: in_process(lambda: in_process_map(v_mapping, v_paths)),
        "map_w1_varied": child(map_command(v_mapping, v_paths, 1)),
    }
    for files, other in others.items():
        plan[f"map_w1_{files}f"] = child(map_command(mapping, other, 1))
        plan[f"map_default_{files}f"] = child(map_command(mapping, other, None))
    if jq_ok:
        plan["jq"] = child(jq_command(paths))
    if not args.no_peers:
        plan["plain"] = child(plain_command(paths))
    plan["gunzip_zlib"] = lambda: in_process(lambda: gunzip(paths))
    plan["inflate_zlib"] = lambda: in_process(lambda: inflate_like_reader(paths))
    plan["floor_zlibng"] = lambda: in_process(lambda: floor(paths, zlib_ng))
    plan["gunzip_zlibng"] = lambda: in_process(lambda: gunzip(paths, zlib_ng))
    plan["inflate_zlibng"] = lambda: in_process(lambda: inflate_like_reader(paths, zlib_ng))
    if isal_zlib is not None:
        plan["floor_isal"] = lambda: in_process(lambda: floor(paths, isal_zlib))
        plan["gunzip_isal"] = lambda: in_process(lambda: gunzip(paths, isal_zlib))
        plan["inflate_isal"] = lambda: in_process(lambda: inflate_like_reader(paths, isal_zlib))

    lines = floor(paths)
    if floor(v_paths) != lines:
        raise SystemExit("the two exports do not have the same number of lines")
    samples: dict[str, list[Sample]] = {key: [] for key in plan}
    loads: list[float] = []
    for round_ in range(args.repeat):
        loads.append(os.getloadavg()[0])
        for key, run in plan.items():
            samples[key].append(run())
        print(
            f"round {round_ + 1} (load {loads[-1]:.1f}), CPU s: "
            + ", ".join(f"{k} {v[-1].cpu:.2f}" for k, v in samples.items()),
            flush=True,
        )

    def med(key: str, attr: str = "cpu") -> float:
        return statistics.median(getattr(s, attr) for s in samples[key])

    def ratio(num: str, den: str, attr: str = "cpu") -> tuple[float, list[float]]:
        """Median over rounds of (den time / num time) = num speed ÷ den speed."""
        per_round = [
            getattr(d, attr) / getattr(n, attr)
            for n, d in zip(samples[num], samples[den], strict=True)
        ]
        return statistics.median(per_round), per_round

    results: dict[str, Any] = {
        "machine": machine(),
        "command": "python benchmarks/map_bench.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "events": lines,
        "files": len(paths),
        "gzip_mb": round(mb, 1),
        "varied_gzip_mb": round(v_mb, 1),
        "rounds": args.repeat,
        "load_average_1min": [round(x, 2) for x in loads],
        "default_workers_chosen": {f"{f}_files": n for f, n in choices.items()},
        "notes": notes,
        "ratios_on": "CPU time (user+sys), except default_over_w1 (wall time)",
    }

    rows = [
        ("floor", "floor: zlib + orjson.loads", mb, "floor"),
        ("floor_zlibng", "floor: zlib-ng + orjson.loads", mb, "floor"),
        ("floor_isal", "floor: isal + orjson.loads", mb, "floor"),
        ("map_inproc", "map in-process, 1 worker", mb, "floor"),
        ("map_w1", "map --workers 1", mb, "floor"),
        ("map_w2", "map --workers 2", mb, "floor"),
        ("map_default", f"map (default: {choices[args.files]} wkr)", mb, "floor"),
        ("jq", "gzip -dc | jq -c", mb, "floor"),
        ("plain", "peer_plain.py", mb, "floor"),
        ("floor_varied", "varied: floor", v_mb, "floor_varied"),
        ("map_inproc_varied", "varied: map in-process", v_mb, "floor_varied"),
        ("map_w1_varied", "varied: map --workers 1", v_mb, "floor_varied"),
    ]
    print()
    print(f"{lines} events; events/s and MB/s (gzip) on CPU time; x floor = same export's floor")
    print(f"{'':30}{'wall s':>8}{'CPU s':>8}{'events/s':>11}{'MB/s':>8}{'x floor':>9}")
    for key, label, size, base in rows:
        if key not in samples:
            continue
        cpu, wall = med(key), med(key, "wall")
        to_floor, per_round = ratio(key, base)
        results[key] = {
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "seconds": round(cpu, 3),
            "events_per_s": round(lines / cpu),
            "events_per_s_wall": round(lines / wall),
            "mb_per_s": round(size / cpu, 2),
            "ratio_to_floor": round(to_floor, 3),
            "ratio_to_floor_per_round": [round(x, 3) for x in per_round],
            "ratio_to_floor_wall": round(ratio(key, base, "wall")[0], 3),
        }
        print(
            f"{label:30}{wall:8.2f}{cpu:8.2f}{lines / cpu:11,.0f}{size / cpu:8.2f}{to_floor:9.2f}"
        )

    targets: list[tuple[str, str, str, str, float | None]] = [
        ("varied_over_easy", "varied ÷ easy, map --workers 1", "map_w1_varied", "map_w1", 0.8),
        (
            "varied_over_easy_inproc",
            "varied ÷ easy, in-process",
            "map_inproc_varied",
            "map_inproc",
            None,
        ),
        ("w1_over_floor_easy", "map --workers 1 ÷ floor, easy", "map_w1", "floor", 0.5),
        (
            "w1_over_floor_varied",
            "map --workers 1 ÷ floor, varied",
            "map_w1_varied",
            "floor_varied",
            0.45,
        ),
        ("segmetro_over_jq", "segmetro --workers 1 ÷ jq", "map_w1", "jq", None),
        ("segmetro_over_plain", "segmetro --workers 1 ÷ peer_plain.py", "map_w1", "plain", None),
        (
            "zlibng_over_zlib_reader",
            "inflate as the reader: zlib-ng ÷ zlib",
            "inflate_zlibng",
            "inflate_zlib",
            None,
        ),
        ("zlibng_floor_over_floor", "floor: zlib-ng ÷ zlib", "floor_zlibng", "floor", None),
        (
            "isal_over_zlib_gunzip",
            "gunzip: isal ÷ zlib (wbits=31)",
            "gunzip_isal",
            "gunzip_zlib",
            None,
        ),
        (
            "isal_over_zlib_reader",
            "inflate as the reader: isal ÷ zlib",
            "inflate_isal",
            "inflate_zlib",
            None,
        ),
        ("isal_floor_over_floor", "floor: isal ÷ zlib", "floor_isal", "floor", None),
    ]
    print()
    print("same-run ratios (speed ÷ speed, CPU time; median over rounds of each round's ratio)")
    for key, label, num, den, target in targets:
        if num not in samples or den not in samples:
            continue
        value, per_round = ratio(num, den)
        wall_value = ratio(num, den, "wall")[0]
        verdict = "" if target is None else (" ok" if value >= target else " MISSED")
        goal = "" if target is None else f"  target >= {target}{verdict}"
        results[key] = {
            "value": round(value, 3),
            "per_round": [round(x, 3) for x in per_round],
            "wall": round(wall_value, 3),
            "target": target,
        }
        print(f"  {label:38}{value:6.2f}  (wall {wall_value:.2f}; rounds {_fmt(per_round)}){goal}")

    print()
    print("default --workers ÷ --workers 1 (speed ratio on WALL time; >= 1: not slower)")
    for files in [args.files, *others]:
        suffix = "" if files == args.files else f"_{files}f"
        value, per_round = ratio(f"map_default{suffix}", f"map_w1{suffix}", "wall")
        w1 = med(f"map_w1{suffix}", "wall")
        default = med(f"map_default{suffix}", "wall")
        results[f"default_over_w1_{files}_files"] = {
            "chosen_workers": choices[files],
            "value": round(value, 3),
            "per_round": [round(x, 3) for x in per_round],
            "w1_wall_s": round(w1, 3),
            "default_wall_s": round(default, 3),
        }
        print(
            f"  {files} files: default chose {choices[files]} worker(s): {default:.2f} s vs "
            f"{w1:.2f} s, ratio {value:.2f} (rounds {_fmt(per_round)})"
        )
    w2_over_w1, _ = ratio("map_w2", "map_w1", "wall")
    results["workers_2_over_1"] = round(w2_over_w1, 3)
    print(f"  --workers 2 ÷ --workers 1 on {args.files} files (wall): {w2_over_w1:.2f}")
    if isal_zlib is not None:
        checked = results["isal_checks_crc_isize"] = trailer_checked(isal_zlib)
        print(f"isal_zlib.decompressobj(31) rejects a bad CRC32 and a bad ISIZE: {checked}")

    for key in ("map_w1", "map_w2"):
        own = max(s.peak_kib for s in samples[key]) / 1024
        kids = max(s.child_peak_kib for s in samples[key]) / 1024
        results[f"{key}_peak_rss_mb"] = round(own, 1)
        results[f"{key}_worker_peak_rss_mb"] = round(kids, 1)
        print(f"peak RSS {key}: map process {own:.1f} MB, largest worker process {kids:.1f} MB")

    if not args.no_replay:
        with tempfile.TemporaryDirectory(prefix="segmetro-bench-") as tmp:
            replay = replay_rss(mapping, paths, Path(tmp))
        results["replay"] = replay
        print(
            f"replay (fake Metronome, no rate limit): {replay['accepted']} events in "
            f"{replay['elapsed_s']} s ({replay['events_per_s']:,.0f} ev/s), "
            f"peak RSS {replay['peak_rss_mb']} MB, exit {replay['exit_code']}"
        )

    startup = [
        run_child([sys.executable, "-m", "segmetro", "--help"]).wall for _ in range(args.help_runs)
    ]
    results["help_seconds_median"] = round(statistics.median(startup), 3)
    print(f"segmetro --help: median {statistics.median(startup):.3f} s of {args.help_runs} runs")
    if "jq" in samples:
        notes.append("jq: same filter and fields; no timestamp normalisation, dedup or window")
    for note in notes:
        print(f"note: {note}")

    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _fmt(values: Sequence[float]) -> str:
    return " ".join(f"{x:.2f}" for x in values)


if __name__ == "__main__":
    sys.exit(main())

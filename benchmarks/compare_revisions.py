"""Before/after: does another revision of segmetro map the same inputs to the same bytes?

Checks out ``--before`` (a git revision) into a temporary worktree and runs its ``segmetro map``
and this checkout's over the same inputs: the samples with both sample mappings, and the
benchmark exports (easy and varied, see ``gen_export.py``). For each, the output bytes, the
rejects (as parsed objects, in order) and the summary counts must be equal; any difference is
printed and the exit code is 1.

    python benchmarks/compare_revisions.py --before addbcf7
    python benchmarks/compare_revisions.py --before addbcf7 --events 300000 --files 2
    python benchmarks/compare_revisions.py --before 6083380 --events 300000 --time 3

``--time N`` then times ``segmetro map --workers 1`` of both revisions on both exports, N
rounds interleaved, as CPU time (user+sys of the child), with both trees byte-compiled and the
same installed dependencies: the change the code alone made.

The summary counts are read from the ``read …, rejected N`` line both revisions print.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import map_bench

ROOT = Path(__file__).resolve().parent.parent
_COUNT = re.compile(r"([a-z][a-z ]*?) (\d+)")


def code_env(code: Path) -> dict[str, str]:
    """The environment that runs segmetro from the tree `code`, checked (callers run children
    outside the checkout, see `map_bench.imported_package`)."""
    env = dict(os.environ, PYTHONPATH=str(code))
    found = map_bench.imported_package(env)
    if found != (code / "segmetro").resolve():
        raise SystemExit(f"PYTHONPATH={code} imports segmetro from {found}")
    return env


def run_map(
    code: Path, mapping: Path, inputs: Sequence[Path], work: Path, now: str
) -> tuple[bytes, list[object], dict[str, int]]:
    """Output bytes, rejects and counts of ``segmetro map`` from the source tree `code`."""
    out, rejects = work / "out.jsonl", work / "rejects.jsonl"
    for path in (out, rejects):
        path.unlink(missing_ok=True)
    env = code_env(code)
    args = [sys.executable, "-m", "segmetro", "map", "-m", str(mapping), *map(str, inputs)]
    args += ["--now", now, "-o", str(out), "--rejects", str(rejects), "--workers", "1"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False, cwd=work)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{code}: exit {done.returncode}: {done.stderr.strip()[-400:]}")
    summary = next(line for line in done.stderr.splitlines() if line.startswith("read "))
    counts = {name.strip(): int(n) for name, n in _COUNT.findall(summary)}
    found = (
        [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
        if rejects.exists()
        else []
    )
    return out.read_bytes(), found, counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git revision to compare with")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "segmetro-bench")
    parser.add_argument("--time", type=int, default=0, help="rounds of timing (0: none)")
    args = parser.parse_args(argv)

    cases: list[tuple[str, Path, list[Path], str]] = []
    samples = sorted((ROOT / "samples" / "events").iterdir())
    for name in ("mapping.yaml", "mapping-advanced.yaml"):
        cases.append((f"samples, {name}", ROOT / "samples" / name, samples, "2026-11-26T00:00:00Z"))
    for varied in (False, True):
        mapping, inputs = map_bench.export(args.data, args.events, args.files, varied=varied)
        label = f"{'varied' if varied else 'easy'} export, {args.events} events"
        cases.append((label, mapping, list(inputs), map_bench.NOW))

    with tempfile.TemporaryDirectory(prefix="segmetro-compare-") as tmp:
        before = Path(tmp) / "before"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before],
            check=True,
            capture_output=True,
        )
        try:
            different = 0
            for label, mapping, inputs, now in cases:
                results = []
                for code in (before, ROOT):
                    work = Path(tmp) / ("a" if code is before else "b")
                    work.mkdir(exist_ok=True)
                    results.append(run_map(code, mapping, inputs, work, now))
                (out_a, rej_a, counts_a), (out_b, rej_b, counts_b) = results
                same = out_a == out_b and rej_a == rej_b and counts_a == counts_b
                different += not same
                lines = out_b.count(b"\n")
                print(
                    f"{'same' if same else 'DIFFERENT'}: {label}: {lines} output lines, "
                    f"{len(rej_b)} rejects, counts {counts_b}"
                )
                if not same:
                    print(f"  output equal: {out_a == out_b}, rejects equal: {rej_a == rej_b}")
                    print(f"  counts before: {counts_a}")
            if args.time:
                time_both(before, cases[2:], args.time)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)],
                check=False,
                capture_output=True,
            )
    return 1 if different else 0


def time_both(
    before: Path, cases: Sequence[tuple[str, Path, list[Path], str]], rounds: int
) -> None:
    """Median CPU seconds of each revision's ``map --workers 1`` per case, interleaved."""
    for code in (before, ROOT):
        map_bench.byte_compile(code / "segmetro")
    for label, mapping, inputs, _now in cases:
        samples: dict[Path, list[float]] = {before: [], ROOT: []}
        for _ in range(rounds):
            for code in (before, ROOT):
                command = map_bench.map_command(mapping, inputs, 1)
                sample = map_bench.run_child(command, code_env(code), cwd=tempfile.gettempdir())
                samples[code].append(sample.cpu)
        was, now = (statistics.median(samples[code]) for code in (before, ROOT))
        per_round = [round(a / b, 2) for a, b in zip(samples[before], samples[ROOT], strict=True)]
        print(
            f"time: {label}: before {was:.2f} s CPU, after {now:.2f} s "
            f"(speed x{was / now:.2f}; rounds {per_round})"
        )


if __name__ == "__main__":
    raise SystemExit(main())

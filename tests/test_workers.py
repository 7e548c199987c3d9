"""`segmetro map --workers N` gives the output and rejects of one process."""

from __future__ import annotations

import gzip
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from segmetro.mapping import load_mapping, load_mapping_text
from segmetro.models import Counts
from segmetro.pipeline.workers import can_run_parallel
from segmetro.sources import open_inputs
from segmetro.window import Window
from tests.exports import messages
from tests.support import SAMPLES, SAMPLES_NOW

START = datetime(2026, 11, 20, tzinfo=UTC)


def make_export(folder: Path) -> list[Path]:
    """Four files (gzip and plain) with duplicates and conflicts across files, and bad lines."""
    folder.mkdir()
    batches = [list(messages(300, start=START, seed=s, prefix=f"f{s}")) for s in range(4)]
    batches[1] += batches[0][:40]  # re-delivered: identical duplicates across files
    batches[2] += [dict(m, properties={"n": -1}) for m in batches[0][40:60]]  # conflicts
    batches[3] += batches[2][:10] + batches[3][:5]  # and within a file
    paths = []
    for i, batch in enumerate(batches):
        data = b"".join(orjson.dumps(m) + b"\n" for m in batch) + b"not json\n[1]\n"
        if i % 2:
            path = folder / f"part-{i}.jsonl.gz"
            path.write_bytes(gzip.compress(data, mtime=0))
        else:
            path = folder / f"part-{i}.jsonl"
            path.write_bytes(data)
        paths.append(path)
    return paths


def run_cli(folder: Path, tmp: Path, workers: int) -> tuple[bytes, bytes, bytes]:
    out, rejects = tmp / f"out-{workers}.jsonl", tmp / f"rejects-{workers}.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "segmetro",
            "map",
            "-m",
            str(SAMPLES / "mapping.yaml"),
            str(folder),
            "--now",
            SAMPLES_NOW,
            "-o",
            str(out),
            "--rejects",
            str(rejects),
            "--workers",
            str(workers),
        ],
        capture_output=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr.decode()  # there are rejects
    return out.read_bytes(), rejects.read_bytes(), proc.stderr


@pytest.mark.slow
def test_two_workers_equal_one(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    make_export(folder)
    out1, rejects1, summary1 = run_cli(folder, tmp_path, 1)
    out2, rejects2, summary2 = run_cli(folder, tmp_path, 2)
    assert Counter(out2.splitlines()) == Counter(out1.splitlines())
    assert Counter(rejects2.splitlines()) == Counter(rejects1.splitlines())
    # files are merged in input order, so even the order is the same
    assert out2 == out1
    assert rejects2 == rejects1
    assert summary2.replace(b"rejects-2", b"rejects-1").replace(b"out-2", b"out-1") == summary1
    reasons = Counter(orjson.loads(line)["reason"] for line in rejects1.splitlines())
    assert reasons["conflict"] > 5  # the billable ones of the 20 changed re-deliveries
    assert reasons["invalid_json"] == 4
    assert reasons["not_object"] == 4
    assert b"duplicates 0" not in summary1


@pytest.mark.slow
def test_run_map_with_workers_in_process_api(tmp_path: Path) -> None:
    """The library call: counts, shown rejects and output equal with 1 and 3 workers."""
    from io import BytesIO

    from segmetro.pipeline import run_map

    folder = tmp_path / "export"
    make_export(folder)
    mappings = load_mapping(SAMPLES / "mapping.yaml")
    window = Window.from_options(since=None, until=None, now=SAMPLES_NOW)
    results = []
    for workers in (1, 3):
        out = BytesIO()
        report = run_map(
            mappings,
            open_inputs([str(folder)]),
            window=window,
            out=out,
            rejects_path=tmp_path / f"r{workers}",
            workers=workers,
        )
        results.append((out.getvalue(), report.counts, [r.to_json() for r in report.rejects]))
    assert results[0] == results[1]
    assert isinstance(results[0][1], Counts)
    assert results[0][1].read - results[0][1].unparseable == 4 * 300 + 40 + 20 + 15
    assert results[0][1].unparseable == 8


def test_parallel_only_for_several_rereadable_inputs(tmp_path: Path) -> None:
    paths = make_export(tmp_path / "export")
    mappings = load_mapping(SAMPLES / "mapping.yaml")
    assert can_run_parallel(mappings, open_inputs([str(p) for p in paths]).objects)
    assert not can_run_parallel(mappings, open_inputs([str(paths[0])]).objects)
    assert not can_run_parallel(mappings, open_inputs([str(paths[0]), "-"]).objects)
    # a MappingSet built without its YAML text cannot be rebuilt in a worker
    text_less = load_mapping_text((SAMPLES / "mapping.yaml").read_text())
    text_less.source_text = None
    assert not can_run_parallel(text_less, open_inputs([str(p) for p in paths]).objects)


class _Obj:
    """Just what `choose_workers` reads of an input object."""

    def __init__(self, name: str, size: int | None, kind: str = "file") -> None:
        self.name, self.size, self.kind = name, size, kind


@pytest.mark.parametrize(
    ("objects", "cpus", "expected"),
    [
        ([_Obj(f"p{i}.gz", 26 << 20) for i in range(4)], 2, 2),  # measured: 1.08x one worker
        ([_Obj(f"p{i}.gz", 26 << 20) for i in range(3)], 2, 1),  # one file per worker: slower
        ([_Obj(f"p{i}.gz", 10 << 20) for i in range(4)], 2, 1),  # too little to amortise
        ([_Obj("big.gz", 200 << 20)] + [_Obj(f"s{i}.gz", 1 << 20) for i in range(4)], 2, 1),
        ([_Obj(f"p{i}.jsonl", 26 << 20) for i in range(4)], 2, 1),  # plain counts 1/6
        ([_Obj(f"p{i}.jsonl", 160 << 20) for i in range(4)], 2, 2),
        ([_Obj(f"p{i}.gz", 26 << 20) for i in range(3)] + [_Obj("<stdin>", None, "stdin")], 2, 1),
        ([_Obj(f"p{i}.gz", 26 << 20) for i in range(8)], 8, 4),  # at most half the objects
    ],
)
def test_the_default_workers_follow_the_inputs(
    monkeypatch: pytest.MonkeyPatch, objects: list[_Obj], cpus: int, expected: int
) -> None:
    from segmetro.pipeline import workers

    monkeypatch.setattr(workers, "default_workers", lambda: cpus)
    assert workers.choose_workers(objects) == expected


@pytest.mark.slow
def test_workers_report_progress_inside_each_file(tmp_path: Path) -> None:
    """Workers tell the parent how far they got every CHUNK_RECORDS messages, also through a
    file whose every message is filtered (no event to hand over): the parent's read count
    moves inside files, not once per finished file."""
    from segmetro.pipeline.workers import CHUNK_RECORDS, run_parallel

    per_file = 3 * CHUNK_RECORDS + 7
    paths = []
    for i in range(2):
        batch = list(messages(per_file, start=START, seed=i, prefix=f"p{i}"))
        path = tmp_path / f"quiet-{i}.jsonl"
        path.write_bytes(b"".join(orjson.dumps(dict(m, type="identify")) + b"\n" for m in batch))
        paths.append(path)
    mappings = load_mapping(SAMPLES / "mapping.yaml")  # tracks only: every message filtered
    counts = Counts()
    seen: list[int] = []
    items = list(
        run_parallel(
            mappings,
            open_inputs([str(p) for p in paths]).objects,
            window=Window.from_options(since=None, until=None, now=SAMPLES_NOW),
            workers=2,
            counts=counts,
            on_bytes=lambda _n: seen.append(counts.read),
        )
    )
    assert items == []
    assert (counts.read, counts.filtered) == (2 * per_file, 2 * per_file)
    inside = [n for n in seen if n % per_file]
    assert len(inside) >= 2, seen  # reports between the ends of files
    assert seen == sorted(seen)

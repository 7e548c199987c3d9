"""Local inputs: expansion of specs, and every kind of broken input the reader must survive."""

from __future__ import annotations

import builtins
import gzip
import io
import os
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from segmetro.errors import NoInputs, SourceError
from segmetro.models import Reason, Record, Reject
from segmetro.sources import (
    STDIN_NAME,
    FileInput,
    InputSet,
    StreamInput,
    gunzip,
    iter_records,
    local,
    open_inputs,
    read_object,
)
from segmetro.sources.formats import detect
from segmetro.sources.gunzip import SPOOL_MEMORY

Items = list[Record | Reject]


def ev(i: int, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": "e", "messageId": f"m{i}", **extra}


def line(i: int, **extra: Any) -> bytes:
    return orjson.dumps(ev(i, **extra))


def jsonl(*indexes: int) -> bytes:
    return b"".join(line(i) + b"\n" for i in indexes)


def read_path(path: Path, **kw: Any) -> Items:
    (obj,) = open_inputs([str(path)]).objects
    return list(read_object(obj, **kw))


def split(items: Items) -> tuple[list[tuple[int, Any]], list[tuple[str, str]]]:
    """(line, event) of the records, (reason, source) of the rejects."""
    records = [(i.line, i.event) for i in items if isinstance(i, Record)]
    rejects = [(i.reason, i.source) for i in items if isinstance(i, Reject)]
    return records, rejects


def gzip_in_parts(*parts: bytes) -> tuple[bytes, list[int]]:
    """One gzip member, fully flushed after each part; returns it and each part's end offset."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = b""
    ends = []
    for part in parts:
        out += c.compress(part) + c.flush(zlib.Z_FULL_FLUSH)
        ends.append(len(out))
    return out + c.flush(), ends


def _truncated_gzip() -> bytes:
    data, ends = gzip_in_parts(jsonl(1, 2, 3), jsonl(4, 5))
    return data[: ends[0] + 6]  # the break falls inside line 4


def _corrupt_gzip() -> bytes:
    data, ends = gzip_in_parts(jsonl(1, 2), jsonl(3, 4) * 50)
    broken = bytearray(data)
    for k in range(ends[0] + 2, ends[0] + 40):
        broken[k] ^= 0x5A
    return bytes(broken)


def _gzip_without_trailer() -> bytes:
    return gzip.compress(jsonl(1, 2, 3))[:-8]


def _gzip_cut_before_last_newline() -> bytes:
    return gzip.compress(line(1) + b"\n" + line(2))[:-8]


def _rejects_file() -> bytes:
    with_event = Reject(reason="too_old", detail="old", source="a.jsonl:7", event=ev(7)).to_json()
    without = Reject(
        reason=Reason.INVALID_JSON, detail="not JSON: x", source="a.jsonl:9", raw="{oops"
    ).to_json()
    return orjson.dumps(with_event) + b"\n" + orjson.dumps(without) + b"\n" + line(10) + b"\n"


MB = 1024 * 1024
BIG_LINE = orjson.dumps(ev(2, blob="x" * (10 * MB)))
LONG_LINE = orjson.dumps(ev(2, blob="y" * 5000))
HUGE_LINE = orjson.dumps(ev(2, blob="z" * (3 * MB)))

# (id, file name, content, kwargs, want records [(line, event)], want rejects [(reason, line)])
CASES: list[tuple[str, str, Callable[[], bytes], dict[str, Any], list[Any], list[Any]]] = [
    ("empty file", "a.jsonl", lambda: b"", {}, [], []),
    ("empty gzip", "a.jsonl.gz", lambda: gzip.compress(b""), {}, [], []),
    ("only blank lines", "a.jsonl", lambda: b"\n \n\r\n\t\n", {}, [], []),
    (
        "plain jsonl",
        "a.jsonl",
        lambda: jsonl(1, 2, 3),
        {},
        [(1, ev(1)), (2, ev(2)), (3, ev(3))],
        [],
    ),
    (
        "gzip detected by magic, not name",
        "a.txt",
        lambda: gzip.compress(jsonl(1, 2)),
        {},
        [(1, ev(1)), (2, ev(2))],
        [],
    ),
    (
        "gzip-looking name, plain content",
        "a.jsonl.gz",
        lambda: jsonl(1),
        {},
        [(1, ev(1))],
        [],
    ),
    (
        "truncated gzip keeps events before the break",
        "a.gz",
        _truncated_gzip,
        {},
        [(1, ev(1)), (2, ev(2)), (3, ev(3))],
        [(Reason.CORRUPT_GZIP, 4)],
    ),
    (
        "gzip missing its trailer",
        "a.gz",
        _gzip_without_trailer,
        {},
        [(1, ev(1)), (2, ev(2)), (3, ev(3))],
        [(Reason.CORRUPT_GZIP, 4)],
    ),
    (
        "gzip cut before the last newline keeps the whole last object",
        "a.gz",
        _gzip_cut_before_last_newline,
        {},
        [(1, ev(1)), (2, ev(2))],
        [(Reason.CORRUPT_GZIP, 2)],
    ),
    (
        "corrupt gzip data: no line of the member is used",
        "a.gz",
        _corrupt_gzip,
        {},
        [],
        [(Reason.CORRUPT_GZIP, 1), (Reason.CORRUPT_GZIP, 2), (Reason.CORRUPT_GZIP, 3)],
    ),
    (
        "concatenated gzip members",
        "a.gz",
        lambda: gzip.compress(jsonl(1, 2)) + gzip.compress(jsonl(3)) + gzip.compress(jsonl(4)),
        {},
        [(1, ev(1)), (2, ev(2)), (3, ev(3)), (4, ev(4))],
        [],
    ),
    (
        "gzip members split mid-line",
        "a.gz",
        lambda: gzip.compress(line(1) + b"\n" + line(2)[:5]) + gzip.compress(line(2)[5:] + b"\n"),
        {},
        [(1, ev(1)), (2, ev(2))],
        [],
    ),
    (
        "gzip member followed by zero padding",
        "a.gz",
        lambda: gzip.compress(jsonl(1)) + b"\0" * 100,
        {},
        [(1, ev(1))],
        [],
    ),
    (
        "gzip member followed by garbage",
        "a.gz",
        lambda: gzip.compress(jsonl(1, 2)) + b"garbage\n",
        {},
        [(1, ev(1)), (2, ev(2))],
        [(Reason.CORRUPT_GZIP, 3)],
    ),
    (
        "gzip magic but not gzip: read as plain text, no line lost",
        "a.jsonl",
        lambda: b"\x1f\x8b" + b"this is not gzip\n" + jsonl(2),
        {},
        [(2, ev(2))],
        [(Reason.CORRUPT_GZIP, 1)],
    ),
    (
        "UTF-8 BOM",
        "a.jsonl",
        lambda: b"\xef\xbb\xbf" + jsonl(1, 2),
        {},
        [(1, ev(1)), (2, ev(2))],
        [],
    ),
    (
        "CRLF line ends",
        "a.jsonl",
        lambda: line(1) + b"\r\n" + line(2) + b"\r\n",
        {},
        [(1, ev(1)), (2, ev(2))],
        [],
    ),
    (
        "blank lines are skipped, not rejected",
        "a.jsonl",
        lambda: b"\n" + line(1) + b"\n\n   \n\r\n" + line(2) + b"\n\n",
        {},
        [(2, ev(1)), (6, ev(2))],
        [],
    ),
    (
        "last line without newline",
        "a.jsonl",
        lambda: line(1) + b"\n" + line(2),
        {},
        [(1, ev(1)), (2, ev(2))],
        [],
    ),
    (
        "a 10 MB line is accepted",
        "a.jsonl",
        lambda: line(1) + b"\n" + BIG_LINE + b"\n" + line(3) + b"\n",
        {},
        [(1, ev(1)), (2, orjson.loads(BIG_LINE)), (3, ev(3))],
        [],
    ),
    (
        "a line over the limit is rejected, the next lines are read",
        "a.jsonl",
        lambda: line(1) + b"\n" + LONG_LINE + b"\n" + line(3) + b"\n",
        {"max_line_bytes": 1000},
        [(1, ev(1)), (3, ev(3))],
        [(Reason.LINE_TOO_LONG, 2)],
    ),
    (
        "a line over the limit spanning many reads",
        "a.jsonl.gz",
        lambda: gzip.compress(line(1) + b"\n" + HUGE_LINE + b"\n" + line(3) + b"\n"),
        {"max_line_bytes": 100_000},
        [(1, ev(1)), (3, ev(3))],
        [(Reason.LINE_TOO_LONG, 2)],
    ),
    (
        "a last line over the limit without newline",
        "a.jsonl",
        lambda: line(1) + b"\n" + HUGE_LINE,
        {"max_line_bytes": 100_000},
        [(1, ev(1))],
        [(Reason.LINE_TOO_LONG, 2)],
    ),
    (
        "JSON but not an object",
        "a.jsonl",
        lambda: b'[1, 2]\n"text"\n42\nnull\ntrue\n' + jsonl(6),
        {},
        [(6, ev(6))],
        [(Reason.NOT_OBJECT, n) for n in range(1, 6)],
    ),
    (
        "not JSON",
        "a.jsonl",
        lambda: b"{nope\n" + jsonl(2) + b'{"a": 1}}\n',
        {},
        [(2, ev(2))],
        [(Reason.INVALID_JSON, 1), (Reason.INVALID_JSON, 3)],
    ),
    (
        "invalid UTF-8",
        "a.jsonl",
        lambda: b'{"name": "caf\xe9"}\n' + jsonl(2) + b"\xff\xfe\n",
        {},
        [(2, ev(2))],
        [(Reason.INVALID_UTF8, 1), (Reason.INVALID_UTF8, 3)],
    ),
    (
        "JSON array file",
        "a.json",
        lambda: (
            b'\n[\n  {"messageId": "m1"},\n  {"messageId": "m2"}, 7,\n\n  ' + line(5) + b"\n]\n"
        ),
        {},
        [(3, {"messageId": "m1"}), (4, {"messageId": "m2"}), (6, ev(5))],
        [(Reason.NOT_OBJECT, 4)],
    ),
    (
        "one-line JSON array, gzipped, with a BOM",
        "a.json.gz",
        lambda: gzip.compress(b"\xef\xbb\xbf[" + line(1) + b"," + line(2) + b"]"),
        {},
        [(1, ev(1)), (1, ev(2))],
        [],
    ),
    (
        "JSON array with strings holding brackets, commas and escapes",
        "a.json",
        lambda: b'[{"s": "a],[}{\\"\\\\", "t": "\\\\"},\n{"u": [1, {"v": "]"}]}]',
        {},
        [(1, {"s": 'a],[}{"\\', "t": "\\"}), (2, {"u": [1, {"v": "]"}]})],
        [],
    ),
    (
        "empty JSON array",
        "a.json",
        lambda: b"[ ]\n",
        {},
        [],
        [],
    ),
    (
        "JSON array with a bad element and a missing close",
        "a.json",
        lambda: b"[" + line(1) + b",\n{bad},\n" + line(3) + b"\n",
        {},
        [(1, ev(1)), (3, ev(3))],
        [(Reason.INVALID_JSON, 2), (Reason.INVALID_JSON, 4)],
    ),
    (
        "JSON array element over the limit",
        "a.json",
        lambda: b"[" + line(1) + b",\n" + LONG_LINE + b",\n" + line(3) + b"]",
        {"max_line_bytes": 1000},
        [(1, ev(1)), (3, ev(3))],
        [(Reason.LINE_TOO_LONG, 2)],
    ),
    (
        "a .jsonl file starting with an array is still JSONL",
        "a.jsonl",
        lambda: b"[" + line(1) + b"]\n" + jsonl(2),
        {},
        [(2, ev(2))],
        [(Reason.NOT_OBJECT, 1)],
    ),
    (
        "rejects-file lines are unwrapped",
        "rejects.jsonl",
        _rejects_file,
        {},
        [(1, ev(7)), (3, ev(10))],
        [(Reason.INVALID_JSON, 2)],
    ),
]


@pytest.mark.parametrize(
    ("filename", "content", "kw", "want_records", "want_rejects"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_broken_inputs(
    tmp_path: Path,
    filename: str,
    content: Callable[[], bytes],
    kw: dict[str, Any],
    want_records: list[tuple[int, Any]],
    want_rejects: list[tuple[str, int]],
) -> None:
    path = tmp_path / filename
    path.write_bytes(content())
    records, rejects = split(read_path(path, **kw))
    assert records == want_records
    assert rejects == [(reason, f"{path}:{n}") for reason, n in want_rejects]


def test_records_carry_the_file_name_and_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl(1, 2))
    items = read_path(path)
    assert items == [Record(ev(1), str(path), 1), Record(ev(2), str(path), 2)]
    assert [i.coords for i in items if isinstance(i, Record)] == [f"{path}:1", f"{path}:2"]


def test_reject_raw_and_detail(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    long_garbage = b"{" + b"\xff" * 3000 + b"\r\n"
    path.write_bytes(b"{nope\r\n" + long_garbage + b"x" * 1500 + b"\n")
    first, second, third = read_path(path)
    assert isinstance(first, Reject)
    assert first.raw == "{nope"  # CR dropped
    assert first.detail.startswith("not JSON: ")
    assert isinstance(second, Reject)
    assert second.reason == Reason.INVALID_UTF8
    assert second.raw is not None
    assert len(second.raw) == 1000
    assert second.raw.startswith("{\\xff\\xff")
    assert "truncated to 1000 characters" in second.detail
    assert isinstance(third, Reject)
    assert third.reason == Reason.INVALID_JSON
    assert third.raw == "x" * 1000
    assert "truncated" in third.detail
    # a too-long line's raw holds its start
    path.write_bytes(LONG_LINE + b"\n")
    (too_long,) = read_path(path, max_line_bytes=1000)
    assert isinstance(too_long, Reject)
    assert too_long.raw == LONG_LINE[:1000].decode()
    assert "longer than the limit of 1000 bytes" in too_long.detail


def test_corrupt_gzip_reject_holds_the_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "a.gz"
    path.write_bytes(_truncated_gzip())
    rejects = [i for i in read_path(path) if isinstance(i, Reject)]
    assert len(rejects) == 1
    assert rejects[0].raw is not None
    assert line(4).decode().startswith(rejects[0].raw)
    assert "truncated" in rejects[0].detail


def test_rejects_file_entry_without_event(tmp_path: Path) -> None:
    path = tmp_path / "rejects.jsonl"
    path.write_bytes(_rejects_file())
    reject = next(i for i in read_path(path) if isinstance(i, Reject))
    assert reject.reason == Reason.INVALID_JSON
    assert reject.source == f"{path}:2"
    assert "holds no event" in reject.detail
    assert "a.jsonl:9" in reject.detail
    assert reject.raw == "{oops"


def test_rejects_file_round_trip(tmp_path: Path) -> None:
    """Rejects written by segmetro read back as the events they hold."""
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"messageId": "m1"}\n[2]\n{"messageId": "m3"}\n')
    items = read_path(source)
    rejects_path = tmp_path / "rejects.jsonl"
    as_rejects = [
        i if isinstance(i, Reject) else Reject("too_old", "x", i.coords, event=i.event)
        for i in items
    ]
    rejects_path.write_bytes(b"".join(orjson.dumps(r.to_json()) + b"\n" for r in as_rejects))
    records, rejects = split(read_path(rejects_path))
    assert records == [(1, {"messageId": "m1"}), (3, {"messageId": "m3"})]
    assert rejects == [(Reason.NOT_OBJECT, f"{rejects_path}:2")]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_start_line_resumes_after_a_checkpoint(tmp_path: Path, gz: bool) -> None:
    data = jsonl(1, 2) + b"{bad\n" + jsonl(4, 5, 6)
    path = tmp_path / "a.jsonl"
    path.write_bytes(gzip.compress(data) if gz else data)
    assert split(read_path(path, start_line=2)) == (
        [(4, ev(4)), (5, ev(5)), (6, ev(6))],
        [(Reason.INVALID_JSON, f"{path}:3")],
    )
    assert split(read_path(path, start_line=3))[1] == []
    assert split(read_path(path, start_line=6)) == ([], [])
    assert split(read_path(path, start_line=99)) == ([], [])


def test_start_line_in_a_json_array(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(b"[" + line(1) + b",\n" + line(2) + b",\n" + line(3) + b"]\n")
    assert split(read_path(path, start_line=2)) == ([(3, ev(3))], [])


def test_start_line_with_small_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "READ_CHUNK", 7)
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl(*range(1, 30)))
    records, _ = split(read_path(path, start_line=17))
    assert records == [(n, ev(n)) for n in range(18, 30)]


def test_on_bytes_counts_compressed_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "READ_CHUNK", 100)
    path = tmp_path / "a.gz"
    path.write_bytes(gzip.compress(jsonl(*range(200))))
    seen: list[int] = []
    inputs = open_inputs([str(path)])
    records = list(iter_records(inputs, on_bytes=seen.append))
    assert len(records) == 200
    assert sum(seen) == path.stat().st_size == inputs.total_bytes
    assert len(seen) > 1


def test_read_error_mid_file_is_an_unreadable_reject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl(1, 2, 3))
    monkeypatch.setattr(local, "READ_CHUNK", len(line(1)) + 1)
    real_open = builtins.open

    class Failing(io.BufferedReader):
        calls = 0

        def read(self, n: int | None = -1) -> bytes:
            Failing.calls += 1
            if Failing.calls == 2:
                raise OSError(5, "Input/output error")
            return super().read(n)

    def fake_open(file: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
        if str(file) == str(path):
            return Failing(io.FileIO(path, "r"))
        return real_open(file, mode, *args, **kw)

    monkeypatch.setattr(builtins, "open", fake_open)
    records, rejects = split(read_path(path))
    assert records == [(1, ev(1))]
    assert rejects == [(Reason.UNREADABLE, f"{path}:2")]


# --- expanding specs -------------------------------------------------------------------------


def _names(inputs: InputSet, root: Path) -> list[str]:
    return [os.path.relpath(o.name, root) for o in inputs.objects]


def test_directory_is_walked_recursively_sorted_hidden_skipped(tmp_path: Path) -> None:
    for rel in ["b/2.jsonl", "b/10.jsonl", "a.jsonl.gz", "b/c/x.json", "z.jsonl", ".hidden"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(jsonl(1))
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_bytes(b"x")
    inputs = open_inputs([str(tmp_path)])
    assert _names(inputs, tmp_path) == [
        "a.jsonl.gz",
        "b/10.jsonl",
        "b/2.jsonl",
        "b/c/x.json",
        "z.jsonl",
    ]
    assert all(o.kind == "file" for o in inputs.objects)
    assert inputs.total_bytes == 5 * len(jsonl(1))
    assert inputs.skipped_objects == inputs.skipped_bytes == 0
    assert len(list(iter_records(inputs))) == 5


def test_unreadable_entries_in_a_directory_are_rejects_not_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "1-good.jsonl").write_bytes(jsonl(1, 2))
    (tmp_path / "2-dangling.jsonl").symlink_to(tmp_path / "missing")
    os.mkfifo(tmp_path / "3-fifo.jsonl")
    denied = tmp_path / "4-denied.jsonl"
    denied.write_bytes(jsonl(3))
    (tmp_path / "5-good.jsonl").write_bytes(jsonl(4))
    real_open = builtins.open

    def fake_open(file: Any, *args: Any, **kw: Any) -> Any:
        if str(file) == str(denied):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kw)

    monkeypatch.setattr(builtins, "open", fake_open)
    inputs = open_inputs([str(tmp_path)])
    assert len(inputs.objects) == 5
    assert inputs.total_bytes is not None
    records, rejects = split(list(iter_records(inputs)))
    assert [e["messageId"] for _, e in records] == ["m1", "m2", "m4"]
    assert rejects == [
        (Reason.UNREADABLE, f"{tmp_path}/2-dangling.jsonl:0"),
        (Reason.UNREADABLE, f"{tmp_path}/3-fifo.jsonl:0"),
        (Reason.UNREADABLE, f"{denied}:0"),
    ]
    details = [i.detail for i in iter_records(inputs) if isinstance(i, Reject)]
    assert details == ["dangling symbolic link", "not a regular file", "Permission denied"]


def test_globs(tmp_path: Path) -> None:
    for rel in ["d1/a.jsonl", "d1/b.txt", "d2/deep/c.jsonl", "e.jsonl"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(jsonl(1))
    assert _names(open_inputs([f"{tmp_path}/**/*.jsonl"]), tmp_path) == [
        "d1/a.jsonl",
        "d2/deep/c.jsonl",
        "e.jsonl",
    ]
    assert _names(open_inputs([f"{tmp_path}/d?"]), tmp_path) == [
        "d1/a.jsonl",
        "d1/b.txt",
        "d2/deep/c.jsonl",
    ]


def test_the_same_file_named_twice_is_read_once(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(jsonl(1))
    inputs = open_inputs([str(tmp_path / "a.jsonl"), f"{tmp_path}/*.jsonl"])
    assert len(inputs.objects) == 1


def test_identity_follows_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl(1))
    os.utime(path, ns=(1_000_000_000, 2_000_000_000))
    (obj,) = open_inputs([str(path)]).objects
    assert obj == FileInput(
        name=str(path), size=len(jsonl(1)), identity=f"{len(jsonl(1))}:2000000000"
    )
    assert obj.kind == "file"


def test_is_local_file_names_the_file_it_reads(tmp_path: Path) -> None:
    """What ``--rejects`` is checked against: the same file under any path, and nothing else."""
    (tmp_path / "a.jsonl").write_bytes(jsonl(1))
    (tmp_path / "b.jsonl").write_bytes(jsonl(2))
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "a.jsonl")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "dangling.jsonl").symlink_to(tmp_path / "nowhere")
    (a,) = open_inputs([str(tmp_path / "a.jsonl")]).objects
    assert a.is_local_file(tmp_path / "link.jsonl")
    assert not a.is_local_file(tmp_path / "b.jsonl")
    (dangling,) = open_inputs([str(tmp_path / "sub")]).objects
    assert dangling.identity == "unreadable"
    assert not dangling.is_local_file(tmp_path / "a.jsonl")
    assert not StreamInput().is_local_file(tmp_path / "a.jsonl")


@pytest.mark.parametrize(
    ("head", "name", "expected"),
    [
        (b'[{"a": 1}]', "x.json", "json-array"),
        (b'[{"a": 1}]', "x", "json-array"),
        (b'[{"a": 1}]', "x.JSONL.gz", "jsonl"),
        (b'[{"a": 1}]', "x.ndjson", "jsonl"),
        (b'{"a": 1}', "x.json", "jsonl"),
        (b"", "x.json", "jsonl"),
    ],
)
def test_the_format_is_detected_from_the_first_bytes(head: bytes, name: str, expected: str) -> None:
    assert detect(head, name).name == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nothing-*.jsonl", "matches no file"),
        ("empty-dir", "is a directory without files"),
    ],
)
def test_a_glob_or_directory_that_matches_nothing_is_no_inputs(
    tmp_path: Path, spec: str, message: str
) -> None:
    """A quiet day for a cron job, not an error: ``NoInputs`` (exit 0) names the spec."""
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(NoInputs, match=message) as info:
        open_inputs([str(tmp_path / spec)])
    assert str(tmp_path / spec) in str(info.value)
    assert info.value.exit_code == 0


def test_an_empty_spec_beside_others_is_only_noted(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(b"{}\n")
    inputs = open_inputs([str(tmp_path / "a.jsonl"), str(tmp_path / "none-*.gz")])
    assert [o.name for o in inputs.objects] == [str(tmp_path / "a.jsonl")]
    assert inputs.empty_specs == [f"{str(tmp_path / 'none-*.gz')!r} matches no file"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing.jsonl", "no such file or directory"),
        ("dangling.jsonl", "no such file or directory"),
    ],
)
def test_named_files_that_do_not_exist_are_source_errors(
    tmp_path: Path, spec: str, message: str
) -> None:
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "dangling.jsonl").symlink_to(tmp_path / "nowhere")
    with pytest.raises(SourceError, match=message) as info:
        open_inputs([str(tmp_path / spec)])
    assert str(tmp_path / spec) in str(info.value)


def test_no_specs_is_an_error() -> None:
    with pytest.raises(SourceError):
        open_inputs([])


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeStdin:
        buffer = io.BytesIO(gzip.compress(jsonl(1) + b"oops\n" + jsonl(3)))

    monkeypatch.setattr("sys.stdin", FakeStdin())
    inputs = open_inputs(["-"])
    assert inputs.objects == [StreamInput()]
    (obj,) = inputs.objects
    assert (obj.name, obj.size, obj.identity, obj.kind) == (STDIN_NAME, None, "stdin", "stdin")
    assert inputs.total_bytes is None
    records, rejects = split(list(iter_records(inputs)))
    assert records == [(1, ev(1)), (3, ev(3))]
    assert rejects == [(Reason.INVALID_JSON, f"{STDIN_NAME}:2")]


def test_stdin_json_array(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeStdin:
        buffer = io.BytesIO(b"[" + line(1) + b",\n" + line(2) + b"]")

    monkeypatch.setattr("sys.stdin", FakeStdin())
    records, _ = split(list(iter_records(open_inputs(["-"]))))
    assert records == [(1, ev(1)), (2, ev(2))]


def test_a_named_pipe_given_explicitly_is_streamed(tmp_path: Path) -> None:
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    inputs = open_inputs([str(fifo)])
    assert inputs.total_bytes is None
    assert inputs.objects[0].kind == "stdin"  # a one-shot stream: no checkpoint

    def writer() -> None:
        with open(fifo, "wb") as f:
            f.write(gzip.compress(jsonl(1, 2)))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        records, rejects = split(list(iter_records(inputs)))
    finally:
        thread.join()
    assert records == [(1, ev(1)), (2, ev(2))]
    assert rejects == []


def test_reading_is_streamed_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        for i in range(120_000):
            f.write(line(i, pad="p" * 200) + b"\n")  # ~30 MB decompressed
    (obj,) = open_inputs([str(path)]).objects
    tracemalloc.start()
    try:
        count = sum(1 for item in read_object(obj) if isinstance(item, Record))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 120_000
    assert peak < SPOOL_MEMORY + 6 * MB, peak


def test_an_over_long_line_is_never_held_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "READ_CHUNK", 64 * 1024)
    path = tmp_path / "a.jsonl"
    with path.open("wb") as f:
        f.write(line(1) + b"\n" + b'{"blob": "')
        for _ in range(40):
            f.write(b"q" * MB)
        f.write(b'"}\n' + line(3) + b"\n")
    (obj,) = open_inputs([str(path)]).objects
    tracemalloc.start()
    try:
        items = list(read_object(obj, max_line_bytes=256 * 1024))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert split(items) == ([(1, ev(1)), (3, ev(3))], [(Reason.LINE_TOO_LONG, f"{path}:2")])
    assert peak < 2 * MB, peak


# --- gzip integrity: no line of a member that fails its check is ever used ------------------


def _items(tmp_path: Path, data: bytes, name: str = "a.jsonl.gz", **kw: Any) -> Items:
    path = tmp_path / name
    path.write_bytes(data)
    return read_path(path, **kw)


def _rejects_at(items: Items) -> list[tuple[str, int]]:
    return [(i.reason, int(i.source.rsplit(":", 1)[1])) for i in items if isinstance(i, Reject)]


def _flip(data: bytes, at: int, mask: int = 0x10) -> bytes:
    out = bytearray(data)
    out[at] ^= mask
    return bytes(out)


def test_a_damaged_byte_in_a_stored_member_is_never_billed(tmp_path: Path) -> None:
    """``"units":5`` read back as ``"units":9`` from a level-0 member: rejected, not a record."""
    blob = gzip.compress(jsonl(1) + line(2, units=5) + b"\n" + jsonl(3), compresslevel=0)
    at = blob.index(b'"units":5') + len(b'"units":')
    items = _items(tmp_path, blob[:at] + b"9" + blob[at + 1 :])
    assert not any(isinstance(i, Record) for i in items)
    assert _rejects_at(items) == [(Reason.CORRUPT_GZIP, n) for n in (1, 2, 3)]
    assert [i.event for i in items if isinstance(i, Reject)] == [ev(1), ev(2, units=9), ev(3)]
    for reject in items:
        assert isinstance(reject, Reject)
        assert reject.source.startswith(str(tmp_path / "a.jsonl.gz") + ":")
        assert "gzip member 1 failed its integrity check (CRC32 mismatch)" in reject.detail
        assert "may be damaged and was not used" in reject.detail
        assert reject.raw is None


def test_a_damaged_byte_in_a_deflated_member_is_never_used(tmp_path: Path) -> None:
    lines = [line(i, pad=f"{i * 7919 % 10007:x}" * 9) for i in range(1, 400)]
    blob = gzip.compress(b"\n".join(lines) + b"\n")
    for at in (len(blob) // 3, len(blob) // 2, len(blob) - 20):
        items = _items(tmp_path, _flip(blob, at))
        assert not any(isinstance(i, Record) for i in items), at
        got = _rejects_at(items)
        assert got, at
        assert all(reason == Reason.CORRUPT_GZIP for reason, _ in got)
        assert [n for _, n in got] == sorted(n for _, n in got)
        # the lines decoded before the damage are reported, with their events to inspect
        first = items[0]
        assert isinstance(first, Reject)
        assert first.source.endswith(":1")
        assert first.event == orjson.loads(lines[0])


def test_a_damaged_second_member_keeps_every_event_of_the_first(tmp_path: Path) -> None:
    first = gzip.compress(jsonl(*range(1, 51)))
    second = gzip.compress(jsonl(*range(51, 101)))
    items = _items(tmp_path, first + _flip(second, len(second) // 2))
    records, _ = split(items)
    assert records == [(n, ev(n)) for n in range(1, 51)]
    assert all(reason == Reason.CORRUPT_GZIP for reason, n in _rejects_at(items))
    assert all(n > 50 for _, n in _rejects_at(items))


@pytest.mark.parametrize(
    ("offset", "why"),
    [(-8, "CRC32 mismatch"), (-4, "length mismatch: ")],
    ids=["crc", "isize"],
)
def test_a_damaged_trailer_rejects_the_whole_member_and_reading_goes_on(
    tmp_path: Path, offset: int, why: str
) -> None:
    members = [gzip.compress(jsonl(1, 2)), gzip.compress(jsonl(3, 4)), gzip.compress(jsonl(5))]
    bad = members[1]
    members[1] = _flip(bad, len(bad) + offset, 0x01)
    items = _items(tmp_path, b"".join(members))
    assert split(items)[0] == [(1, ev(1)), (2, ev(2)), (5, ev(5))]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [(r.reason, r.source.rsplit(":", 1)[1], r.event) for r in rejects] == [
        (Reason.CORRUPT_GZIP, "3", ev(3)),
        (Reason.CORRUPT_GZIP, "4", ev(4)),
    ]
    assert all(f"gzip member 2 failed its integrity check ({why}" in r.detail for r in rejects)


def test_a_line_running_into_a_damaged_member_is_rejected(tmp_path: Path) -> None:
    """Members split mid-line: the line whose end lies in the failed member is not used."""
    third = line(3)
    members = [
        gzip.compress(jsonl(1) + third[:10]),
        _flip(gzip.compress(third[10:] + b"\n" + line(4)[:7]), -8, 0x01),
        gzip.compress(line(4)[7:] + b"\n" + jsonl(5)),
    ]
    items = _items(tmp_path, b"".join(members))
    assert split(items)[0] == [(1, ev(1)), (4, ev(5))]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [(r.source.rsplit(":", 1)[1], r.event) for r in rejects] == [("2", ev(3)), ("3", ev(4))]


def test_a_damaged_member_without_a_line_is_still_reported(tmp_path: Path) -> None:
    blank = _flip(gzip.compress(b"\n\n"), -8, 0x01)
    items = _items(tmp_path, gzip.compress(jsonl(1)) + blank + gzip.compress(jsonl(4)))
    assert split(items)[0] == [(1, ev(1)), (4, ev(4))]
    (reject,) = [i for i in items if isinstance(i, Reject)]
    assert reject.reason == Reason.CORRUPT_GZIP
    assert "gzip member 2 failed its integrity check" in reject.detail


def test_damaged_lines_that_are_not_objects_keep_their_raw_text(tmp_path: Path) -> None:
    data = b"not json " + b"x" * 3000 + b"\n[1]\n" + jsonl(3)
    items = _items(tmp_path, _flip(gzip.compress(data), -8, 0x01))
    first, second, third = items
    assert isinstance(first, Reject)
    assert isinstance(second, Reject)
    assert isinstance(third, Reject)
    assert first.raw == "not json " + "x" * 991
    assert "raw truncated to 1000 characters" in first.detail
    assert (second.raw, second.event) == ("[1]", None)
    assert (third.raw, third.event) == (None, ev(3))


def test_resume_past_a_damaged_member(tmp_path: Path) -> None:
    members = [gzip.compress(jsonl(1, 2)), _flip(gzip.compress(jsonl(3, 4)), -8, 0x01)]
    data = b"".join(members) + gzip.compress(jsonl(5, 6))
    assert _rejects_at(_items(tmp_path, data, start_line=3)) == [(Reason.CORRUPT_GZIP, 4)]
    assert split(_items(tmp_path, data, start_line=4)) == ([(5, ev(5)), (6, ev(6))], [])


def test_a_json_array_stops_at_a_damaged_member(tmp_path: Path) -> None:
    members = [
        gzip.compress(b"[" + line(1) + b",\n" + line(2)[:9]),
        _flip(gzip.compress(line(2)[9:] + b",\n" + line(3) + b",\n"), -8, 0x01),
        gzip.compress(line(4) + b"]\n"),
    ]
    items = _items(tmp_path, b"".join(members), name="a.json.gz")
    assert split(items)[0] == [(1, ev(1))]
    assert _rejects_at(items) == [(Reason.CORRUPT_GZIP, n) for n in (1, 2, 3, 4)]
    assert "JSON array is not read past it" in items[-1].detail  # type: ignore[union-attr]


def test_gzip_headers_with_every_optional_field(tmp_path: Path) -> None:
    body = zlib.compressobj(6, zlib.DEFLATED, -15)
    deflated = body.compress(jsonl(1, 2)) + body.flush()
    head = b"\x1f\x8b\x08\x1e" + b"\0" * 6 + b"\x03\0abc" + b"name\0" + b"comment\0"
    head += (zlib.crc32(head) & 0xFFFF).to_bytes(2, "little")
    trailer = zlib.crc32(jsonl(1, 2)).to_bytes(4, "little") + len(jsonl(1, 2)).to_bytes(4, "little")
    member = head + deflated + trailer
    assert gzip.decompress(member) == jsonl(1, 2)
    assert split(_items(tmp_path, member + gzip.compress(jsonl(3)))) == (
        [(1, ev(1)), (2, ev(2)), (3, ev(3))],
        [],
    )
    at = len(head) - 1  # the header CRC
    assert _rejects_at(_items(tmp_path, _flip(member, at, 0x01))) == [(Reason.CORRUPT_GZIP, 1)]


def test_a_truncated_member_keeps_its_complete_lines_only(tmp_path: Path) -> None:
    data = gzip.compress(jsonl(1, 2, 3))
    cut = gzip.compress(jsonl(4, 5) + line(6))
    items = _items(tmp_path, data + cut[:-12])
    records, rejects = split(items)
    assert records[:3] == [(1, ev(1)), (2, ev(2)), (3, ev(3))]
    assert all(event == ev(n) for n, event in records)
    assert rejects == [(Reason.CORRUPT_GZIP, f"{tmp_path / 'a.jsonl.gz'}:{len(records) + 1}")]


@pytest.mark.parametrize("in_memory", [True, False], ids=["memory", "disk"])
def test_a_member_is_spooled_in_flat_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory: bool
) -> None:
    """A ~30 MB member: up to SPOOL_MEMORY in memory, then on disk; peak memory stays flat."""
    limit = 64 * MB if in_memory else 1 * MB
    monkeypatch.setattr(gunzip, "SPOOL_MEMORY", limit)
    files: list[int] = []
    real = gunzip.tempfile.TemporaryFile

    def temporary_file(*args: Any, **kw: Any) -> Any:
        files.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(gunzip.tempfile, "TemporaryFile", temporary_file)
    path = tmp_path / "big.jsonl.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        for i in range(120_000):
            f.write(line(i, pad="p" * 200) + b"\n")
    (obj,) = open_inputs([str(path)]).objects
    tracemalloc.start()
    try:
        count = sum(1 for item in read_object(obj) if isinstance(item, Record))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 120_000
    if in_memory:
        assert files == []
        assert peak > 25 * MB  # the whole member was held to be verified
    else:
        assert files == [1]
        assert peak < 6 * MB, peak


# A file that starts with the gzip magic bytes but does not go on as a gzip header is not gzip:
# it is read as plain text. Its first line holds the magic bytes (never JSON): one corrupt_gzip
# reject at line 1 that says why; every other line comes out as usual (hypothesis found
# b"\x1f\x8b\n{}" losing line 2, and b"\x1f\x8b\n\x00" losing the reject of line 2).
NOT_GZIP = [
    pytest.param(b"\x1f\x8b\n{}", [(2, {})], [], "it ends 5 bytes in", id="cut-header-then-object"),
    pytest.param(b"\x1f\x8b\n\x00", [], [2], "it ends 4 bytes in", id="cut-header-then-garbage"),
    pytest.param(b"\x1f\x8b", [], [], "it ends 2 bytes in", id="only-the-magic"),
    pytest.param(
        b"\x1f\x8b\x08{oops}\n" + jsonl(2) + b"{nope\n" + jsonl(4),
        [(2, ev(2)), (4, ev(4))],
        [3],
        "byte 3 is 0x7b: header flags gzip reserves are set",
        id="reserved-flags",
    ),
    pytest.param(  # flags 0x0a: a header CRC and a file name, which never ends
        b"\x1f\x8b\x08\n" + jsonl(2) + b"{nope\n" + jsonl(4),
        [(2, ev(2)), (4, ev(4))],
        [3],
        f"it ends {len(jsonl(2, 4)) + 10} bytes in, inside what would be a gzip header",
        id="unterminated-name",
    ),
    pytest.param(
        b"\x1f\x8b not gzip\r\n" + line(2) + b"\r\n\r\n" + line(4),
        [(2, ev(2)), (4, ev(4))],
        [],
        "byte 2 is 0x20, not 0x08: no compression method gzip knows",
        id="unknown-method-crlf",
    ),
]


@pytest.mark.parametrize("read_chunk", [1, 3, 1 << 20])
@pytest.mark.parametrize(("data", "want_records", "want_rejects", "why"), NOT_GZIP)
def test_gzip_magic_without_a_gzip_header_loses_no_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    read_chunk: int,
    data: bytes,
    want_records: list[tuple[int, Any]],
    want_rejects: list[int],
    why: str,
) -> None:
    monkeypatch.setattr(local, "READ_CHUNK", read_chunk)
    path = tmp_path / "x.jsonl"
    items = _items(tmp_path, data, name="x.jsonl")
    records, rejects = split(items)
    assert records == want_records
    assert rejects[0] == (Reason.CORRUPT_GZIP, f"{path}:1")
    assert [int(source.rsplit(":", 1)[1]) for _, source in rejects[1:]] == want_rejects
    assert all(reason != Reason.CORRUPT_GZIP for reason, _ in rejects[1:])
    first = items[0]
    assert isinstance(first, Reject)
    assert first.detail.startswith(
        f"the object starts with the gzip magic bytes (1f 8b) but is not gzip ({why}"
    )
    assert "read as plain text: this line holds the magic bytes and was not used" in first.detail
    assert first.raw is not None
    assert first.raw.startswith("\x1f\\x8b")  # 1f is UTF-8 (a control character), 8b is not
    # resuming after line 1 reads the rest the same way, without line 1's reject
    assert split(_items(tmp_path, data, name="x.jsonl", start_line=1)) == (
        want_records,
        rejects[1:],
    )


def test_gzip_magic_then_an_object_line_exact_bytes(tmp_path: Path) -> None:
    """The hypothesis find, pinned: the file is the 5 bytes ``1f 8b 0a 7b 7d``."""
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"\x1f\x8b\n{}")
    (obj,) = open_inputs([str(path)]).objects
    items = list(read_object(obj, max_line_bytes=100))
    assert len(items) == 2
    reject, record = items
    assert isinstance(reject, Reject)
    assert (reject.reason, reject.source, reject.raw) == (
        Reason.CORRUPT_GZIP,
        f"{path}:1",
        "\x1f\\x8b",
    )
    assert reject.event is None
    assert record == Record({}, str(path), 2)


def test_gzip_magic_with_a_first_line_over_the_limit(tmp_path: Path) -> None:
    data = b"\x1f\x8b\x00" + b"x" * 5000 + b"\n" + jsonl(2)
    items = _items(tmp_path, data, name="x.jsonl", max_line_bytes=1000)
    assert split(items)[0] == [(2, ev(2))]
    (reject,) = [i for i in items if isinstance(i, Reject)]
    assert reject.reason == Reason.CORRUPT_GZIP
    assert reject.source.endswith(":1")
    assert "line of 5003 bytes is longer than the limit of 1000 bytes" in reject.detail


def test_a_gzip_name_field_that_never_ends_is_not_gzip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The header is never buffered past MAX_HEADER: beyond it, the stream is plain text."""
    monkeypatch.setattr(gunzip, "MAX_HEADER", 64)
    monkeypatch.setattr(local, "READ_CHUNK", 16)
    data = b"\x1f\x8b\x08\x08" + b"\x01" * 6 + b"n" * 100 + b"\n" + jsonl(2)
    items = _items(tmp_path, data, name="x.jsonl")
    assert split(items) == ([(2, ev(2))], [(Reason.CORRUPT_GZIP, f"{tmp_path / 'x.jsonl'}:1")])
    assert "its header does not end within 64 bytes" in items[0].detail  # type: ignore[union-attr]


def test_a_well_formed_gzip_header_is_gzip_even_when_its_data_is_not(tmp_path: Path) -> None:
    """Magic, deflate and valid flags make a gzip header: data that does not inflate is damage,
    never read as plain text (no record from it)."""
    data = b"\x1f\x8b\x08\x00" + b"\0" * 6 + b"\xff\xff\n" + jsonl(2)
    items = _items(tmp_path, data, name="x.jsonl")
    assert split(items)[0] == []
    assert {reason for reason, _ in _rejects_at(items)} == {Reason.CORRUPT_GZIP}

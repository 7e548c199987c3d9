"""Properties of the reader: it never raises, never drops a well-formed event of a verified
gzip member, and never yields a record from a gzip member that failed verification."""

from __future__ import annotations

import gzip
import tempfile
import zlib
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from segmetro.models import REJECT_MARKER, Record, Reject
from segmetro.sources import gunzip, local, open_inputs, read_object

BOM = b"\xef\xbb\xbf"

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k != REJECT_MARKER), json_values, max_size=5
)
garbage_lines = st.binary(max_size=60).map(lambda b: b.replace(b"\n", b" "))
# a line is an object to keep, or anything else (which may happen to be an object too)
lines = st.one_of(
    json_objects.map(lambda o: ("object", o)),
    json_values.map(lambda v: ("value", v)),
    garbage_lines.map(lambda b: ("garbage", b)),
)
# small reads and small zlib outputs exercise every chunk boundary
io_sizes = st.sampled_from([1, 2, 3, 7, 64, 1 << 20])
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _read(data: bytes, name: str, read_chunk: int, out_chunk: int, **kw: Any) -> list[Any]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(local, "READ_CHUNK", read_chunk),
        mock.patch.object(gunzip, "OUT_CHUNK", out_chunk),
    ):
        path = Path(tmp) / name
        path.write_bytes(data)
        (obj,) = open_inputs([str(path)]).objects
        items = list(read_object(obj, **kw))
        prefix = f"{path}:"
    for item in items:
        assert isinstance(item, Record | Reject)
        if isinstance(item, Reject):
            assert item.source.startswith(prefix)
            assert item.source[len(prefix) :].isdigit()
            assert item.raw is None or len(item.raw) <= 1000
        else:
            assert item.source == str(path)
            assert isinstance(item.event, dict)
    return [(i.line, i.event) if isinstance(i, Record) else i.source[len(prefix) :] for i in items]


@PROPS
@given(data=st.binary(max_size=400), gz=st.booleans(), read_chunk=io_sizes, out_chunk=io_sizes)
def test_random_bytes_never_raise(data: bytes, gz: bool, read_chunk: int, out_chunk: int) -> None:
    blob = gzip.compress(data) if gz else data
    _read(blob, "x.json", read_chunk, out_chunk)
    _read(blob, "x.jsonl", read_chunk, out_chunk, max_line_bytes=16)
    # and the same bytes inside a truncated or corrupted gzip stream
    for cut in {1, len(blob) // 2, len(blob) - 1}:
        _read(gzip.compress(data)[:cut], "x.jsonl", read_chunk, out_chunk)
    _read(b"\x1f\x8b" + data, "x.jsonl", read_chunk, out_chunk)


def _is_blank(raw: bytes) -> bool:
    text = raw.strip()
    return not text or (text.startswith(BOM) and not text[len(BOM) :].strip())


@PROPS
# Plain lines whose first starts with the gzip magic bytes: not gzip, no line lost (found by
# hypothesis).
@example(
    content=[("garbage", b"\x1f\x8b"), ("object", {})],
    crlf=False,
    gz=False,
    final_newline=False,
    read_chunk=1,
    out_chunk=1,
)
@example(
    content=[("garbage", b"\x1f\x8b"), ("garbage", b"\x00")],
    crlf=False,
    gz=False,
    final_newline=False,
    read_chunk=1,
    out_chunk=1,
)
@given(
    content=st.lists(lines, max_size=25),
    crlf=st.booleans(),
    gz=st.booleans(),
    final_newline=st.booleans(),
    read_chunk=io_sizes,
    out_chunk=io_sizes,
)
def test_every_object_line_comes_out_with_its_line_number(
    content: list[tuple[str, Any]],
    crlf: bool,
    gz: bool,
    final_newline: bool,
    read_chunk: int,
    out_chunk: int,
) -> None:
    eol = b"\r\n" if crlf else b"\n"
    raw_lines = [item if kind == "garbage" else orjson.dumps(item) for kind, item in content]
    data = eol.join(raw_lines) + (eol if final_newline and raw_lines else b"")
    out = _read(gzip.compress(data) if gz else data, "x.jsonl", read_chunk, out_chunk)
    records = {entry[0]: entry[1] for entry in out if isinstance(entry, tuple)}
    rejected = [int(entry) for entry in out if isinstance(entry, str)]
    for n, (kind, item) in enumerate(content, start=1):
        if kind == "object":
            assert records.get(n) == item, f"line {n} lost"
    # every line is accounted for exactly once: a record, a reject, or blank
    seen = sorted([*records, *rejected])
    assert seen == sorted(set(seen))
    expected = [n for n, raw in enumerate(raw_lines, start=1) if not _is_blank(raw)]
    assert seen == expected


@PROPS
@given(
    elements=st.lists(
        st.one_of(json_objects.map(lambda o: ("object", o)), json_values.map(lambda v: ("v", v))),
        max_size=15,
    ),
    separators=st.lists(st.sampled_from([b"", b" ", b"\n", b"\r\n", b"\n\n  "]), min_size=40),
    read_chunk=io_sizes,
)
def test_json_array_elements_come_out_with_their_line_numbers(
    elements: list[tuple[str, Any]], separators: list[bytes], read_chunk: int
) -> None:
    parts = [separators[0], b"["]
    where: list[int] = []
    for k, (_, value) in enumerate(elements):
        if k:
            parts.append(b",")
        parts.append(separators[k + 1])
        where.append(b"".join(parts).count(b"\n") + 1)
        parts.append(orjson.dumps(value))
    parts += [separators[-1], b"]\n"]
    out = _read(b"".join(parts), "x.json", read_chunk, 1 << 20)
    expected = [
        (line, value) if isinstance(value, dict) else str(line)
        for line, (_, value) in zip(where, elements, strict=True)
    ]
    assert out == expected


def _decodes_to(blob: bytes, data: bytes) -> bool:
    try:
        return gzip.decompress(blob) == data
    except (OSError, EOFError, zlib.error):
        return False


@PROPS
# A flipped final-block bit of a stored block makes the decoder read the trailer as one more
# block and end with the stream: damage, not a cut (found by hypothesis).
@example(
    members=[
        [
            {"\xab\xea\U0003a6c0\xd44\x84\x05^": ["\x93\u4909", [6751976898321777.0]]},
            {"": None},
            {"": None},
        ]
    ],
    level=0,
    damage=("flip", 0, 0.0, 0),
    read_chunk=1,
    out_chunk=1,
)
# A flipped padding bit of a stored block changes no data: not damage (found by hypothesis).
@example(members=[[{}]], level=0, damage=("flip", 0, 0.0, 3), read_chunk=1, out_chunk=1)
@given(
    members=st.lists(st.lists(json_objects, min_size=1, max_size=6), min_size=1, max_size=5),
    level=st.sampled_from([0, 1, 9]),
    damage=st.one_of(
        st.none(),
        st.tuples(st.just("flip"), st.integers(0, 4), st.floats(0, 1), st.integers(0, 7)),
        st.tuples(st.just("cut"), st.integers(0, 4), st.floats(0, 1), st.just(0)),
    ),
    read_chunk=io_sizes,
    out_chunk=io_sizes,
)
def test_no_record_from_a_member_that_fails_verification(
    members: list[list[dict[str, Any]]],
    level: int,
    damage: tuple[str, int, float, int] | None,
    read_chunk: int,
    out_chunk: int,
) -> None:
    """Every line is a unique object; one member is damaged (a flipped bit) or cut off."""
    n = 0
    blobs: list[bytes] = []
    numbered: list[list[tuple[int, dict[str, Any]]]] = []
    for objects in members:
        rows = []
        for obj in objects:
            n += 1
            rows.append((n, {**obj, "\u0000id": n}))
        numbered.append(rows)
        blobs.append(gzip.compress(b"".join(orjson.dumps(o) + b"\n" for _, o in rows), level))
    bad = None
    if damage is not None:
        kind, which, where, bit = damage
        bad = which % len(blobs)
        blob = blobs[bad]
        at = 10 + int(where * (len(blob) - 11))  # past the header
        if kind == "flip":
            blobs[bad] = blob[:at] + bytes([blob[at] ^ (1 << bit)]) + blob[at + 1 :]
            if _decodes_to(blobs[bad], gzip.decompress(blob)):
                # The bit was one deflate ignores (e.g. a stored block's padding): no damage.
                bad = damage = None
        else:
            blobs[bad] = blob[:at]
            del blobs[bad + 1 :]
    out = _read(b"".join(blobs), "x.jsonl", read_chunk, out_chunk)
    records = [entry for entry in out if isinstance(entry, tuple)]
    original = {line: obj for rows in numbered for line, obj in rows}
    kept = {line: obj for rows in numbered[:bad] for line, obj in rows}
    damaged = [] if bad is None else [obj for _, obj in numbered[bad]]
    for line, event in records:
        if bad is None or line in kept or damage is None or damage[0] == "cut":
            # before any damage (or before a cut): an original line at its own number
            assert original.get(line) == event
        else:
            # after a damaged member that could be skipped: a line of a later member (numbers
            # follow the damaged data's newlines), never one of the damaged member
            assert event in original.values()
            assert event not in damaged
    # never a line of a verified member lost: every member before the damage comes out whole
    got = dict(records)
    for line, obj in (kept if bad is not None else original).items():
        assert got.get(line) == obj, f"line {line} lost"

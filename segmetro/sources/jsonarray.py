"""A JSON array of objects, streamed element by element without loading it whole.

Only the structure is scanned here (strings, escapes, nesting); each element is then parsed by
``orjson`` and reported at the line it starts on, so several elements can share a line (a
checkpoint at line L therefore means "all of line L"). Elements are held to the line limit.
Whatever follows the closing ``]`` is read as JSONL. At a gzip member that failed verification
the structure can no longer be trusted: its lines are rejected and the object is not read
further.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from itertools import chain

import orjson

from segmetro.models import Reason, Record, Reject
from segmetro.sources import jsonl
from segmetro.sources.jsonl import bad_line, classify
from segmetro.sources.lines import RAW_BYTES, too_long
from segmetro.sources.stream import DAMAGE_END, Chunk, Damaged, RetryableReadError, StreamBreak

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


class JsonArray:
    """The JSON array format: content whose first non-blank byte is ``[``, unless the object's
    name says JSONL (``.jsonl`` / ``.ndjson``, optionally ``.gz``)."""

    name = "json-array"

    def detect(self, head: bytes, object_name: str) -> bool:
        return head.startswith(b"[") and not object_name.lower().endswith(jsonl.SUFFIXES)

    def records(
        self, name: str, content: Iterable[Chunk], *, start_line: int, max_line_bytes: int
    ) -> Iterator[Record | Reject]:
        return _parse_array(name, iter(content), start_line, max_line_bytes)


_STRUCTURAL = re.compile(rb'[\[\]{}",\\\n]')
_NL, _QUOTE, _BACKSLASH, _COMMA, _RBRACKET = (ord(c) for c in '\n"\\,]')
_OPENERS = frozenset(b"[{")
_CLOSERS = frozenset(b"]}")


class _Element:
    """The array element being collected (possibly across chunks)."""

    __slots__ = ("head", "length", "line", "parts", "too_long")

    def __init__(self, line: int) -> None:
        self.line = line  # the line of the ``[`` or ``,`` before it
        self.parts: list[bytes] = []
        self.length = 0
        self.too_long = False
        self.head = b""


def _parse_array(
    name: str, chunks: Iterator[Chunk], start_line: int, max_len: int
) -> Iterator[Record | Reject]:
    """Stream one top-level JSON array; each element is reported at the line it starts on."""
    search = _STRUCTURAL.search
    lineno = 1
    depth = 0
    in_str = False
    escaped = False  # the previous chunk ended with a backslash inside a string
    elem: _Element | None = None
    elements = 0
    chunk = b""
    pos = 0
    try:
        for piece in chunks:
            if type(piece) is not bytes:
                assert isinstance(piece, Damaged)
                yield from _array_damage(name, piece, chunks, lineno, elem, start_line, max_len)
                return
            chunk = piece
            pos = 0
            seg = 0  # where the current element's bytes start in this chunk
            if escaped and chunk:
                escaped = False
                if chunk[0] == _NL:
                    lineno += 1
                pos = 1
            closed = False
            while True:
                m = search(chunk, pos)
                if m is None:
                    break
                p = m.start()
                c = chunk[p]
                pos = p + 1
                if c == _NL:
                    lineno += 1
                elif in_str:
                    if c == _QUOTE:
                        in_str = False
                    elif c == _BACKSLASH:
                        if pos < len(chunk):
                            if chunk[pos] == _NL:
                                lineno += 1
                            pos += 1
                        else:
                            escaped = True
                elif c == _QUOTE:
                    in_str = True
                elif c in _OPENERS:
                    depth += 1
                    if depth == 1:
                        elem = _Element(lineno)
                        seg = pos
                elif c in _CLOSERS or (c == _COMMA and depth == 1):
                    if c != _COMMA:
                        depth -= 1
                    if depth <= 1 and elem is not None and (c == _COMMA or depth == 0):
                        item, empty = _finish(name, elem, chunk[seg:p], start_line, max_len)
                        if item is not None:
                            yield item
                        if not empty:
                            elements += 1
                        elif (c == _COMMA or elements) and elem.line > start_line:
                            # ``[1,,2]``, ``[,1]`` or ``[1,]``; an empty ``[]`` is fine
                            yield Reject(
                                reason=Reason.INVALID_JSON,
                                detail="empty element in JSON array",
                                source=f"{name}:{elem.line}",
                            )
                        elem = _Element(lineno) if c == _COMMA else None
                        seg = pos
                    if depth == 0:
                        if c != _RBRACKET:
                            yield Reject(
                                reason=Reason.INVALID_JSON,
                                detail="JSON array closed by '}'",
                                source=f"{name}:{lineno}",
                            )
                        closed = True
                        break
            if closed:
                yield from jsonl.records(
                    name,
                    chain([chunk[pos:]], chunks),
                    lineno=lineno - 1,
                    start_line=start_line,
                    max_line_bytes=max_len,
                )
                return
            if elem is not None:
                _collect(elem, chunk[seg:], max_len)
    except StreamBreak as exc:
        if lineno > start_line:
            yield Reject(reason=exc.reason, detail=exc.detail, source=f"{name}:{lineno}")
        return
    except RetryableReadError as exc:
        exc.line = lineno
        raise
    # end of input inside the array
    if elem is not None:
        item, _ = _finish(name, elem, b"", start_line, max_len)
        if item is not None:
            yield item
    if lineno > start_line:
        yield Reject(
            reason=Reason.INVALID_JSON,
            detail="JSON array not closed at end of input",
            source=f"{name}:{lineno}",
        )


def _array_damage(
    name: str,
    marker: Damaged,
    chunks: Iterator[Chunk],
    lineno: int,
    elem: _Element | None,
    start_line: int,
    max_len: int,
) -> Iterator[Record | Reject]:
    """A JSON array meets a failed gzip member: reject what touches it, then stop the object."""
    started = elem is not None and (elem.too_long or b"".join(elem.parts).strip())
    if started and elem is not None and elem.line > start_line:
        yield Reject(
            reason=Reason.CORRUPT_GZIP,
            detail=f"{marker.detail}: this JSON array element runs into it and was not used",
            source=f"{name}:{elem.line}",
        )
    newlines = 0

    def member() -> Iterator[Chunk]:
        nonlocal newlines
        yield marker
        for chunk in chunks:
            if chunk is DAMAGE_END:
                break
            if type(chunk) is bytes:
                newlines += chunk.count(b"\n")
                yield chunk
        yield DAMAGE_END

    yield from jsonl.records(
        name, member(), lineno=lineno - 1, start_line=start_line, max_line_bytes=max_len
    )
    if lineno + newlines > start_line:
        yield Reject(
            reason=Reason.CORRUPT_GZIP,
            detail=f"{marker.detail}: the JSON array is not read past it",
            source=f"{name}:{lineno + newlines}",
        )


def _collect(elem: _Element, piece: bytes, max_len: int) -> None:
    elem.length += len(piece)
    if elem.too_long:
        return
    if elem.length > max_len:
        whole = b"".join([*elem.parts, piece])
        stripped = whole.lstrip()
        elem.line += whole[: len(whole) - len(stripped)].count(b"\n")
        elem.head = stripped[:RAW_BYTES]
        elem.too_long = True
        elem.parts = []
    else:
        elem.parts.append(piece)


def _finish(
    name: str, elem: _Element, piece: bytes, start_line: int, max_len: int
) -> tuple[Record | Reject | None, bool]:
    """The finished element's record or reject (None when resuming past it), and if it is empty."""
    _collect(elem, piece, max_len)
    if elem.too_long:
        if elem.line <= start_line:
            return None, False
        return too_long(f"{name}:{elem.line}", elem.head, elem.length, max_len), False
    whole = b"".join(elem.parts)
    text = whole.lstrip()
    if not text:
        return None, True
    line = elem.line + whole[: len(whole) - len(text)].count(b"\n")
    if line <= start_line:
        return None, False
    text = text.rstrip()
    try:
        value = _loads(text)
    except _JSONDecodeError as exc:
        return bad_line(name, line, text, str(exc)), False
    return classify(name, line, value), False

"""Turn a stream of stored bytes into ``Record``s and ``Reject``s.

Two layers, both generators over byte chunks:

* ``decompress`` gunzips when the stream starts with the gzip magic (whatever the name says),
  member after member, and raises ``StreamBreak`` where a gzip stream is corrupt or truncated.
* ``parse_stream`` splits lines with bytes methods and parses each with ``orjson``; a stream
  whose first non-blank byte is ``[`` (and whose name does not say JSONL) is read as one JSON
  array, element by element, without loading it whole.

The hot path per line is: ``orjson.loads``, a type check, a dict-key check and ``Record(...)``.
Everything unusual (blank lines, a BOM, bad UTF-8, bad JSON) is sorted out only after
``orjson.loads`` has failed.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Any

import orjson

from segmetro.models import REJECT_MARKER, Reason, Record, Reject

GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
#: decompressed bytes produced per zlib call (bounds memory on gzip bombs)
OUT_CHUNK = 1 << 20
#: a reject's ``raw`` holds at most this many characters of the line
RAW_LIMIT = 1000
#: bytes of a line kept for ``raw``: enough for RAW_LIMIT characters whatever the encoding
_RAW_BYTES = 4 * RAW_LIMIT + 4
#: how much leading whitespace is examined to decide between JSONL and a JSON array
_PROBE_LIMIT = 64 * 1024

_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


class StreamBreak(Exception):
    """The stored bytes end abnormally; the reader yields one reject for it and stops."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class RetryableReadError(Exception):
    """A transient failure reading the bytes (S3): the caller may re-read and resume.

    ``line`` is set by ``parse_stream`` to the line that was being read when it failed.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error
        self.line = 0


def allows_array(name: str) -> bool:
    """Whether an object may be read as one JSON array (not when its name says JSONL)."""
    return not name.lower().endswith(_JSONL_SUFFIXES)


# ---------------------------------------------------------------------------------------------
# decompression


def decompress(raw: Iterable[bytes]) -> Iterator[bytes]:
    """Yield the content of ``raw``: gunzipped when it starts with the gzip magic bytes."""
    it = iter(raw)
    head = b""
    for chunk in it:
        head += chunk
        if len(head) >= 2:
            break
    if head[:2] != GZIP_MAGIC:
        if head:
            yield head
        yield from it
        return
    yield from _gunzip(head, it)


def _gunzip(pending: bytes, raw: Iterator[bytes]) -> Iterator[bytes]:
    d: Any = zlib.decompressobj(31)
    member = 1
    while True:
        if not pending:
            pending = next(raw, b"")
            if not pending:
                if d is not None:
                    raise StreamBreak(
                        Reason.CORRUPT_GZIP,
                        f"gzip data truncated: member {member} ends before its end marker",
                    )
                return
        if d is None:
            # between members: zero padding is allowed, anything else must be another member
            pending = pending.lstrip(b"\0")
            if not pending:
                continue
            if len(pending) < 2:
                more = next(raw, b"")
                if more:
                    pending += more
                    continue
            if pending[:2] != GZIP_MAGIC:
                raise StreamBreak(
                    Reason.CORRUPT_GZIP, f"data after gzip member {member} is not gzip"
                )
            d = zlib.decompressobj(31)
            member += 1
        backup = d.copy()
        produced = 0
        try:
            for out in _inflate(d, pending):
                produced += len(out)
                yield out
        except zlib.error as exc:
            # zlib drops the output of a call that fails: redo it in small steps from the
            # state before the call, to keep everything before the break
            yield from _salvage(backup, pending, produced)
            raise StreamBreak(
                Reason.CORRUPT_GZIP, f"corrupt gzip data in member {member}: {exc}"
            ) from None
        if d.eof:
            pending = d.unused_data
            d = None
        else:
            pending = d.unconsumed_tail


def _inflate(d: Any, data: bytes) -> Iterator[bytes]:
    """Decompress ``data`` in outputs of at most OUT_CHUNK bytes (raises ``zlib.error``)."""
    out = d.decompress(data, OUT_CHUNK)
    while len(out) == OUT_CHUNK and not d.eof:
        yield out
        out = d.decompress(d.unconsumed_tail, OUT_CHUNK)
    if out:
        yield out


def _salvage(d: Any, data: bytes, skip: int) -> Iterator[bytes]:
    """Output of ``data`` fed 64 bytes at a time until it fails, less the ``skip`` first bytes."""
    for i in range(0, len(data), 64):
        try:
            for out in _inflate(d, data[i : i + 64]):
                if skip >= len(out):
                    skip -= len(out)
                    continue
                yield out[skip:]
                skip = 0
        except zlib.error:
            return
        if d.eof:
            return


# ---------------------------------------------------------------------------------------------
# parsing


def _raw_text(line: bytes) -> tuple[str, bool]:
    """The line for a reject's ``raw``: decoded with backslash escapes, at most RAW_LIMIT chars."""
    if line.endswith(b"\r"):
        line = line[:-1]
    text = line[:_RAW_BYTES].decode("utf-8", "backslashreplace")
    if len(line) > _RAW_BYTES or len(text) > RAW_LIMIT:
        return text[:RAW_LIMIT], True
    return text, False


def _line_reject(reason: str, detail: str, coords: str, line: bytes) -> Reject:
    raw, truncated = _raw_text(line)
    if truncated:
        detail += f" (raw truncated to {RAW_LIMIT} characters)"
    return Reject(reason=reason, detail=detail, source=coords, raw=raw)


def _classify(name: str, lineno: int, value: Any) -> Record | Reject:
    """A parsed JSON value: a Record, an unwrapped rejects-file entry, or a not_object reject."""
    if type(value) is dict:
        if REJECT_MARKER in value:
            return _unwrap(name, lineno, value)
        return Record(value, name, lineno)
    return Reject(
        reason=Reason.NOT_OBJECT,
        detail=f"JSON {_json_type(value)}, not an object",
        source=f"{name}:{lineno}",
        raw=orjson.dumps(value).decode()[:RAW_LIMIT],
    )


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def _unwrap(name: str, lineno: int, entry: dict[str, Any]) -> Record | Reject:
    """A line of a segmetro rejects file: the original event, or why there is none."""
    event = entry.get("event")
    if type(event) is dict:
        return Record(event, name, lineno)
    reason = entry.get("reason")
    if not isinstance(reason, str) or not reason:
        reason = Reason.INVALID_JSON
    raw = entry.get("raw")
    detail = (
        f"rejects-file entry holds no event (original source {entry.get('source')!s}: "
        f"{entry.get('detail')!s})"
    )
    return Reject(
        reason=reason,
        detail=detail,
        source=f"{name}:{lineno}",
        raw=raw if isinstance(raw, str) else None,
    )


def _bad_line(name: str, lineno: int, line: bytes, error: str) -> Record | Reject | None:
    """Sort out a line ``orjson`` refused: blank (None), BOM-prefixed, not UTF-8, not JSON."""
    text = line.strip()
    if not text:
        return None
    if text.startswith(BOM):
        text = text[len(BOM) :].lstrip()
        if not text:
            return None
        try:
            value = _loads(text)
        except _JSONDecodeError as exc:
            error = str(exc)
        else:
            return _classify(name, lineno, value)
    coords = f"{name}:{lineno}"
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _line_reject(
            Reason.INVALID_UTF8,
            f"invalid UTF-8 at byte {exc.start + 1} of the line: {exc.reason}",
            coords,
            line,
        )
    return _line_reject(Reason.INVALID_JSON, f"not JSON: {error}", coords, line)


def _too_long(name: str, lineno: int, head: bytes, length: int, limit: int) -> Reject:
    return _line_reject(
        Reason.LINE_TOO_LONG,
        f"line of {length} bytes is longer than the limit of {limit} bytes",
        f"{name}:{lineno}",
        head,
    )


def parse_stream(
    name: str,
    chunks: Iterable[bytes],
    *,
    start_line: int = 0,
    max_line_bytes: int,
    allow_array: bool = True,
) -> Iterator[Record | Reject]:
    """Parse decompressed chunks into records; never raises for bad content.

    ``StreamBreak`` from ``chunks`` becomes one reject at the line being read when it happened.
    ``RetryableReadError`` is re-raised with ``line`` set to that line.
    """
    it = iter(chunks)
    head: list[bytes] = []
    if allow_array:
        probe = b""
        try:
            for chunk in it:
                head.append(chunk)
                probe += chunk
                if len(probe) < len(BOM) and BOM.startswith(probe):
                    continue  # perhaps the start of a BOM
                if probe.startswith(BOM):
                    if probe[len(BOM) :].lstrip():
                        break
                elif probe.lstrip():
                    break
                if len(probe) > _PROBE_LIMIT:
                    break
        except StreamBreak as exc:
            line = probe.count(b"\n") + 1
            if line > start_line:
                yield Reject(reason=exc.reason, detail=exc.detail, source=f"{name}:{line}")
            return
        except RetryableReadError as exc:
            exc.line = probe.count(b"\n") + 1
            raise
        text = probe[len(BOM) :] if probe.startswith(BOM) else probe
        if text.lstrip().startswith(b"["):
            yield from _parse_array(name, chain(head, it), start_line, max_line_bytes)
            return
    yield from _parse_lines(name, chain(head, it), 0, start_line, max_line_bytes)


def _parse_lines(
    name: str,
    chunks: Iterator[bytes],
    lineno: int,
    start_line: int,
    max_len: int,
) -> Iterator[Record | Reject]:
    """JSONL: ``lineno`` is the number of lines before the first byte of ``chunks``."""
    loads = _loads
    decode_error = _JSONDecodeError
    marker = REJECT_MARKER
    parts: list[bytes] = []  # pieces of the current, unfinished line
    plen = 0
    skipping = False  # inside a line longer than max_len: drop bytes up to the next newline
    skip_head = b""
    skip_len = 0
    try:
        for chunk in chunks:
            # split the whole chunk (no copy of its rest), then mend the first line
            lines = chunk.split(b"\n")
            longest = len(chunk)  # no line of ``lines`` is longer
            if skipping:
                if len(lines) == 1:
                    skip_len += len(chunk)
                    continue
                lineno += 1
                skipping = False
                if lineno > start_line:
                    yield _too_long(name, lineno, skip_head, skip_len + len(lines[0]), max_len)
                skip_head = b""
                del lines[0]
            elif parts:
                if len(lines) == 1:
                    plen += len(chunk)
                    if plen > max_len:
                        skip_head = b"".join(parts)[:_RAW_BYTES]
                        skip_len = plen
                        skipping = True
                        parts = []
                        plen = 0
                    else:
                        parts.append(chunk)
                    continue
                parts.append(lines[0])
                lines[0] = b"".join(parts)
                longest += plen
                parts = []
                plen = 0
            tail = lines.pop()
            n = len(lines)
            if lineno + n <= start_line:
                lineno += n
            else:
                if lineno < start_line:
                    del lines[: start_line - lineno]
                    lineno = start_line
                check = longest > max_len
                for line in lines:
                    lineno += 1
                    if check and len(line) > max_len:
                        yield _too_long(name, lineno, line[:_RAW_BYTES], len(line), max_len)
                        continue
                    try:
                        value = loads(line)
                    except decode_error as exc:
                        item = _bad_line(name, lineno, line, str(exc))
                        if item is not None:
                            yield item
                        continue
                    if type(value) is dict:
                        if marker in value:
                            yield _unwrap(name, lineno, value)
                        else:
                            yield Record(value, name, lineno)
                    else:
                        yield _classify(name, lineno, value)
            if tail:
                if len(tail) > max_len:
                    skipping = True
                    skip_head = tail[:_RAW_BYTES]
                    skip_len = len(tail)
                else:
                    parts = [tail]
                    plen = len(tail)
    except StreamBreak as exc:
        if lineno + 1 > start_line:
            partial = b"".join(parts) if parts else skip_head
            raw = _raw_text(partial)[0] if partial else None
            if parts:
                # the data stopped before this line's newline; a whole JSON object is kept (no
                # proper prefix of a JSON object is itself an object), anything else is the
                # corrupt_gzip reject's ``raw``
                try:
                    value = _loads(partial)
                except _JSONDecodeError:
                    value = None
                if type(value) is dict:
                    yield _classify(name, lineno + 1, value)
                    raw = None
            yield Reject(
                reason=exc.reason, detail=exc.detail, source=f"{name}:{lineno + 1}", raw=raw
            )
        return
    except RetryableReadError as exc:
        exc.line = lineno + 1
        raise
    # end of input: the last line may have no newline
    if skipping:
        lineno += 1
        if lineno > start_line:
            yield _too_long(name, lineno, skip_head, skip_len, max_len)
    elif parts:
        lineno += 1
        if lineno > start_line:
            item = _one_line(name, lineno, b"".join(parts), max_len)
            if item is not None:
                yield item


def _one_line(name: str, lineno: int, line: bytes, max_len: int) -> Record | Reject | None:
    if len(line) > max_len:
        return _too_long(name, lineno, line[:_RAW_BYTES], len(line), max_len)
    try:
        value = _loads(line)
    except _JSONDecodeError as exc:
        return _bad_line(name, lineno, line, str(exc))
    return _classify(name, lineno, value)


# ---------------------------------------------------------------------------------------------
# JSON array files

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
    name: str, chunks: Iterator[bytes], start_line: int, max_len: int
) -> Iterator[Record | Reject]:
    """Stream one top-level JSON array; each element is reported at the line it starts on.

    Only the structure is scanned here (strings, escapes, nesting); each element is then parsed
    by ``orjson``. Whatever follows the closing ``]`` is read as JSONL.
    """
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
        for chunk in chunks:
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
                yield from _parse_lines(
                    name, chain([chunk[pos:]], chunks), lineno - 1, start_line, max_len
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


def _collect(elem: _Element, piece: bytes, max_len: int) -> None:
    elem.length += len(piece)
    if elem.too_long:
        return
    if elem.length > max_len:
        whole = b"".join([*elem.parts, piece])
        stripped = whole.lstrip()
        elem.line += whole[: len(whole) - len(stripped)].count(b"\n")
        elem.head = stripped[:_RAW_BYTES]
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
        return _too_long(name, elem.line, elem.head, elem.length, max_len), False
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
        return _bad_line(name, line, text, str(exc)), False
    return _classify(name, line, value), False

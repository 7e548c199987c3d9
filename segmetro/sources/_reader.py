"""Turn a stream of stored bytes into ``Record``s and ``Reject``s.

Two layers, both generators over byte chunks:

* ``decompress`` gunzips when the stream starts with a gzip header (whatever the name says),
  member after member. Each member is spooled (memory, then a temporary file) and released only
  after its CRC32 and length are checked; a member that fails is released between ``Damaged``
  and ``DAMAGE_END`` markers, and the parser turns every line touching it into a
  ``corrupt_gzip`` reject, never a record. ``StreamBreak`` is raised where the stream cannot go
  on (truncated, or undecodable so that the next member cannot be found). A stream that starts
  with the gzip magic bytes but does not go on as a gzip header is not gzip: it is passed on as
  plain content after a ``NotGzip`` marker, and the parser makes its first line (which holds
  the magic bytes, so it is never JSON) a ``corrupt_gzip`` reject that says so; every other
  line is read as usual.
* ``parse_stream`` splits lines with bytes methods and parses each with ``orjson``; a stream
  whose first non-blank byte is ``[`` (and whose name does not say JSONL) is read as one JSON
  array, element by element, without loading it whole.

The hot path per line is: ``orjson.loads``, a type check, a dict-key check and a tuple
``(event, name, line)`` (``lazy=True``, for ``map``'s loop, which builds a ``Record`` only for an
event it rejects) or a ``Record``. Everything unusual (blank lines, a BOM, bad UTF-8, bad JSON)
is sorted out only after ``orjson.loads`` has failed.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
import zlib
from collections.abc import Generator, Iterable, Iterator
from itertools import chain
from typing import Any

import orjson

from segmetro.models import REJECT_MARKER, Reason, Record, Reject

GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
#: decompressed bytes produced per zlib call (bounds memory on gzip bombs)
OUT_CHUNK = 1 << 20
#: decompressed bytes of one gzip member held in memory while it is verified; beyond, on disk
SPOOL_MEMORY = 16 << 20
#: bytes read back per call from a gzip member spooled to disk
SPOOL_READ = 1 << 20
#: a reject's ``raw`` holds at most this many characters of the line
RAW_LIMIT = 1000
#: bytes of a line kept for ``raw``: enough for RAW_LIMIT characters whatever the encoding
_RAW_BYTES = 4 * RAW_LIMIT + 4
#: how much leading whitespace is examined to decide between JSONL and a JSON array
_PROBE_LIMIT = 64 * 1024
#: a gzip header (with its optional extra field, name and comment) ends within this many bytes;
#: one that does not is not a gzip header (and is never buffered whole to find out)
MAX_HEADER = 1 << 20

_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

#: ``Record(*raw)`` for a plain JSONL line read with ``lazy=True``: ``(event, name, line)``
RawRecord = tuple[dict[str, Any], str, int]
#: what a lazy read yields
Item = Record | Reject | RawRecord


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


class Damaged:
    """A marker in a decompressed stream: the chunks that follow, up to ``DAMAGE_END``, are the
    data of a gzip member that failed its integrity check. No line touching them may be used."""

    __slots__ = ("detail",)

    def __init__(self, detail: str) -> None:
        self.detail = detail


#: closes the data of a ``Damaged`` member
DAMAGE_END = Damaged("")


class NotGzip:
    """The first item of a decompressed stream whose bytes start with the gzip magic but do not
    go on as a gzip header: the stream is plain content, which follows as it is. Its first line
    holds the magic bytes (never JSON): ``parse_stream`` makes its reject a ``corrupt_gzip`` one
    with this ``detail``."""

    __slots__ = ("detail",)

    def __init__(self, detail: str) -> None:
        self.detail = detail


Chunk = bytes | Damaged | NotGzip


def decompress(raw: Iterable[bytes]) -> Iterator[Chunk]:
    """Yield the content of ``raw``: gunzipped when it starts with a gzip header.

    Plain content is passed through as it comes. Content that starts with the gzip magic bytes
    but does not go on as a gzip header (an unknown compression method, reserved flags, a stream
    that ends or runs past MAX_HEADER before the header can end) is not gzip: a ``NotGzip``
    marker saying why, then the content as it is. (The magic bytes alone are too weak a sign to
    give up the rest of the stream on; a header that is well formed but fails its own CRC is
    gzip, damaged.) Gzip content is verified member by member:
    each member is decompressed into a spool and yielded only once its CRC32 and length check
    out. A member that fails is yielded between a ``Damaged`` marker and ``DAMAGE_END``; a
    stream cut short yields what was decoded before the cut (it cannot be verified, but a cut
    does not damage what precedes it), then raises ``StreamBreak``.
    """
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
    # the bytes read to find the end of the header are replayed if it is no gzip header
    seen = [head]

    def recorded() -> Iterator[bytes]:
        for chunk in it:
            seen.append(chunk)
            yield chunk

    try:
        pending = _gzip_header(head, recorded(), 1)
    except _NoHeader as exc:
        yield NotGzip(
            f"the object starts with the gzip magic bytes (1f 8b) but is not gzip ({exc.why}); "
            "it was read as plain text"
        )
        yield from seen
        del seen[:]
        yield from it
        return
    del seen[:]
    yield from _gunzip(pending, it)


def _need(pending: bytes, raw: Iterator[bytes], n: int) -> bytes:
    """``pending`` extended from ``raw`` to at least ``n`` bytes (fewer at the end of input)."""
    while len(pending) < n:
        more = next(raw, b"")
        if not more:
            break
        pending += more
    return pending


def _truncated(member: int, where: str) -> StreamBreak:
    return StreamBreak(Reason.CORRUPT_GZIP, f"gzip data truncated: member {member} ends {where}")


class _NoHeader(StreamBreak):
    """What starts a member is not a gzip header: ``why`` says how. At the start of a stream this
    means the stream is not gzip; after a member, the stream cannot be followed."""

    def __init__(self, detail: str, why: str) -> None:
        super().__init__(Reason.CORRUPT_GZIP, detail)
        self.why = why


def _header_cut(member: int, size: int) -> _NoHeader:
    return _NoHeader(
        f"gzip data truncated: member {member} ends inside its header",
        f"it ends {size} bytes in, inside what would be a gzip header",
    )


def _gzip_header(pending: bytes, raw: Iterator[bytes], member: int) -> bytes:
    """Skip the gzip header at the start of ``pending``; returns what follows it.

    Raises ``_NoHeader`` when the bytes are no gzip header (offsets in ``why`` count from the
    member's first byte), ``StreamBreak`` when a well-formed header fails its CRC.
    """
    pending = _need(pending, raw, 10)
    if len(pending) < 10:
        raise _header_cut(member, len(pending))
    if pending[2] != 8:
        why = f"byte 2 is {pending[2]:#04x}, not 0x08: no compression method gzip knows"
        raise _NoHeader(f"gzip member {member}: unknown compression method ({why})", why)
    flags = pending[3]
    if flags & 0xE0:
        why = f"byte 3 is {flags:#04x}: header flags gzip reserves are set"
        raise _NoHeader(f"gzip member {member}: unknown header flags set ({why})", why)
    pos = 10
    if flags & 4:  # FEXTRA
        pending = _need(pending, raw, pos + 2)
        if len(pending) < pos + 2:
            raise _header_cut(member, len(pending))
        pos += 2 + int.from_bytes(pending[pos : pos + 2], "little")
        pending = _need(pending, raw, pos)
        if len(pending) < pos:
            raise _header_cut(member, len(pending))
    for bit in (8, 16):  # FNAME, FCOMMENT: zero-terminated
        if flags & bit:
            while (end := pending.find(b"\0", pos, MAX_HEADER)) < 0:
                if len(pending) >= MAX_HEADER:
                    why = f"its header does not end within {MAX_HEADER} bytes"
                    raise _NoHeader(f"gzip member {member}: {why}", why)
                more = next(raw, b"")
                if not more:
                    raise _header_cut(member, len(pending))
                pending += more
            pos = end + 1
    if flags & 2:  # FHCRC
        pending = _need(pending, raw, pos + 2)
        if len(pending) < pos + 2:
            raise _header_cut(member, len(pending))
        if zlib.crc32(pending[:pos]) & 0xFFFF != int.from_bytes(pending[pos : pos + 2], "little"):
            raise StreamBreak(Reason.CORRUPT_GZIP, f"gzip member {member}: header CRC mismatch")
        pos += 2
    return pending[pos:]


class _Spool:
    """Decompressed bytes of one member: in memory up to SPOOL_MEMORY, then in a temporary file.

    In memory the chunks are kept as they are (no copy); on disk they are written straight from
    zlib's output and read back in SPOOL_READ blocks, so memory stays flat whatever the size.
    """

    __slots__ = ("file", "parts", "size")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.file: Any = None

    def write(self, data: bytes) -> None:
        if self.file is not None:
            _write_all(self.file, data)
            return
        self.parts.append(data)
        self.size += len(data)
        if self.size > SPOOL_MEMORY:
            try:
                self.file = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115 - see close()
                for part in self.parts:
                    _write_all(self.file, part)
            except OSError as exc:
                raise StreamBreak(
                    Reason.UNREADABLE,
                    "cannot spool a gzip member to a temporary file to verify it before use "
                    f"(set TMPDIR to a roomier place): {exc.strerror or exc}",
                ) from None
            self.parts = []

    def chunks(self) -> Iterator[bytes]:
        """The bytes written, in order, each time in blocks of at most SPOOL_READ bytes."""
        if self.file is None:
            parts = self.parts
            self.parts = []
            parts.reverse()
            while parts:
                yield parts.pop()
            return
        f = self.file
        f.seek(0)
        read = f.read
        size = SPOOL_READ
        while chunk := read(size):
            yield chunk

    def close(self) -> None:
        self.parts = []
        if self.file is not None:
            self.file.close()
            self.file = None


def _write_all(f: Any, data: bytes) -> None:
    try:
        n = f.write(data)
        if n != len(data):  # a short write (rare on regular files): finish it
            view = memoryview(data)[n:]
            while view:
                view = view[f.write(view) :]
    except OSError as exc:
        raise StreamBreak(
            Reason.UNREADABLE,
            "cannot spool a gzip member to a temporary file to verify it before use "
            f"(set TMPDIR to a roomier place): {exc.strerror or exc}",
        ) from None


def _gunzip(pending: bytes, raw: Iterator[bytes]) -> Iterator[Chunk]:
    """Members one after the other; ``pending`` follows the first member's header."""
    member = 1
    while True:
        spool = _Spool()
        try:
            pending = yield from _member(pending, raw, member, spool)
        finally:
            spool.close()
        # between members: zero padding is allowed, anything else must be another member
        pending = pending.lstrip(b"\0")
        while not pending:
            pending = next(raw, b"")
            if not pending:
                return
            pending = pending.lstrip(b"\0")
        pending = _need(pending, raw, 2)
        if pending[:2] != GZIP_MAGIC:
            raise StreamBreak(Reason.CORRUPT_GZIP, f"data after gzip member {member} is not gzip")
        member += 1
        pending = _gzip_header(pending, raw, member)


def _looks_complete(last8: bytes, size: int) -> bool:
    """Whether a stream that ended inside a member's deflate data ends with its trailer.

    A cut-off stream ends with arbitrary deflate bytes. A complete member whose data is damaged
    can make the decoder read on through its own trailer without an error: then the last four
    bytes are the member's length, close to what was decoded (the damage changes it a little).
    A cut that happens to end so is taken as damage (its lines are rejected, not used).
    """
    if len(last8) < 8:
        return False
    stored = int.from_bytes(last8[4:], "little")
    return abs(stored - (size & 0xFFFFFFFF)) <= (1 << 20) + size // 1024


def _member(
    pending: bytes, raw: Iterator[bytes], member: int, spool: _Spool
) -> Generator[Chunk, None, bytes]:
    """Inflate one member (header already skipped) into ``spool``, verify it, yield its data.

    Returns the bytes that follow the member.
    """
    d: Any = zlib.decompressobj(-zlib.MAX_WBITS)
    crc32 = zlib.crc32
    write = spool.write
    crc = 0
    size = 0
    last8 = pending[-8:]  # the last 8 bytes of deflate data fed
    while True:
        if not pending:
            pending = next(raw, b"")
            if not pending:
                if _looks_complete(last8, size):
                    # not cut off: damage made the decoder run on through the member's own
                    # trailer to the end of the stream
                    yield Damaged(
                        f"gzip member {member} failed its integrity check (its data runs on "
                        "through what looks like its own trailer: damaged, not cut off)"
                    )
                    yield from spool.chunks()
                    yield DAMAGE_END
                    raise StreamBreak(
                        Reason.CORRUPT_GZIP,
                        f"corrupt gzip data in member {member}: the stream ends inside it",
                    )
                # cut off (e.g. an upload in progress): what came before the cut is kept
                yield from spool.chunks()
                raise _truncated(member, "before its end marker")
            last8 = pending[-8:] if len(pending) >= 8 else (last8 + pending)[-8:]
        backup = d.copy()
        produced = 0
        try:
            for out in _inflate(d, pending):
                crc = crc32(out, crc)
                size += len(out)
                produced += len(out)
                write(out)
        except zlib.error as exc:
            # zlib drops the output of a call that fails: redo it in small steps from the
            # state before the call, so that every damaged line can be reported
            for out in _salvage(backup, pending, produced):
                write(out)
            yield Damaged(
                f"gzip member {member} failed its integrity check (invalid deflate data: {exc})"
            )
            yield from spool.chunks()
            yield DAMAGE_END
            raise StreamBreak(
                Reason.CORRUPT_GZIP,
                f"corrupt gzip data in member {member}: {exc}; the rest of the object "
                "cannot be read",
            ) from None
        if d.eof:
            pending = d.unused_data
            break
        pending = d.unconsumed_tail
    pending = _need(pending, raw, 8)
    trailer = pending[:8]
    expected = crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little")
    if trailer == expected:
        yield from spool.chunks()
        return pending[8:]
    if expected.startswith(trailer):
        # cut off inside the trailer, and what is there matches
        yield from spool.chunks()
        raise _truncated(member, "inside its trailer")
    if trailer[:4] != expected[: len(trailer[:4])]:
        why = "CRC32 mismatch"
    else:
        stored = int.from_bytes(trailer[4:], "little")
        why = f"length mismatch: {size} bytes decoded, the trailer says {stored}"
    yield Damaged(f"gzip member {member} failed its integrity check ({why})")
    yield from spool.chunks()
    yield DAMAGE_END
    if len(trailer) < 8:
        raise _truncated(member, "inside its trailer")
    return pending[8:]


def _inflate(d: Any, data: bytes) -> Iterator[bytes]:
    """Decompress ``data`` in outputs of at most OUT_CHUNK bytes (raises ``zlib.error``)."""
    out = d.decompress(data, OUT_CHUNK)
    while len(out) == OUT_CHUNK and not d.eof:
        yield out
        out = d.decompress(d.unconsumed_tail, OUT_CHUNK)
    if out:
        yield out


def _salvage(d: Any, data: bytes, skip: int) -> Iterator[bytes]:
    """Output of the longest prefix of ``data`` that inflates without error, less ``skip`` bytes.

    The prefix is found by bisection on copies of ``d`` (an error is seen at the bad byte, so
    every longer prefix fails too).
    """
    good, bad = 0, len(data)
    while bad - good > 1:
        mid = (good + bad) // 2
        trial = d.copy()
        try:
            for _ in _inflate(trial, data[:mid]):
                pass
        except zlib.error:
            bad = mid
        else:
            good = mid
    try:
        for out in _inflate(d, data[:good]):
            if skip >= len(out):
                skip -= len(out)
                continue
            yield out[skip:]
            skip = 0
    except zlib.error:  # pragma: no cover - the prefix inflated above
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


def _damaged_line(
    name: str, lineno: int, line: bytes, marker: Damaged, length: int = -1
) -> Reject | None:
    """A line holding bytes of a member that failed verification: never a Record.

    ``event`` is the line's object when it parses as one (to inspect, or to replay on purpose),
    ``raw`` otherwise; blank lines give None. ``length`` > len(line): only the line's head is
    known (it was longer than the limit).
    """
    text = line.strip()
    if text.startswith(BOM):
        text = text[len(BOM) :].lstrip()
    if not text:
        return None
    detail = f"{marker.detail}: the line may be damaged and was not used"
    coords = f"{name}:{lineno}"
    if length <= len(line):
        try:
            value = _loads(text)
        except _JSONDecodeError:
            pass
        else:
            if type(value) is dict:
                inner = value.get("event") if REJECT_MARKER in value else None
                event = inner if type(inner) is dict else value
                return Reject(reason=Reason.CORRUPT_GZIP, detail=detail, source=coords, event=event)
    else:
        detail += f" (a line of {length} bytes)"
    return _line_reject(Reason.CORRUPT_GZIP, detail, coords, line)


def _blank_member(name: str, lineno: int, marker: Damaged) -> Reject:
    return Reject(
        reason=Reason.CORRUPT_GZIP,
        detail=f"{marker.detail}; no line of it could be read",
        source=f"{name}:{lineno}",
    )


def parse_stream(
    name: str,
    chunks: Iterable[Chunk],
    *,
    start_line: int = 0,
    max_line_bytes: int,
    allow_array: bool = True,
    lazy: bool = False,
) -> Iterator[Item]:
    """Parse decompressed chunks into records; never raises for bad content.

    With ``lazy``, a plain JSONL line's record is yielded as a ``RawRecord`` tuple.

    ``StreamBreak`` from ``chunks`` becomes one reject at the line being read when it happened.
    ``RetryableReadError`` is re-raised with ``line`` set to that line. Every line touching the
    data of a ``Damaged`` member is a ``corrupt_gzip`` reject. After a leading ``NotGzip``
    marker, line 1's reject is a ``corrupt_gzip`` one that says why.
    """
    it = iter(chunks)
    try:
        first = next(it, None)
    except (StreamBreak, RetryableReadError) as exc:
        it = _raise(exc)  # reported by the readers below, at line 1
    else:
        if isinstance(first, NotGzip):
            yield from _not_gzip(
                name, first, _parse(name, it, start_line, max_line_bytes, allow_array, lazy)
            )
            return
        if first is not None:
            it = chain((first,), it)
    yield from _parse(name, it, start_line, max_line_bytes, allow_array, lazy)


#: the rejects line 1 of a ``NotGzip`` stream can get for its content
_CONTENT_REASONS = frozenset((Reason.INVALID_UTF8, Reason.INVALID_JSON, Reason.LINE_TOO_LONG))


def _not_gzip(name: str, marker: NotGzip, items: Iterator[Item]) -> Iterator[Item]:
    """Line 1 of a stream that starts with the gzip magic bytes but is not gzip holds those
    bytes, so it is never JSON (a ``0x1f`` byte cannot start a JSON text): its reject becomes a
    ``corrupt_gzip`` one that says why. Every other item is as read."""
    first = next(items, None)
    if first is None:
        return
    if type(first) is Reject and first.source == f"{name}:1" and first.reason in _CONTENT_REASONS:
        first = dataclasses.replace(
            first,
            reason=Reason.CORRUPT_GZIP,
            detail=f"{marker.detail}: this line holds the magic bytes and was not used "
            f"({first.detail})",
        )
    yield first
    yield from items


def _parse(
    name: str,
    it: Iterator[Chunk],
    start_line: int,
    max_line_bytes: int,
    allow_array: bool,
    lazy: bool,
) -> Iterator[Item]:
    head: list[Chunk] = []
    if allow_array:
        probe = b""
        try:
            for chunk in it:
                head.append(chunk)
                if type(chunk) is not bytes:
                    continue
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
            # nothing but blanks so far: let the line reader report the break (and any damage)
            yield from _parse_lines(name, chain(head, _raise(exc)), 0, start_line, max_line_bytes)
            return
        except RetryableReadError as exc:
            exc.line = probe.count(b"\n") + 1
            raise
        text = probe[len(BOM) :] if probe.startswith(BOM) else probe
        if text.lstrip().startswith(b"["):
            yield from _parse_array(name, chain(head, it), start_line, max_line_bytes)
            return
    yield from _parse_lines(name, chain(head, it), 0, start_line, max_line_bytes, lazy)


def _raise(exc: BaseException) -> Iterator[Chunk]:
    raise exc
    yield b""  # pragma: no cover - makes this a generator


def _parse_lines(
    name: str,
    chunks: Iterator[Chunk],
    lineno: int,
    start_line: int,
    max_len: int,
    lazy: bool = False,
) -> Iterator[Item]:
    """JSONL: ``lineno`` is the number of lines before the first byte of ``chunks``."""
    loads = _loads
    decode_error = _JSONDecodeError
    marker = REJECT_MARKER
    parts: list[bytes] = []  # pieces of the current, unfinished line
    plen = 0
    skipping = False  # inside a line longer than max_len: drop bytes up to the next newline
    skip_head = b""
    skip_len = 0
    damaged: Damaged | None = None  # reading the data of a member that failed verification
    blank = True  # no non-blank byte in that member's data so far
    taint: Damaged | None = None  # the unfinished line holds bytes of a failed member
    item: Record | Reject | None
    try:
        for chunk in chunks:
            if type(chunk) is not bytes:
                assert isinstance(chunk, Damaged)
                if chunk is DAMAGE_END:
                    assert damaged is not None
                    if blank and taint is not damaged and lineno + 1 > start_line:
                        yield _blank_member(name, lineno + 1, damaged)
                    damaged = None
                else:
                    damaged = chunk
                    blank = True
                    if parts or skipping:
                        taint = chunk
                continue
            # split the whole chunk (no copy of its rest), then mend the first line
            lines = chunk.split(b"\n")
            longest = len(chunk)  # no line of ``lines`` is longer
            first_taint = taint or damaged  # the failed member the first line touches
            if damaged is not None and blank and chunk.strip():
                blank = False
            had_newline = len(lines) > 1
            if not had_newline:
                taint = first_taint
            if skipping:
                if len(lines) == 1:
                    skip_len += len(chunk)
                    continue
                lineno += 1
                skipping = False
                if lineno > start_line:
                    length = skip_len + len(lines[0])
                    if first_taint is not None:
                        item = _damaged_line(name, lineno, skip_head, first_taint, length)
                        if item is not None:
                            blank = False
                            yield item
                    else:
                        yield _too_long(name, lineno, skip_head, length, max_len)
                skip_head = b""
                first_taint = None
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
            if first_taint is not None and lines and damaged is None:
                # the line that began in a failed member ends here
                lineno += 1
                if lineno > start_line:
                    line = lines[0]
                    item = _damaged_line(name, lineno, line[:max_len], first_taint, len(line))
                    if item is not None:
                        yield item
                del lines[0]
            n = len(lines)
            if lineno + n <= start_line:
                lineno += n
            elif damaged is not None:
                for line in lines:
                    lineno += 1
                    if lineno > start_line:
                        item = _damaged_line(name, lineno, line[:max_len], damaged, len(line))
                        if item is not None:
                            blank = False
                            yield item
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
                            yield (value, name, lineno) if lazy else Record(value, name, lineno)
                    else:
                        yield _classify(name, lineno, value)
            if tail:
                taint = damaged if had_newline else first_taint
                if len(tail) > max_len:
                    skipping = True
                    skip_head = tail[:_RAW_BYTES]
                    skip_len = len(tail)
                else:
                    parts = [tail]
                    plen = len(tail)
            else:
                taint = None
    except StreamBreak as exc:
        if lineno + 1 > start_line:
            partial = b"".join(parts) if parts else skip_head
            raw = _raw_text(partial)[0] if partial else None
            if parts and taint is None:
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
            if taint is not None:
                item = _damaged_line(name, lineno, skip_head, taint, skip_len)
                if item is not None:
                    yield item
            else:
                yield _too_long(name, lineno, skip_head, skip_len, max_len)
    elif parts:
        lineno += 1
        if lineno > start_line:
            last = b"".join(parts)
            if taint is not None:
                item = _damaged_line(name, lineno, last, taint, len(last))
            else:
                item = _one_line(name, lineno, last, max_len)
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
    name: str, chunks: Iterator[Chunk], start_line: int, max_len: int
) -> Iterator[Item]:
    """Stream one top-level JSON array; each element is reported at the line it starts on.

    Only the structure is scanned here (strings, escapes, nesting); each element is then parsed
    by ``orjson``. Whatever follows the closing ``]`` is read as JSONL. At a gzip member that
    failed verification the structure can no longer be trusted: its lines are rejected and the
    object is not read further.
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


def _array_damage(
    name: str,
    marker: Damaged,
    chunks: Iterator[Chunk],
    lineno: int,
    elem: _Element | None,
    start_line: int,
    max_len: int,
) -> Iterator[Item]:
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

    yield from _parse_lines(name, member(), lineno - 1, start_line, max_len)
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

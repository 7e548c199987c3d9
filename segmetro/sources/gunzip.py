"""Gunzip content as it streams, verifying every member before any of its bytes is used.

``decompress`` passes plain content through and gunzips a stream that starts with a gzip header
(whatever the object's name says), member after member. Each member is spooled (memory, then a
temporary file) and released only after its CRC32 and length check out; a member that fails is
released between ``Damaged`` and ``DAMAGE_END`` markers, so that every line touching it becomes a
``corrupt_gzip`` reject, never a record. ``StreamBreak`` is raised where the stream cannot go on
(truncated, or undecodable so that the next member cannot be found). A stream that starts with
the gzip magic bytes but does not go on as a gzip header is not gzip: it is passed on as it is,
after a ``NotGzip`` marker.

Inflation is zlib-ng's (``zlib_ng``, the zlib module's API over a faster inflate: 1.6x the
standard library's here, and unlike ``isal`` it can ``copy()`` a decompressor, which the salvage
of a damaged member needs); the CRC32 and length checks are this module's own.
"""

from __future__ import annotations

import tempfile
from collections.abc import Generator, Iterable, Iterator
from typing import Any, cast

from zlib_ng import zlib_ng as zlib

from segmetro.models import Reason
from segmetro.sources.stream import DAMAGE_END, Chunk, Damaged, NotGzip, StreamBreak

#: the stub declares ``error`` as an instance; it is the module's exception class
_ZlibError = cast("type[Exception]", zlib.error)
GZIP_MAGIC = b"\x1f\x8b"
#: decompressed bytes produced per zlib call (bounds memory on gzip bombs)
OUT_CHUNK = 1 << 20
#: decompressed bytes of one gzip member held in memory while it is verified; beyond, on disk
SPOOL_MEMORY = 16 << 20
#: bytes read back per call from a gzip member spooled to disk
SPOOL_READ = 1 << 20
#: a gzip header (with its optional extra field, name and comment) ends within this many bytes;
#: one that does not is not a gzip header (and is never buffered whole to find out)
MAX_HEADER = 1 << 20


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


#: most a deflate block read from a member's 8 trailer bytes can add (a few length codes)
_TRAILER_AS_DATA = 4096


def _read_own_trailer(last8: bytes, size: int) -> bool:
    """Whether deflate data that ended exactly with the stream read its member's own trailer.

    Damage such as a flipped final-block bit makes the decoder take the 8 trailer bytes for one
    more small block: then they still hold the member's length, a little less than what was
    decoded. A genuine cut right after the deflate data ends on arbitrary bytes, which fit
    that narrow range only by rare chance (then its lines are rejected, not used).
    """
    if len(last8) < 8:
        return False
    stored = int.from_bytes(last8[4:], "little")
    return 0 < (size & 0xFFFFFFFF) - stored <= _TRAILER_AS_DATA


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
        except _ZlibError as exc:
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
    ended_at_eof = not d.unused_data
    pending = _need(pending, raw, 8)
    trailer = pending[:8]
    expected = crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little")
    if trailer == expected:
        yield from spool.chunks()
        return pending[8:]
    if not trailer and ended_at_eof and _read_own_trailer(last8, size):
        # the deflate data ended exactly where the stream does, on what looks like this
        # member's own trailer: damage (e.g. a flipped final-block bit) made the decoder read
        # the trailer as data, not a cut
        yield Damaged(
            f"gzip member {member} failed its integrity check (its data runs on through what "
            "looks like its own trailer: damaged, not cut off)"
        )
        yield from spool.chunks()
        yield DAMAGE_END
        raise StreamBreak(
            Reason.CORRUPT_GZIP,
            f"corrupt gzip data in member {member}: the stream ends inside it",
        )
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
        except _ZlibError:
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
    except _ZlibError:  # pragma: no cover - the prefix inflated above
        return

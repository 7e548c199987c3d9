"""Content → numbered lines, for the formats that are read line by line (JSONL).

``numbered_lines`` splits content on ``\\n`` into the physical lines of the decompressed object,
counted from 1, and yields in line order:

* ``Lines``: the complete lines of one chunk for the format to read: each at most ``max_len``
  bytes, past ``start_line`` and touching no failed gzip member. A whole chunk's lines come at
  once, so the format's per-line loop makes no call per line. Blank lines, a BOM and bad UTF-8
  are left in them: the format sorts them out only for a line its parser refuses (``unparsed``).
* ``Reject``: a ``line_too_long`` line (its bytes beyond the limit are dropped unread), or a
  failed gzip member that holds no non-blank byte.
* ``Tainted``: a non-blank line holding bytes of a failed gzip member. It is never a record: the
  format says which object it holds, if any, and ``Tainted.reject`` makes its reject.
* ``Cut``: the line being read when the stream broke (``StreamBreak``), with the reject for the
  break; the format may keep the line if it is whole.

A ``RetryableReadError`` from the content is re-raised with ``line`` set to the line being read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from segmetro.models import Reason, Reject
from segmetro.sources.stream import DAMAGE_END, Chunk, Damaged, RetryableReadError, StreamBreak

#: the default longest line (or JSON array element) read, in bytes
DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024
BOM = b"\xef\xbb\xbf"
#: a reject's ``raw`` holds at most this many characters of the line
RAW_LIMIT = 1000
#: bytes of a line kept for ``raw``: enough for RAW_LIMIT characters whatever the encoding
RAW_BYTES = 4 * RAW_LIMIT + 4


class Lines:
    """Complete lines for the format to read; the first is line ``lineno + 1``."""

    __slots__ = ("lineno", "lines")

    def __init__(self, lineno: int, lines: list[bytes]) -> None:
        self.lineno = lineno
        self.lines = lines


class Tainted:
    """A non-blank line holding bytes of a gzip member that failed verification.

    ``line`` is the line, or only its head when ``whole`` is false (it was longer than the
    limit); ``text`` is ``line`` without surrounding whitespace and BOM, for the format to parse.
    """

    __slots__ = ("length", "line", "marker", "source", "text")

    def __init__(self, source: str, line: bytes, text: bytes, marker: Damaged, length: int) -> None:
        self.source = source
        self.line = line
        self.text = text
        self.marker = marker
        self.length = length

    @property
    def whole(self) -> bool:
        return self.length <= len(self.line)

    def reject(self, event: Any) -> Reject:
        """The line's ``corrupt_gzip`` reject: with ``event`` (the object the line holds, to
        inspect or to replay on purpose) when there is one, else with the line as ``raw``."""
        detail = f"{self.marker.detail}: the line may be damaged and was not used"
        if event is not None:
            return Reject(
                reason=Reason.CORRUPT_GZIP, detail=detail, source=self.source, event=event
            )
        if not self.whole:
            detail += f" (a line of {self.length} bytes)"
        return line_reject(Reason.CORRUPT_GZIP, detail, self.source, self.line)


class Cut:
    """The stream broke inside line ``lineno``, whose bytes so far are ``line``.

    The format keeps the line when it is a whole record (a cut right at the end of a line) and
    then yields ``reject`` without ``raw``; otherwise it yields ``reject`` as it is.
    """

    __slots__ = ("line", "lineno", "reject")

    def __init__(self, lineno: int, line: bytes, reject: Reject) -> None:
        self.lineno = lineno
        self.line = line
        self.reject = reject


def numbered_lines(
    name: str,
    content: Iterable[Chunk],
    *,
    lineno: int = 0,
    start_line: int = 0,
    max_len: int,
) -> Iterator[Lines | Reject | Tainted | Cut]:
    """Split ``content`` into lines; ``lineno`` lines come before its first byte, and lines
    ``<= start_line`` are skipped (resume)."""
    splitter = _Splitter(name, lineno, start_line, max_len)
    try:
        for chunk in content:
            if type(chunk) is bytes:
                yield from splitter.chunk(chunk)
            else:
                assert isinstance(chunk, Damaged)
                item = splitter.marker(chunk)
                if item is not None:
                    yield item
    except StreamBreak as exc:
        broken = splitter.cut(exc)
        if broken is not None:
            yield broken
        return
    except RetryableReadError as exc:
        exc.line = splitter.lineno + 1
        raise
    yield from splitter.end()


class _Splitter:
    """The state carried from chunk to chunk: the unfinished line and the failed member.

    The unfinished line is either collected (``parts``, ``plen`` bytes) or, once it is longer
    than ``max_len``, skipped to its newline (``skipping``: its first bytes in ``skip_head``, its
    length in ``skip_len``). ``damaged`` is the failed member whose data is being read; ``taint``
    the failed member the unfinished line holds bytes of.
    """

    __slots__ = (
        "blank",
        "damaged",
        "lineno",
        "max_len",
        "name",
        "parts",
        "plen",
        "skip_head",
        "skip_len",
        "skipping",
        "start_line",
        "taint",
    )

    def __init__(self, name: str, lineno: int, start_line: int, max_len: int) -> None:
        self.name = name
        self.lineno = lineno  # lines finished so far
        self.start_line = start_line
        self.max_len = max_len
        self.parts: list[bytes] = []
        self.plen = 0
        self.skipping = False
        self.skip_head = b""
        self.skip_len = 0
        self.damaged: Damaged | None = None
        self.blank = True  # no non-blank byte in the failed member's data so far
        self.taint: Damaged | None = None

    def marker(self, marker: Damaged) -> Reject | None:
        """A failed member's data starts (``marker``) or ends (``DAMAGE_END``)."""
        if marker is not DAMAGE_END:
            self.damaged = marker
            self.blank = True
            if self.parts or self.skipping:
                self.taint = marker
            return None
        damaged = self.damaged
        assert damaged is not None
        self.damaged = None
        if self.blank and self.taint is not damaged and self.lineno + 1 > self.start_line:
            return Reject(
                reason=Reason.CORRUPT_GZIP,
                detail=f"{damaged.detail}; no line of it could be read",
                source=f"{self.name}:{self.lineno + 1}",
            )
        return None

    def chunk(self, chunk: bytes) -> Iterator[Lines | Reject | Tainted]:
        """The lines that ``chunk`` finishes; its bytes after the last newline are kept."""
        # split the whole chunk (no copy of its rest), then mend the first line
        lines = chunk.split(b"\n")
        longest = len(chunk)  # no line of ``lines`` is longer
        damaged = self.damaged
        first_taint = self.taint or damaged  # the failed member the first line touches
        if damaged is not None and self.blank and chunk.strip():
            self.blank = False
        had_newline = len(lines) > 1
        if not had_newline:
            self.taint = first_taint
        if self.skipping:
            if not had_newline:
                self.skip_len += len(chunk)
                return
            yield from self._end_skipped(len(lines[0]), first_taint)
            first_taint = None
            del lines[0]
        elif self.parts:
            if not had_newline:
                self._extend(chunk)
                return
            self.parts.append(lines[0])
            lines[0] = b"".join(self.parts)
            longest += self.plen
            self.parts = []
            self.plen = 0
        tail = lines.pop()
        if first_taint is not None and lines and damaged is None:
            # the line that began in a failed member ends here
            self.lineno += 1
            if self.lineno > self.start_line:
                line = lines[0]
                found = self._tainted(line[: self.max_len], first_taint, len(line))
                if found is not None:
                    yield found
            del lines[0]
        if lines:
            yield from self._finished(lines, longest)
        self._keep(tail, damaged if had_newline else first_taint)

    def _end_skipped(self, rest: int, taint: Damaged | None) -> Iterator[Lines | Reject | Tainted]:
        """The line being skipped ends ``rest`` bytes into this chunk."""
        self.lineno += 1
        self.skipping = False
        if self.lineno > self.start_line:
            length = self.skip_len + rest
            if taint is not None:
                found = self._tainted(self.skip_head, taint, length)
                if found is not None:
                    self.blank = False
                    yield found
            else:
                yield self._too_long(self.skip_head, length)
        self.skip_head = b""

    def _extend(self, chunk: bytes) -> None:
        """The unfinished line goes on through all of ``chunk``."""
        self.plen += len(chunk)
        if self.plen > self.max_len:
            self.skip_head = b"".join(self.parts)[:RAW_BYTES]
            self.skip_len = self.plen
            self.skipping = True
            self.parts = []
            self.plen = 0
        else:
            self.parts.append(chunk)

    def _finished(self, lines: list[bytes], longest: int) -> Iterator[Lines | Reject | Tainted]:
        """Lines that ended in this chunk (none of them longer than ``longest``)."""
        start = self.start_line
        if self.lineno + len(lines) <= start:
            self.lineno += len(lines)
            return
        damaged = self.damaged
        if damaged is not None:
            max_len = self.max_len
            for line in lines:
                self.lineno += 1
                if self.lineno > start:
                    found = self._tainted(line[:max_len], damaged, len(line))
                    if found is not None:
                        self.blank = False
                        yield found
            return
        if self.lineno < start:
            del lines[: start - self.lineno]
            self.lineno = start
        if longest > self.max_len:
            yield from self._sift(lines)
            return
        first = self.lineno
        self.lineno += len(lines)
        yield Lines(first, lines)

    def _sift(self, lines: list[bytes]) -> Iterator[Lines | Reject]:
        """``lines`` with each line longer than the limit taken out as a reject."""
        max_len = self.max_len
        kept = 0  # lines[kept:] are not yielded yet
        for i, line in enumerate(lines):
            if len(line) > max_len:
                if i > kept:
                    yield Lines(self.lineno, lines[kept:i])
                    self.lineno += i - kept
                self.lineno += 1
                yield self._too_long(line[:RAW_BYTES], len(line))
                kept = i + 1
        if kept < len(lines):
            yield Lines(self.lineno, lines[kept:])
            self.lineno += len(lines) - kept

    def _keep(self, tail: bytes, taint: Damaged | None) -> None:
        """Start the unfinished line with ``tail``, which holds bytes of ``taint``."""
        if not tail:
            self.taint = None
            return
        self.taint = taint
        if len(tail) > self.max_len:
            self.skipping = True
            self.skip_head = tail[:RAW_BYTES]
            self.skip_len = len(tail)
        else:
            self.parts = [tail]
            self.plen = len(tail)

    def cut(self, exc: StreamBreak) -> Cut | Reject | None:
        """The stream broke while line ``lineno + 1`` was being read."""
        lineno = self.lineno + 1
        if lineno <= self.start_line:
            return None
        partial = b"".join(self.parts) if self.parts else self.skip_head
        raw = raw_text(partial)[0] if partial else None
        reject = Reject(
            reason=exc.reason, detail=exc.detail, source=f"{self.name}:{lineno}", raw=raw
        )
        if self.parts and self.taint is None:
            return Cut(lineno, partial, reject)
        return reject

    def end(self) -> Iterator[Lines | Reject | Tainted]:
        """The end of the content: the last line may have no newline."""
        if not self.skipping and not self.parts:
            return
        self.lineno += 1
        if self.lineno <= self.start_line:
            return
        taint = self.taint
        if self.skipping:
            if taint is None:
                yield self._too_long(self.skip_head, self.skip_len)
                return
            found = self._tainted(self.skip_head, taint, self.skip_len)
        else:
            last = b"".join(self.parts)
            if taint is None:
                if len(last) > self.max_len:
                    yield self._too_long(last[:RAW_BYTES], len(last))
                else:
                    yield Lines(self.lineno - 1, [last])
                return
            found = self._tainted(last, taint, len(last))
        if found is not None:
            yield found

    def _tainted(self, line: bytes, marker: Damaged, length: int) -> Tainted | None:
        """Line ``lineno`` holds bytes of ``marker``'s member (None: the line is blank)."""
        text = line.strip()
        if text.startswith(BOM):
            text = text[len(BOM) :].lstrip()
        if not text:
            return None
        return Tainted(f"{self.name}:{self.lineno}", line, text, marker, length)

    def _too_long(self, head: bytes, length: int) -> Reject:
        return too_long(f"{self.name}:{self.lineno}", head, length, self.max_len)


def raw_text(line: bytes) -> tuple[str, bool]:
    """The line for a reject's ``raw``: decoded with backslash escapes, at most RAW_LIMIT chars;
    and whether it was truncated."""
    if line.endswith(b"\r"):
        line = line[:-1]
    text = line[:RAW_BYTES].decode("utf-8", "backslashreplace")
    if len(line) > RAW_BYTES or len(text) > RAW_LIMIT:
        return text[:RAW_LIMIT], True
    return text, False


def line_reject(reason: str, detail: str, source: str, line: bytes) -> Reject:
    """A reject for a line, with the line as ``raw``."""
    raw, truncated = raw_text(line)
    if truncated:
        detail += f" (raw truncated to {RAW_LIMIT} characters)"
    return Reject(reason=reason, detail=detail, source=source, raw=raw)


def too_long(source: str, head: bytes, length: int, limit: int) -> Reject:
    """A line (or JSON array element) of ``length`` bytes, beginning ``head``, over ``limit``."""
    return line_reject(
        Reason.LINE_TOO_LONG,
        f"line of {length} bytes is longer than the limit of {limit} bytes",
        source,
        head,
    )


def unparsed(source: str, line: bytes, reason: str, detail: str) -> Reject:
    """A non-blank line the format could not read: ``invalid_utf8`` when it is not UTF-8, else
    ``reason`` with ``detail``."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return line_reject(
            Reason.INVALID_UTF8,
            f"invalid UTF-8 at byte {exc.start + 1} of the line: {exc.reason}",
            source,
            line,
        )
    return line_reject(reason, detail, source, line)

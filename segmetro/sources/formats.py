"""Formats: which one reads an object's content, found from its first bytes.

A ``Format`` says from the content's first non-blank bytes (and the object's name) whether the
content is in it, and turns the content into records and rejects. ``FORMATS`` is the registry,
asked in order; the last, JSONL, takes whatever no other claims. A new format (Parquet, say:
``detect`` its ``PAR1`` magic) is one class and one entry in ``FORMATS``.

``read_content`` is the stage's entry point: it looks at the first bytes, picks the format and
hands it the content (with the bytes it looked at put back).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import Protocol

from segmetro.models import Reason, Record, Reject
from segmetro.sources.jsonarray import JsonArray
from segmetro.sources.jsonl import JsonLines
from segmetro.sources.lines import BOM
from segmetro.sources.stream import Chunk, NotGzip, RetryableReadError, StreamBreak

#: how much leading whitespace is examined to find the content's first non-blank byte
PROBE_LIMIT = 64 * 1024


class Format(Protocol):
    """One way of reading content (decompressed bytes) into records and rejects."""

    @property
    def name(self) -> str: ...

    def detect(self, head: bytes, object_name: str) -> bool:
        """Whether content that begins with ``head`` is in this format.

        ``head`` starts at the content's first non-blank byte (a UTF-8 BOM dropped) and holds at
        least the rest of the first chunk; it is empty when the content is blank (or is only
        whitespace for longer than PROBE_LIMIT). ``object_name`` is the input object's name.
        """
        ...

    def records(
        self, name: str, content: Iterable[Chunk], *, start_line: int, max_line_bytes: int
    ) -> Iterator[Record | Reject]:
        """The content's records and rejects, never raising for bad content.

        ``name`` is the object's name, for coordinates (``name:line``, lines counted from 1);
        items at lines ``<= start_line`` are skipped (resume). ``StreamBreak`` from ``content``
        becomes one reject at the line being read when it happened, and ends the object;
        ``RetryableReadError`` is re-raised with ``line`` set to that line. Every line touching
        a failed gzip member (between ``Damaged`` and ``DAMAGE_END``) is a ``corrupt_gzip``
        reject, never a record. No item is longer than ``max_line_bytes`` (a ``line_too_long``
        reject).
        """
        ...


JSON_ARRAY = JsonArray()
JSONL = JsonLines()
#: asked in order; the first whose ``detect`` is true reads the object
FORMATS: tuple[Format, ...] = (JSON_ARRAY, JSONL)


def detect(head: bytes, object_name: str) -> Format:
    """The format of content that begins with ``head`` (see ``Format.detect``)."""
    for fmt in FORMATS:
        if fmt.detect(head, object_name):
            return fmt
    return JSONL


def read_content(
    name: str, content: Iterable[Chunk], *, start_line: int = 0, max_line_bytes: int
) -> Iterator[Record | Reject]:
    """Read decompressed content in its format (see ``Format.records``).

    After a leading ``NotGzip`` marker, line 1's reject is a ``corrupt_gzip`` one that says why.
    """
    it = iter(content)
    try:
        first = next(it, None)
    except (StreamBreak, RetryableReadError) as exc:
        it = _raise(exc)  # reported by the format, at line 1
    else:
        if isinstance(first, NotGzip):
            yield from _not_gzip(name, first, _read(name, it, start_line, max_line_bytes))
            return
        if first is not None:
            it = chain((first,), it)
    yield from _read(name, it, start_line, max_line_bytes)


def _read(
    name: str, it: Iterator[Chunk], start_line: int, max_line_bytes: int
) -> Iterator[Record | Reject]:
    head: list[Chunk] = []
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
            if len(probe) > PROBE_LIMIT:
                break
    except StreamBreak as exc:
        # nothing but blanks so far: let the line reader report the break (and any damage)
        yield from JSONL.records(
            name, chain(head, _raise(exc)), start_line=start_line, max_line_bytes=max_line_bytes
        )
        return
    except RetryableReadError as exc:
        exc.line = probe.count(b"\n") + 1
        raise
    text = probe[len(BOM) :] if probe.startswith(BOM) else probe
    fmt = detect(text.lstrip(), name)
    yield from fmt.records(
        name, chain(head, it), start_line=start_line, max_line_bytes=max_line_bytes
    )


def _raise(exc: BaseException) -> Iterator[Chunk]:
    raise exc
    yield b""  # pragma: no cover - makes this a generator


#: the rejects line 1 of a ``NotGzip`` stream can get for its content
_CONTENT_REASONS = frozenset((Reason.INVALID_UTF8, Reason.INVALID_JSON, Reason.LINE_TOO_LONG))


def _not_gzip(
    name: str, marker: NotGzip, items: Iterator[Record | Reject]
) -> Iterator[Record | Reject]:
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

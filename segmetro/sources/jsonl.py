"""JSONL (NDJSON): one JSON object per line; and what a JSON value read from an input becomes.

The per-line hot path is ``orjson.loads``, a type check, a dict-key check and a ``Record``.
Everything unusual (blank lines, a BOM, bad UTF-8, bad JSON) is sorted out only after
``orjson.loads`` has failed. The value rules (``classify``, ``bad_line``) are shared with the
JSON array format: an object is a record, a line of a segmetro rejects file (``REJECT_MARKER``)
is unwrapped into its original event, anything else is a ``not_object`` reject.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from segmetro.models import REJECT_MARKER, Reason, Record, Reject
from segmetro.sources.lines import (
    BOM,
    RAW_LIMIT,
    Cut,
    Lines,
    Tainted,
    numbered_lines,
    unparsed,
)
from segmetro.sources.stream import Chunk

#: names that say JSONL (so that a leading ``[`` does not make the object a JSON array)
SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


class JsonLines:
    """The JSONL format: every content that no other format claims."""

    name = "jsonl"

    def detect(self, head: bytes, object_name: str) -> bool:
        return True

    def records(
        self, name: str, content: Iterable[Chunk], *, start_line: int, max_line_bytes: int
    ) -> Iterator[Record | Reject]:
        return records(name, content, start_line=start_line, max_line_bytes=max_line_bytes)


def records(
    name: str,
    content: Iterable[Chunk],
    *,
    lineno: int = 0,
    start_line: int,
    max_line_bytes: int,
) -> Iterator[Record | Reject]:
    """Each line of ``content`` as a record or a reject; ``lineno`` lines come before it."""
    loads = _loads
    decode_error = _JSONDecodeError
    marker = REJECT_MARKER
    for item in numbered_lines(
        name, content, lineno=lineno, start_line=start_line, max_len=max_line_bytes
    ):
        if type(item) is Lines:
            n = item.lineno
            for line in item.lines:
                n += 1
                try:
                    value = loads(line)
                except decode_error as exc:
                    bad = bad_line(name, n, line, str(exc))
                    if bad is not None:
                        yield bad
                    continue
                if type(value) is dict:
                    if marker in value:
                        yield unwrap(name, n, value)
                    else:
                        yield Record(value, name, n)
                else:
                    yield classify(name, n, value)
        elif type(item) is Reject:
            yield item
        elif type(item) is Tainted:
            yield item.reject(_tainted_event(item))
        else:
            assert isinstance(item, Cut)
            yield from _cut(name, item)


def _tainted_event(line: Tainted) -> Any:
    """The object a line of a failed gzip member holds, if it is whole and parses as one."""
    if not line.whole:
        return None
    try:
        value = _loads(line.text)
    except _JSONDecodeError:
        return None
    if type(value) is not dict:
        return None
    inner = value.get("event") if REJECT_MARKER in value else None
    return inner if type(inner) is dict else value


def _cut(name: str, cut: Cut) -> Iterator[Record | Reject]:
    """The data stopped before this line's newline: a whole JSON object is kept (no proper
    prefix of a JSON object is itself an object); anything else is the break's ``raw``."""
    try:
        value = _loads(cut.line)
    except _JSONDecodeError:
        value = None
    if type(value) is dict:
        yield classify(name, cut.lineno, value)
        yield dataclasses.replace(cut.reject, raw=None)
    else:
        yield cut.reject


def classify(name: str, lineno: int, value: Any) -> Record | Reject:
    """A parsed JSON value: a Record, an unwrapped rejects-file entry, or a not_object reject."""
    if type(value) is dict:
        if REJECT_MARKER in value:
            return unwrap(name, lineno, value)
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


def unwrap(name: str, lineno: int, entry: dict[str, Any]) -> Record | Reject:
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


def bad_line(name: str, lineno: int, line: bytes, error: str) -> Record | Reject | None:
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
            return classify(name, lineno, value)
    return unparsed(f"{name}:{lineno}", line, Reason.INVALID_JSON, f"not JSON: {error}")
